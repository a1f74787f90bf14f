"""MediaPipe-landmark embedding on the FLAME surface: which FLAME face, at which barycentric point, each of the
478 refined Face Mesh landmarks lies on.

The data (``data/flame_mediapipe_embedding.npz``) is our own derivation, made by
``scripts/make_flame_mediapipe_embedding.py`` from renders of the FLAME template tracked with MediaPipe (see the
script's docstring; its ``meta`` JSON records how). It holds only face indices and barycentric coordinates, valid
for the FLAME topology (5023 vertices, 9976 faces; FLAME 2020 / 2023 / 2023 Open share it).

Landmark ``k`` on vertices ``V`` is ``sum_i barycentric[k, i] * V[faces[face_indices[k], i]]``, so it follows the
surface under any identity, expression or pose (the 10 iris points, 468-477, lie on the eyeball meshes and move
with the eye joints).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

__all__ = ["EMBEDDING_FILE", "load_flame_mediapipe_embedding", "load_flame_mediapipe_embedding_meta",
           "vertices_to_landmarks"]

EMBEDDING_FILE = "data/flame_mediapipe_embedding.npz"
"""Path of the embedding inside the ``magicportrait.heads`` package."""


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    with resources.files("magicportrait.heads").joinpath(EMBEDDING_FILE).open("rb") as f:
        data = np.load(f, allow_pickle=False)
        arrays = (data["face_indices"].astype(np.int64), data["barycentric"].astype(np.float32),
                  data["view_spread_mm"].astype(np.float32), str(data["meta"][()]))
    for array in arrays[:3]:
        array.setflags(write=False)
    return arrays


def load_flame_mediapipe_embedding() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The committed MediaPipe -> FLAME embedding.

    Returns:
        ``(face_indices, barycentric, spread)``: `(478,)` int64 FLAME face indices, `(478, 3)` float32
        barycentric weights of the faces' vertices (>= 0, summing to 1), and `(478,)` float32 per-landmark
        spread in mm (RMS image-plane distance between MediaPipe's landmark and the embedded point over the
        derivation views: small for well-defined points, ~3-4 mm for the face-oval points that follow the
        silhouette; usable as a per-landmark confidence). Read-only arrays (shared, cached).
    """
    face_indices, barycentric, spread, _ = _load()
    return face_indices, barycentric, spread


def load_flame_mediapipe_embedding_meta() -> dict:
    """The ``meta`` record of the embedding (views, FLAME variant, faces hash, date, ...)."""
    return json.loads(_load()[3])


def vertices_to_landmarks(vertices, faces, face_indices, barycentric):
    """Landmarks on a batch of meshes from a face + barycentric embedding.

    Args:
        vertices: `(B, V, 3)` (or `(V, 3)`) numpy array or torch tensor, any frame.
        faces: `(F, 3)` integer vertex indices (numpy or torch).
        face_indices: `(L,)` indices into ``faces``.
        barycentric: `(L, 3)` weights of each face's three vertices.

    Returns:
        `(B, L, 3)` (or `(L, 3)` for unbatched input) landmarks, of the type of ``vertices``: a torch tensor
        (differentiable with respect to ``vertices`` and ``barycentric``, on the vertices' device and dtype) or a
        numpy array in the vertices' float dtype.
    """
    if isinstance(vertices, torch.Tensor):
        device, dtype = vertices.device, vertices.dtype if vertices.is_floating_point() else torch.float32
        verts = vertices.to(dtype)
        faces_t = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces,
                                  device=device).long()
        idx_t = torch.as_tensor(np.asarray(face_indices) if not isinstance(face_indices, torch.Tensor)
                                else face_indices, device=device).long()
        bary_t = torch.as_tensor(np.asarray(barycentric) if not isinstance(barycentric, torch.Tensor)
                                 else barycentric, device=device).to(dtype)
        _check(tuple(verts.shape), tuple(faces_t.shape), tuple(idx_t.shape), tuple(bary_t.shape))
        corners = faces_t.index_select(0, idx_t)  # (L, 3)
        tri = verts[..., corners, :]  # (..., L, 3, 3)
        return (tri * bary_t[..., None]).sum(-2)
    verts = np.asarray(vertices)
    if not np.issubdtype(verts.dtype, np.floating):
        verts = verts.astype(np.float64)
    faces_a = np.asarray(faces.cpu() if isinstance(faces, torch.Tensor) else faces).astype(np.int64)
    idx_a = np.asarray(face_indices.cpu() if isinstance(face_indices, torch.Tensor) else face_indices)
    bary_a = np.asarray(barycentric.detach().cpu() if isinstance(barycentric, torch.Tensor) else barycentric)
    _check(verts.shape, faces_a.shape, idx_a.shape, bary_a.shape)
    tri = verts[..., faces_a[idx_a.astype(np.int64)], :]  # (..., L, 3, 3)
    return np.einsum("lk,...lkc->...lc", bary_a.astype(verts.dtype), tri)


def _check(verts_shape: tuple, faces_shape: tuple, idx_shape: tuple, bary_shape: tuple) -> None:
    if len(verts_shape) not in (2, 3) or verts_shape[-1] != 3:
        raise ValueError(f"vertices must have shape (B, V, 3) or (V, 3), got {verts_shape}.")
    if len(faces_shape) != 2 or faces_shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {faces_shape}.")
    if len(idx_shape) != 1 or bary_shape != (idx_shape[0], 3):
        raise ValueError(f"face_indices must be (L,) and barycentric (L, 3), got {idx_shape} and {bary_shape}.")
