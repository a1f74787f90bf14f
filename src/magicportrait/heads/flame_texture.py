"""FLAME's texture space (``FLAME_texture.npz``, or a BFM-derived ``FLAME_albedo_from_BFM.npz`` with UVs):
a linear albedo model ``texture = mean + basis @ alpha`` over FLAME's UV layout, loaded without pickles."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from magicportrait.errors import InputError


@dataclass
class FlameTextureSpace:
    """A linear albedo texture model: ``texture = mean + basis @ alpha`` (RGB, [0, 1] scale).

    Attributes:
        mean: `(Ht, Wt, 3)` float32 RGB.
        basis: `(Ht, Wt, 3, K)` float32 RGB change per unit coefficient.
        vt: `(Nvt, 2)` texture coordinates in [0, 1], OBJ convention (v up: texel row = (1 - v) * Ht).
        ft: `(F, 3)` indices into ``vt``, one row per mesh face (the mesh's face order).
        source: the file it came from.
    """

    mean: np.ndarray
    basis: np.ndarray
    vt: np.ndarray
    ft: np.ndarray
    source: str = ""

    @property
    def num_components(self) -> int:
        return int(self.basis.shape[3])

    @property
    def size(self) -> tuple[int, int]:
        """(Ht, Wt)."""
        return int(self.mean.shape[0]), int(self.mean.shape[1])

    def texture(self, coefficients) -> np.ndarray:
        """`(Ht, Wt, 3)` float32 albedo of `(k,)` coefficients (the first k components), not clamped: as in the
        official renderer, only albedo x shading is clamped, at the end."""
        alpha = np.asarray(coefficients, np.float32)
        return self.mean + self.basis[..., : alpha.size] @ alpha

    def uv_pixels(self) -> np.ndarray:
        """`(Nvt, 2)` texel pixel coordinates (u right, v down; texel centres at i + 0.5) of ``vt``."""
        height, width = self.size
        return np.stack([self.vt[:, 0] * width, (1.0 - self.vt[:, 1]) * height], axis=1).astype(np.float32)


_LAYOUTS = (("mean", "tex_dir", 1.0 / 255.0), ("MU", "PC", 1.0))
"""(mean key, basis key, scale to [0, 1]): FLAME_texture.npz (0..255) and FLAME_albedo_from_BFM.npz (0..1), both
with BGR channels (FLAME's written with cv2; the BFM conversion reverses its RGB colours)."""


def _open_npz(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such texture-space file. Download FLAME_texture.npz from "
                         "https://flame.is.tue.mpg.de and pass its path.")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy/zipfile raise several types for a damaged or foreign file
        raise InputError(f"{path}: not a readable .npz file ({exc}).") from exc
    if not hasattr(data, "files"):
        raise InputError(f"{path}: expected an .npz archive of arrays, found a single array.")
    return data


def _read(data, key: str, path: Path) -> np.ndarray:
    try:
        return data[key]
    except ValueError as exc:  # object arrays need pickles, which are refused
        raise InputError(f"{path}: {key!r} is not a plain numeric array ({exc}).") from exc


def _read_components(data, key: str, num: int, path: Path) -> np.ndarray:
    """``data[key][..., :num]`` as float32, streamed in blocks of the first axis: a full FLAME basis (200
    components, up to ~1.3 GB as float64) never sits in memory, only the components kept."""
    with data.zip.open(f"{key}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
        if len(shape) < 2 or dtype.hasobject:
            raise InputError(f"{path}: {key!r} has shape {shape} / dtype {dtype}, not a numeric (..., K) basis.")
        if not 0 < num <= shape[-1]:
            raise InputError(f"{path}: asked for {num} texture components, the file has {shape[-1]}.")
        if fortran_order:  # rare: read it whole
            return np.ascontiguousarray(_read(data, key, path)[..., :num], np.float32)
        out = np.empty((*shape[:-1], num), np.float32)
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        block = max(1, (64 << 20) // max(row_bytes, 1))  # ~64 MB per read
        for start in range(0, shape[0], block):
            rows = min(block, shape[0] - start)
            raw = np.frombuffer(stream.read(rows * row_bytes), dtype=dtype).reshape(rows, *shape[1:])
            out[start : start + rows] = raw[..., :num]
    return out


def _texture_layout(files: list[str], path: Path) -> tuple[str, str, float]:
    for mean_key, basis_key, scale in _LAYOUTS:
        if mean_key in files and basis_key in files:
            return mean_key, basis_key, scale
    raise InputError(f"{path}: not a FLAME texture space: needs 'mean' and 'tex_dir' (FLAME_texture.npz) or "
                     f"'MU' and 'PC' (FLAME_albedo_from_BFM.npz); found {', '.join(sorted(files)) or 'none'}.")


def _image_layout(mean: np.ndarray, basis: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean (H, W, 3), basis (H, W, 3, K)); the BFM layout's flat (H*W*3,) / (H*W*3, K) arrays are reshaped."""
    if mean.ndim == 3 and mean.shape[2] == 3 and basis.ndim == 4 and basis.shape[:3] == mean.shape:
        return mean, basis
    side = int(round(np.sqrt(mean.size / 3)))
    if side * side * 3 == mean.size and basis.ndim == 2 and basis.shape[0] == mean.size:
        return mean.reshape(side, side, 3), basis.reshape(side, side, 3, -1)
    raise InputError(f"{path}: mean {mean.shape} / basis {basis.shape} are not an (H, W, 3) texture space.")


def _uv_layout(data, path: Path) -> tuple[np.ndarray, np.ndarray]:
    missing = [key for key in ("vt", "ft") if key not in data.files]
    if missing:
        raise InputError(f"{path}: the texture space lacks UV coordinates ({', '.join(missing)} missing); add the "
                         "FLAME UV layout's vt / ft arrays to the file.")
    vt, ft = np.asarray(_read(data, "vt", path), np.float64), _read(data, "ft", path)
    if vt.ndim != 2 or vt.shape[1] != 2 or ft.ndim != 2 or ft.shape[1] != 3 or not np.issubdtype(ft.dtype, np.integer):
        raise InputError(f"{path}: vt {vt.shape} / ft {ft.shape} are not (Nvt, 2) / integer (F, 3).")
    if ft.size and (ft.min() < 0 or ft.max() >= len(vt)):
        raise InputError(f"{path}: ft indexes vt outside 0..{len(vt) - 1}.")
    return vt.astype(np.float32), ft.astype(np.int64)


def _downsample(images: np.ndarray, size: int, resample: str = "nearest") -> np.ndarray:
    """`(H, W, ...)` float32 to `(size, size, ...)` when larger (no upsampling): ``nearest`` takes texel
    ``(i * H // size, j * W // size)`` as the official code's ``F.interpolate`` does (texel (2i, 2j) from 512 to 256);
    ``area`` averages blocks."""
    height, width = images.shape[:2]
    if height <= size and width <= size:
        return images
    if resample == "nearest":
        rows, columns = np.arange(size) * height // size, np.arange(size) * width // size
        return np.ascontiguousarray(images[rows][:, columns], np.float32)
    if height % size == 0 and width % size == 0:  # block means: no full-size temporary copies
        fy, fx = height // size, width // size
        return images.reshape(size, fy, size, fx, *images.shape[2:]).mean(axis=(1, 3), dtype=np.float32)
    flat = torch.from_numpy(np.ascontiguousarray(images, np.float32)).reshape(height, width, -1)
    out = F.interpolate(flat.permute(2, 0, 1)[None], size=(min(size, height), min(size, width)), mode="area")
    return out[0].permute(1, 2, 0).reshape(*out.shape[2:], *images.shape[2:]).numpy()


def load_flame_texture_space(path: str | os.PathLike, num_components: int = 50, size: int = 256,
                             resample: str = "nearest") -> FlameTextureSpace:
    """Load ``FLAME_texture.npz`` (or a BFM-derived ``FLAME_albedo_from_BFM.npz`` that carries vt/ft).

    The basis is cut to its first ``num_components`` components, converted from the files' BGR to RGB and [0, 1]
    scale, and downsampled to ``size`` x ``size`` (the official release renders at 256; ``resample`` "nearest" as
    it does, or "area").

    Raises:
        InputError: missing file or keys, no UV coordinates (vt / ft), inconsistent shapes, too few components.
    """
    path = Path(path)
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    return _load_cached(path.resolve() if stamp else path, stamp, num_components, size, resample)


@functools.lru_cache(maxsize=1)
def _load_cached(path: Path, stamp: int | None, num_components: int, size: int, resample: str) -> FlameTextureSpace:
    """One texture space kept between calls (``prepare`` colours every clip with the same file); its arrays are
    read-only. ``stamp`` (the file's mtime) makes a changed file load again."""
    with _open_npz(path) as data:
        mean_key, basis_key, scale = _texture_layout(data.files, path)
        vt, ft = _uv_layout(data, path)
        mean, basis = _image_layout(_read(data, mean_key, path), _read_components(data, basis_key, num_components,
                                                                                  path), path)
    rgb_mean = _downsample(mean[..., ::-1].astype(np.float32) * np.float32(scale), size, resample)
    rgb_basis = _downsample(basis, size, resample)[..., ::-1, :] * np.float32(scale)
    arrays = [np.ascontiguousarray(rgb_mean), np.ascontiguousarray(rgb_basis), vt, ft]
    for array in arrays:
        array.setflags(write=False)
    return FlameTextureSpace(*arrays, source=str(path))
