"""FLAME codes from other trackers' files (``--flame-codes``, ``--source-flame-codes``) as :class:`FlameCodes`.

Accepted layouts (``PATH``):

- our own ``FlameCodes`` ``.npz`` (what ``guide`` writes as ``driving_codes.npz`` / ``source_codes.npz``);
- one ``.npz`` or ``.pkl`` with every frame stacked: arrays `(T, n)` under the keys below;
- a folder of per-frame files, sorted by name: ``.npz``, ``.pkl`` or ``.npy`` (a saved dict), one frame each;
- a folder of per-frame folders holding one ``.npy`` per code (EMOCA's ``save_codes`` layout: ``shape.npy``,
  ``exp.npy``, ``pose.npy``, ...).

Keys (the first match is used): shape ``shape``/``shapecode``/``shape_params``/``betas``; expression
``exp``/``expcode``/``expression_params``/``expression``; pose either ``pose``/``posecode`` (6: global rotation
then jaw, DECA and EMOCA) or ``global_pose``/``pose_params`` (3, SMIRK) with ``jaw``/``jaw_pose``/``jaw_params``;
camera ``cam`` (s, tx, ty: DECA's orthographic camera); the crop ``tform``/``crop_matrix`` (the 3x3 image -> crop
matrix the codes were computed on, as DECA's ``TestData`` gives it) and ``crop_size`` (default 224); optional
``tex``/``texcode``, ``light``/``lightcode`` (27 or 9x3), ``eyelids``/``eyelid_params``. Pickles are read with a
restricted unpickler (numpy arrays only; a pickled torch tensor is refused: save ``.cpu().numpy()``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from magicportrait.errors import InputError
from magicportrait.types import FlameCodes, load_npz

KEYS = {"shape": ("shape", "shapecode", "shape_params", "betas"),
        "expression": ("exp", "expcode", "expression_params", "expression"),
        "pose": ("pose", "posecode"), "global_pose": ("global_pose", "pose_params"),
        "jaw": ("jaw", "jaw_pose", "jaw_params"), "cam": ("cam", "camera"),
        "crop_matrix": ("tform", "crop_matrix"), "crop_size": ("crop_size",), "tex": ("tex", "texcode"),
        "light": ("light", "lightcode"), "eyelids": ("eyelids", "eyelid_params")}
SUFFIXES = (".npz", ".pkl", ".npy")


def load_flame_codes(path: str | Path, image_size: tuple[int, int], source: str = "file") -> FlameCodes:
    """The codes in ``path`` (see the module docstring); ``image_size`` is that of the images they describe."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such FLAME codes file or folder.")
    if path.is_file() and path.suffix == ".npz" and _is_ours(path):
        return FlameCodes.load(path)
    frames = [_read_frame(item) for item in _frame_items(path)] if path.is_dir() else None
    arrays = _stack(frames, path) if frames is not None else _read_frame(path)
    return _codes(arrays, image_size, path, source)


def _is_ours(path: Path) -> bool:
    try:
        load_npz(path, "FlameCodes")
    except InputError:
        return False
    return True


def _frame_items(folder: Path) -> list[Path]:
    items = sorted(item for item in folder.iterdir() if item.suffix in SUFFIXES or item.is_dir())
    if not items:
        raise InputError(f"{folder}: no per-frame FLAME codes in it (.npz, .pkl, .npy files or one folder per "
                         "frame of .npy files).")
    return items


def _read_frame(path: Path) -> dict[str, np.ndarray]:
    """One file's (or one EMOCA frame folder's) arrays by name."""
    if path.is_dir():
        return {item.stem: _read_npy(item) for item in sorted(path.glob("*.npy"))}
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except Exception as error:  # a damaged or pickled archive: several exception types
            raise InputError(f"{path}: not a readable .npz of arrays ({error}).") from None
    value = _read_npy(path) if path.suffix == ".npy" else _unpickle(path.read_bytes(), path)
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a dict of FLAME codes, found {type(value).__name__}.")
    return value


def _read_npy(path: Path):
    """A ``.npy`` array, or the dict pickled inside an object ``.npy`` (unpickled safely)."""
    with open(path, "rb") as stream:
        try:
            version = np.lib.format.read_magic(stream)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(stream)
        except Exception as error:
            raise InputError(f"{path}: not a .npy file ({error}).") from None
        if not dtype.hasobject:
            stream.seek(0)
            return np.load(stream, allow_pickle=False)
        value = _unpickle(stream.read(), path)
    return value.item() if isinstance(value, np.ndarray) and value.shape == () else value


def _unpickle(data: bytes, path: Path):
    from magicportrait.heads.flame_loader import restricted_unpickle

    return restricted_unpickle(data, str(path))


