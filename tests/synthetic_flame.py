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


def write_synthetic_eyelids(folder: Path) -> Path:
    """SMIRK-layout eyelid blend shapes (``l_eyelid.npy``, ``r_eyelid.npy``: `(V, 3)` metres, FLAME frame) for the
    partial model: at 1 both lids of an eye meet on its centre line (full within 1.2 cm of the eye's centre, fading
    out by 2 cm)."""
    from magicportrait.heads.flame_head import FlameHeadModel
    from magicportrait.heads.regions import eyelid_landmarks

    folder = Path(folder) / "eyelids"
    if (folder / "r_eyelid.npy").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    model = FlameHeadModel.from_file(PARTIAL_MODEL)
    rest = model.rest_vertices()  # model frame (y down), cm
    loops, _ = eyelid_landmarks()
    centres = model.landmarks(rest[None])[0][loops].mean(axis=1)  # (2, 3)
    for centre in centres:
        name = "l_eyelid.npy" if centre[0] > 0 else "r_eyelid.npy"  # the subject's left eye lies at +x
        weight = np.clip((2.0 - np.linalg.norm(rest - centre, axis=1)) / 0.8, 0.0, 1.0)
        offset = np.zeros_like(rest)
        offset[:, 1] = (centre[1] - rest[:, 1]) * weight  # onto the centre line
        np.save(folder / name, (offset * np.array([1.0, -1.0, -1.0]) / 100.0).astype(np.float32))
    return folder
