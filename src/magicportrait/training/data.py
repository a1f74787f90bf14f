"""Training samples over a prepared dataset (``manifest.json`` + ``clips/<name>/{frames,depth,normal,render}/``).

Sampling is a pure function of ``(seed, sample index)``: the trainer feeds global sample indices through a
:class:`ResumableSampler`, so a resumed run draws exactly the samples the uninterrupted run would have drawn, on any
number of processes. Frames are RGB in [-1, 1] (the VAE's range); guidance maps are in [0, 1], as the inference
pipeline feeds them to the guidance encoders.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from magicportrait.errors import InputError
from magicportrait.io.frames import frame_name, load_manifest
from magicportrait.types import GUIDANCE_NAMES

__all__ = ["ClipInfo", "ResumableSampler", "Stage1Dataset", "Stage2Dataset", "frame_path", "read_manifest"]


@dataclass(frozen=True)
class ClipInfo:
    name: str
    path: Path
    num_frames: int


def read_manifest(root: str | Path) -> list[ClipInfo]:
    """The usable, complete clips of a prepared dataset (``"usable": true`` and ``clip.json`` present)."""
    root = Path(root)
    entries = load_manifest(root)["clips"]
    clips = []
    for entry in entries:
        path = root / entry["path"]
        if entry.get("usable") and (path / "clip.json").is_file():
            clips.append(ClipInfo(entry["name"], path, int(entry["num_frames"])))
    if not clips:
        raise InputError(f"{root / 'manifest.json'} lists no usable clip: check the quality flags of its clips.")
    return clips


def frame_path(clip: ClipInfo, kind: str, index: int) -> Path:
    """Path of frame ``index`` (0-based) of ``kind`` (frames/depth/normal/render), named as prepare names it."""
    return clip.path / kind / frame_name(index, clip.num_frames)


def _read_rgb(path: Path, resolution: int) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"Cannot read {path}: the prepared clip is incomplete or corrupt; prepare it again.")
    if image.shape[:2] != (resolution, resolution):
        image = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """RGB frame as `(3, R, R)` float32 in [-1, 1]."""
    return torch.from_numpy(_read_rgb(path, resolution)).permute(2, 0, 1).float() / 127.5 - 1.0


def load_map(path: Path, resolution: int) -> torch.Tensor:
    """Guidance map as `(3, R, R)` float32 in [0, 1]."""
    return torch.from_numpy(_read_rgb(path, resolution)).permute(2, 0, 1).float() / 255.0


class _IndexedClips(Dataset):
    """Base: item ``k`` (any non-negative int) is drawn from the clip the ``k``-th position of a seeded per-epoch
    permutation names, with frame choices from a generator seeded with ``(seed, k)``."""

    def __init__(self, root: str | Path, resolution: int, seed: int, min_frames: int, what: str) -> None:
        clips = read_manifest(root)
        self.clips = [clip for clip in clips if clip.num_frames >= min_frames]
        if not self.clips:
            raise InputError(f"No usable clip of {root} has the {min_frames} frames {what} needs (longest: "
                             f"{max(c.num_frames for c in clips)}); lower it or add longer clips.")
        self.resolution, self.seed = resolution, seed

    def __len__(self) -> int:
        return len(self.clips)  # one epoch; indices past it wrap into later epochs

    def _clip_and_rng(self, index: int) -> tuple[ClipInfo, np.random.Generator]:
        epoch, position = divmod(int(index), len(self.clips))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.clips))
        return self.clips[order[position]], np.random.default_rng([self.seed, int(index), 1])

    def _maps(self, clip: ClipInfo, frames: list[int]) -> dict[str, torch.Tensor]:
        """Each guidance type as `(3, F, R, R)` (stage 2) for the listed frames."""
        return {kind: torch.stack([load_map(frame_path(clip, kind, i), self.resolution) for i in frames], dim=1)
                for kind in GUIDANCE_NAMES}


class Stage1Dataset(_IndexedClips):
    """Image pairs: a reference frame and a target frame of one clip at least ``margin`` frames apart, and the
    target's maps. Items: ``reference``, ``target`` `(3, R, R)` in [-1, 1]; ``depth``/``normal``/``render``
    `(3, R, R)` in [0, 1]; ``index``."""

    def __init__(self, root: str | Path, resolution: int, margin: int, seed: int) -> None:
        super().__init__(root, resolution, seed, min_frames=margin + 1, what=f"a margin of {margin}")
        self.margin = margin

    def pick_frames(self, index: int) -> tuple[ClipInfo, int, int]:
        clip, rng = self._clip_and_rng(index)
        reference = int(rng.integers(clip.num_frames))
        allowed = [i for i in range(clip.num_frames) if abs(i - reference) >= self.margin]
        if not allowed:  # only possible when the reference sits in the middle of a short clip
            reference = 0
            allowed = list(range(self.margin, clip.num_frames))
        return clip, reference, int(allowed[rng.integers(len(allowed))])

    def __getitem__(self, index: int) -> dict:
        clip, reference, target = self.pick_frames(index)
        item = {kind: maps[:, 0] for kind, maps in self._maps(clip, [target]).items()}
        item["reference"] = load_image(frame_path(clip, "frames", reference), self.resolution)
        item["target"] = load_image(frame_path(clip, "frames", target), self.resolution)
        item["index"] = int(index)
        return item


class Stage2Dataset(_IndexedClips):
    """Video clips: ``clip_length`` consecutive frames and their maps, plus a reference frame from the same clip.
    Items: ``reference`` `(3, R, R)`, ``frames`` `(3, F, R, R)` in [-1, 1]; maps `(3, F, R, R)` in [0, 1]."""

    def __init__(self, root: str | Path, resolution: int, clip_length: int, seed: int) -> None:
        super().__init__(root, resolution, seed, min_frames=clip_length, what=f"clip_length={clip_length}")
        self.clip_length = clip_length

    def pick_frames(self, index: int) -> tuple[ClipInfo, int, list[int]]:
        clip, rng = self._clip_and_rng(index)
        start = int(rng.integers(clip.num_frames - self.clip_length + 1))
        return clip, int(rng.integers(clip.num_frames)), list(range(start, start + self.clip_length))

    def __getitem__(self, index: int) -> dict:
        clip, reference, frames = self.pick_frames(index)
        item = self._maps(clip, frames)
        item["reference"] = load_image(frame_path(clip, "frames", reference), self.resolution)
        item["frames"] = torch.stack([load_image(frame_path(clip, "frames", i), self.resolution) for i in frames], 1)
        item["index"] = int(index)
        return item


class ResumableSampler(Sampler[int]):
    """Endless global sample indices for one process: position ``p`` of process ``rank`` is sample
    ``p * world_size + rank``. Starting at ``start`` (samples this process already consumed) resumes the stream."""

    def __init__(self, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.rank, self.world_size = int(start), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            yield position * self.world_size + self.rank
            position += 1
