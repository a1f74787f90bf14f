"""The colour of surface the source photo never saw: a texture atlas of the mesh, filled from its seen texels.

A turned head shows surface the portrait hid (the far cheek of a 3/4 view, the far side of the nose). Copying it
from its left/right mirror point paints a second nose, brow or eye there; instead, each hidden texel takes the
colour of the nearest texels the source did see *on the same side of the surface*, faded smoothly into a local
average further in (a push-pull fill in an atlas of the surface, so it spreads along the skin and never across to
the other side of the face or in from the hair around it).

The atlas is a cylindrical unwrapping of the mesh's rest shape about a vertical axis behind the face: it keeps the
sides of the face (the part that turns into view) as large as the front, unlike a frontal projection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from magicportrait.rendering.rasterizer import rasterize_foreground

__all__ = ["ATLAS_SIZE", "FillAtlas", "atlas_coordinates", "build_fill_atlas", "push_pull_fill"]

ATLAS_SIZE = 256
"""Side of the atlas in texels (the fill is smooth: the face spans it, more adds nothing)."""

ATLAS_MARGIN = 4
AXIS_BEHIND = 0.25
"""The unwrapping axis lies this fraction of the face's width behind its deepest point."""

COARSE_GAIN = 3.0
"""On the coarser levels of the fill a texel keeps its own average in proportion to this times its coverage:
higher keeps a gap's colour closer to its nearest seen texels (a stretch) than to a wide average."""


@dataclass
class FillAtlas:
    """The filled atlas: where each vertex lies in it and the colour of every texel.

    Attributes:
        uv: `(V, 2)` float32 atlas position of each vertex (texel (i, j) covers [i, i+1)).
        image: `(1, 3, A, A)` float32 filled colours in [0, 1] (for ``sample_texture_foreground``).
        seen: `(A, A)` float32 how much of each texel the source saw well (1) or not at all (0); -1 off the mesh.
    """

    uv: torch.Tensor
    image: torch.Tensor
    seen: np.ndarray


def atlas_coordinates(rest_vertices: np.ndarray, faces: np.ndarray, size: int = ATLAS_SIZE) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """`(V, 2)` atlas positions and `(V,)` distance from the unwrapping axis of the mesh ``faces`` on
    ``rest_vertices`` `(V, 3)` (model frame: x to the subject's left, y down, z into the head)."""
    rest = np.asarray(rest_vertices, np.float64)
    used = rest[np.unique(faces)]
    centre_x = float(np.median(used[:, 0]))
    width = max(float(np.ptp(used[:, 0])), 1e-6)
    axis_z = float(used[:, 2].max()) + AXIS_BEHIND * width
    dx, dz = rest[:, 0] - centre_x, axis_z - rest[:, 2]
    radius = np.hypot(dx, dz)
    typical = float(np.median(radius[np.unique(faces)]))
    coords = np.stack([np.arctan2(dx, dz) * typical, rest[:, 1]], 1)
    low, high = coords[np.unique(faces)].min(0), coords[np.unique(faces)].max(0)
    scale = (size - 2 * ATLAS_MARGIN) / max(float((high - low).max()), 1e-6)
    offset = (size - scale * (high - low)) / 2
    return ((coords - low) * scale + offset).astype(np.float32), radius.astype(np.float32)


def push_pull_fill(colours: np.ndarray, weight: np.ndarray, empty=(0.5, 0.5, 0.5)) -> np.ndarray:
    """`(H, W, 3)` ``colours`` where ``weight`` `(H, W)` in [0, 1] is 1, continued smoothly where it is 0
    (everywhere ``empty`` if the weight is 0 everywhere).

    Weighted averages are taken on a pyramid (push) and the gaps filled from the coarser level (pull), so a gap
    takes its colour from its own border, blurred more the further in it reaches.
    """
    weight = np.clip(weight, 0, 1).astype(np.float32)
    levels = [(colours.astype(np.float32) * weight[..., None], weight)]
    while min(levels[-1][1].shape) > 2:
        premultiplied, coverage = levels[-1]
        half = (max(1, coverage.shape[1] // 2), max(1, coverage.shape[0] // 2))
        levels.append((cv2.resize(premultiplied, half, interpolation=cv2.INTER_AREA),
                       cv2.resize(coverage, half, interpolation=cv2.INTER_AREA)))
    premultiplied, coverage = levels[-1]
    total = float(coverage.sum())
    mean = premultiplied.reshape(-1, 3).sum(0) / total if total > 1e-6 else np.asarray(empty, np.float32)
    filled = np.where(coverage[..., None] > 1e-6, premultiplied / np.maximum(coverage, 1e-6)[..., None], mean)
    for depth in range(len(levels) - 2, -1, -1):
        premultiplied, coverage = levels[depth]
        up = cv2.resize(filled.astype(np.float32), coverage.shape[::-1], interpolation=cv2.INTER_LINEAR)
        own = premultiplied / np.maximum(coverage, 1e-6)[..., None]
        keep = coverage if depth == 0 else np.clip(COARSE_GAIN * coverage, 0, 1)
        filled = own * keep[..., None] + up * (1 - keep[..., None])
    return filled.astype(np.float32)


def build_fill_atlas(lookup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                     faces: torch.Tensor, rest_vertices: np.ndarray, size: int = ATLAS_SIZE,
                     empty=(0.5, 0.5, 0.5)) -> FillAtlas:
    """Render the mesh ``faces`` into its atlas, look every texel up in the source and fill what it did not see.

    ``lookup(corners (K, 3), bary (K, 3)) -> (colours (K, 3), seen (K,))``: the source's colour of the surface
    points and how well the source saw them (0 hidden or seen edge-on, 1 seen well). ``empty``: the colour of all
    of it if the source saw none of it.
    """
    device = faces.device
    faces_np = faces.cpu().numpy()
    uv, radius = atlas_coordinates(rest_vertices, faces_np, size)
    # the outer layer wins where the unwrapping folds: depth = minus the distance from the axis
    atlas_vertices = torch.as_tensor(np.concatenate([uv, -radius[:, None]], 1), device=device)
    fg = rasterize_foreground(atlas_vertices[None], faces, (size, size))
    colours, seen = lookup(faces[fg.face], fg.bary.float())
    pixels = fg.pixel_index.cpu().numpy()
    flat_colours = np.zeros((size * size, 3), np.float32)
    flat_seen = np.full(size * size, -1.0, np.float32)
    flat_colours[pixels] = colours.cpu().numpy()
    flat_seen[pixels] = seen.cpu().numpy()
    seen_map = flat_seen.reshape(size, size)
    filled = push_pull_fill(flat_colours.reshape(size, size, 3), np.clip(seen_map, 0, 1), empty)
    image = torch.as_tensor(filled, device=device).permute(2, 0, 1)[None].contiguous()
    return FillAtlas(uv=torch.as_tensor(uv, device=device), image=image, seen=seen_map)