def _stack(frames: list[dict], folder: Path) -> dict[str, np.ndarray]:
    names = set(frames[0])
    for index, frame in enumerate(frames):
        if set(frame) != names:
            raise InputError(f"{folder}: frame {index + 1} has the codes {sorted(frame)}, the first frame "
                             f"{sorted(names)}; every frame needs the same ones.")
    return {name: np.stack([_per_frame(frame[name]) for frame in frames]) for name in names}


def _per_frame(value) -> np.ndarray:
    array = np.asarray(value, np.float64)
    return array[0] if array.ndim >= 1 and array.shape[0] == 1 and array.ndim > 1 else array


def _pick(arrays: dict, name: str) -> np.ndarray | None:
    key = next((key for key in KEYS[name] if key in arrays), None)
    return None if key is None else np.asarray(arrays[key], np.float64)


def _codes(arrays: dict, image_size: tuple[int, int], path: Path, source: str) -> FlameCodes:
    values = {name: _pick(arrays, name) for name in KEYS}
    missing = [KEYS[name][0] for name in ("shape", "expression") if values[name] is None]
    if values["pose"] is None and values["global_pose"] is None:
        missing.append("pose (or global_pose)")
    if missing:
        raise InputError(f"{path}: FLAME codes without {', '.join(missing)}; found {', '.join(sorted(arrays))}.")
    shape = _rows(values["shape"], None)
    count = len(shape)
    pose = values["pose"]
    global_pose = _rows(values["global_pose"] if pose is None else pose[..., :3], count, "global pose", path, 3)
    jaw = values["jaw"] if values["jaw"] is not None else (None if pose is None else pose[..., 3:6])
    jaw = np.zeros((count, 3)) if jaw is None else _rows(jaw, count, "jaw", path, 3)
    cam = np.full((count, 3), np.nan) if values["cam"] is None else _rows(values["cam"], count, "cam", path, 3)
    crop = values["crop_matrix"]
    crop = np.full((count, 3, 3), np.nan) if crop is None else np.broadcast_to(crop, (count, 3, 3)).copy()
    light = values["light"]
    light = None if light is None else light.reshape(count, 9, 3)
    crop_size = int(values["crop_size"].ravel()[0]) if values["crop_size"] is not None else 224
    return FlameCodes(shape=shape, expression=_rows(values["expression"], count, "expression", path),
                      global_pose=global_pose, jaw=jaw, cam=cam, crop_matrix=crop, image_size=image_size,
                      crop_size=crop_size, tex=None if values["tex"] is None else _rows(values["tex"], count),
                      light=light, eyelids=None if values["eyelids"] is None else _rows(values["eyelids"], count),
                      source=source)


def _rows(value: np.ndarray, count: int | None, name: str = "", path: Path | None = None,
          width: int | None = None) -> np.ndarray:
    """`(T, n)` from `(n,)` or `(T, n)`; checked against the frame count and width when given."""
    value = np.atleast_2d(np.asarray(value, np.float64))
    value = value.reshape(len(value), -1)
    if (count is not None and len(value) != count) or (width is not None and value.shape[1] != width):
        expected = f"({count}, {width or 'n'})"
        raise InputError(f"{path}: FLAME codes' {name} has shape {value.shape}, expected {expected} (one row per "
                         "frame, like the shape codes).")
    return value


def reframe_codes(codes: FlameCodes, old_to_new: np.ndarray, image_size: tuple[int, int]) -> FlameCodes:
    """The same codes for another view of their image (e.g. the portrait -> our square canvas of it):
    ``old_to_new`` `(2, 3)` or `(3, 3)` maps the old image's pixels to the new one's of ``image_size``."""
    from dataclasses import replace

    matrix = np.asarray(old_to_new, np.float64)
    matrix = np.vstack([matrix, [0.0, 0.0, 1.0]]) if matrix.shape == (2, 3) else matrix
    return replace(codes, crop_matrix=codes.crop_matrix @ np.linalg.inv(matrix), image_size=tuple(image_size))


def check_placeable(codes: FlameCodes, path: str | Path) -> None:
    """Codes that must place a head in the image need their camera and crop."""
    if not (np.isfinite(codes.cam).all() and np.isfinite(codes.crop_matrix).all()):
        raise InputError(f"{path}: these FLAME codes have no camera ('cam') or crop matrix ('tform'), so they cannot "
                         "place the head in the image; add both (the 3x3 image -> crop matrix the codes were "
                         "computed on), or use them for the driving motion in the absolute pose mode only.")
    if (codes.cam[:, 0] == 0).any():
        raise InputError(f"{path}: a camera scale (cam[:, 0]) is 0: DECA's orthographic camera (s, tx, ty) is "
                         "expected.")
