"""Folders of numbered PNG frames, the guidance folder layout, and the prepared-dataset manifest.

One naming rule everywhere: frame ``i`` (0-based) of an ``n``-frame folder is ``frame_{i+1}.png`` zero-padded to
``max(4, len(str(n)))`` digits, so names sort in frame order past 9,999 frames too. Readers take the files
sorted by name, as the official MagicPortrait release does with its ``guidance_data_folder/{depth,normal,render}/``
folders, so folders made by the official preprocessing (named after the driving frames) read the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from magicportrait.errors import InputError
from magicportrait.types import GUIDANCE_NAMES

__all__ = ["FRAME_SUFFIXES", "MANIFEST_VERSION", "FrameFolder", "GuidanceFolder", "frame_name", "load_manifest"]

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MANIFEST_VERSION = 1


def frame_name(index: int, num_frames: int) -> str:
    """0-based ``index`` of an ``num_frames``-frame folder -> ``frame_0001.png`` (1-based, 4+ digits)."""
    return f"frame_{index + 1:0{max(4, len(str(num_frames)))}d}.png"


class FrameFolder:
    """One folder of frames: written by index (:func:`frame_name`), read in name order.

    Args:
        path: the folder.
        num_frames: the frame count when writing (it sets the names' width); readers count the files.
    """

    def __init__(self, path: str | os.PathLike, num_frames: int | None = None) -> None:
        self.path = Path(path)
        self.num_frames = num_frames
        self._files: list[Path] | None = None

    # ---------------------------------------------------------------------------------------------- writing
    def create(self) -> FrameFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def path_of(self, index: int) -> Path:
        """Where frame ``index`` is written (and read back, for a folder written with the same count)."""
        if self.num_frames is None:
            return self.files[index]
        return self.path / frame_name(index, self.num_frames)

    def write(self, index: int, rgb: np.ndarray, compression: int = 1) -> Path:
        """Write uint8 RGB frame ``index`` as PNG (zlib ``compression`` 0..9: 1 is fast, 3 smaller)."""
        path = self.path_of(index)
        if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION,
                                                                               compression]):
            raise OSError(f"Could not write {path}")
        return path

    # ---------------------------------------------------------------------------------------------- reading
    @property
    def files(self) -> list[Path]:
        """The frame files, sorted by name (hidden files and other suffixes ignored)."""
        if self._files is None:
            if not self.path.is_dir():
                raise InputError(f"{self.path} is not a folder of frames.")
            self._files = sorted(path for path in self.path.iterdir() if path.suffix.lower() in FRAME_SUFFIXES
                                 and not path.name.startswith(".") and path.is_file())
        return self._files

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray:
        """uint8 RGB frame ``index`` (`(H, W, 3)`)."""
        path = self.path_of(index)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"Cannot read {path}: the frame is missing or damaged; write the folder again.")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start..stop-1`` as `(stop - start, H, W, 3)` uint8."""
        return np.stack([self.read(index) for index in range(start, stop)])


class GuidanceFolder:
    """A guidance folder: ``depth/``, ``normal/``, ``render/`` frame folders of one length and size (ours from
    ``guide``, or the official release's ``transfers/<name>/``), plus ``source.png`` when ``guide`` wrote it."""

    def __init__(self, root: str | os.PathLike, names: tuple[str, ...] = GUIDANCE_NAMES) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root} is not a folder. Give a guidance folder with {', '.join(names)}/ "
                             "subfolders (from magicportrait guide, or the official release's transfers/<name>/).")
        missing = [name for name in names if not (self.root / name).is_dir()]
        if missing:
            raise InputError(f"{self.root} has no {', '.join(m + '/' for m in missing)} folder; a guidance folder "
                             f"holds {', '.join(n + '/' for n in names)} with one PNG per frame.")
        self.maps = {name: FrameFolder(self.root / name) for name in names}
        self.num_frames, self.size = self._check()

    def _check(self) -> tuple[int, tuple[int, int]]:
        counts = {name: len(folder) for name, folder in self.maps.items()}
        if len(set(counts.values())) != 1:
            raise InputError(f"The guidance folders of {self.root} disagree in frame count: "
                             f"{', '.join(f'{n}/ {c}' for n, c in counts.items())}; each needs one frame per frame.")
        count = next(iter(counts.values()))
        if count == 0:
            raise InputError(f"The guidance folders of {self.root} hold no frames (.png/.jpg).")
        sizes = {name: folder.read(0).shape[:2] for name, folder in self.maps.items()}
        if len(set(sizes.values())) != 1:
            raise InputError(f"The guidance maps of {self.root} disagree in size: "
                             f"{', '.join(f'{n}/ {s[1]}x{s[0]}' for n, s in sizes.items())}.")
        return count, next(iter(sizes.values()))

    def loaders(self) -> Mapping[str, object]:
        """map name -> ``loader(start, stop)`` of uint8 frames, checked to keep the folder's size."""
        def loader(folder: FrameFolder):
            def read(start: int, stop: int) -> np.ndarray:
                frames = folder.read_range(start, stop)
                if frames.shape[1:3] != self.size:
                    bad = next(i for i in range(start, stop) if folder.read(i).shape[:2] != self.size)
                    raise InputError(f"{folder.path_of(bad)} is {frames.shape[2]}x{frames.shape[1]}, the other "
                                     f"guidance frames {self.size[1]}x{self.size[0]}.")
                return frames
            return read
        return {name: loader(folder) for name, folder in self.maps.items()}

    @property
    def reference(self) -> Path | None:
        """The source crop ``guide`` wrote beside the maps, if any."""
        path = self.root / "source.png"
        return path if path.is_file() else None


def load_manifest(data_dir: str | os.PathLike) -> dict:
    """Read ``DATA_DIR/manifest.json`` of a prepared dataset, checking its format version."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist. Prepare the dataset first: magicportrait prepare VIDEOS_DIR -o "
                         f"{data_dir}")
    try:
        manifest = json.loads(path.read_text())
        version, clips = manifest.get("version"), manifest["clips"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise InputError(f"{path} is not a prepared-dataset manifest ({error}); prepare the dataset again.") from None
    if version != MANIFEST_VERSION:
        raise InputError(f"{path} has format version {version}, this version reads {MANIFEST_VERSION}. Prepare the "
                         "dataset again.")
    if not isinstance(clips, list):
        raise InputError(f"{path}: 'clips' is not a list; prepare the dataset again.")
    return manifest
