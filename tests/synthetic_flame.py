"""A FLAME file for tests: the shared partial model (60 identity components) padded to FLAME 2020's 300 identity
columns with zeros, plus a small random expression basis (the partial model has none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared_paths import PARTIAL_MODEL

NUM_EXPRESSION = 10


def write_synthetic_flame(folder: Path) -> Path:
    path = Path(folder) / "synthetic_flame.npz"
    if path.is_file():
        return path
    with np.load(PARTIAL_MODEL) as data:
        arrays = {name: data[name] for name in data.files}
    identity = arrays["shapedirs"].astype(np.float32)
    padding = np.zeros((*identity.shape[:2], 300 - identity.shape[2]), np.float32)
    expression = np.random.default_rng(3).normal(0, 2e-3, (*identity.shape[:2], NUM_EXPRESSION)).astype(np.float32)
    arrays["shapedirs"] = np.concatenate([identity, padding, expression], axis=2)
    np.savez(path, **arrays)
    return path


def write_synthetic_texture(folder: Path, components: int = 50, size: int = 16) -> Path:
    """A FLAME_texture.npz-layout file (0..255 BGR mean and basis, one UV per vertex) for the partial model."""
    path = Path(folder) / "synthetic_texture.npz"
    if path.is_file():
        return path
    with np.load(PARTIAL_MODEL) as data:
        faces, num_vertices = data["f"].astype(np.int64), len(data["v_template"])
    rng = np.random.default_rng(5)
    np.savez(path, mean=np.full((size, size, 3), [120.0, 150.0, 200.0], np.float32),
             tex_dir=rng.normal(0, 2.0, (size, size, 3, components)).astype(np.float32),
             vt=rng.uniform(0, 1, (num_vertices, 2)), ft=faces)
    return path
