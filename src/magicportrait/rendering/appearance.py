"""Colouring of the 'render' guidance map: an albedo and a 9x3 SH light estimated from the source portrait.

The render map is ``clamp(albedo * shading, 0, 1)`` with ``shading = sh_basis(n) @ light`` per colour channel
(:mod:`.shading`). Two ways to get the albedo and the light from the source image and its posed mesh:

* :func:`estimate_appearance` (no texture model, the default): the light is a robust (Huber IRLS) linear least
  squares fit ``colour ~ sh_basis(n) @ L`` over the camera-facing pixels of the face region (a constant albedo
  folded into ``L``); each vertex visible in the source gets the albedo ``colour / shading`` of the pixels around it
  (each pixel divided by its own shading) and every other vertex (hidden side, back of the head, neck) is filled
  smoothly: from its left/right mirror vertex when that one was seen, then by a harmonic fill over the mesh.

  **Scale convention.** Albedo times light is all the image determines, so the light is normalised so that its
  shading averages 1 per channel over the fitted pixels (a white light; the colour goes into the albedo). Only
  when that would push the albedo of bright skin over 1 is the light scaled up (by one factor for all channels)
  until the brightest observed vertex albedo is 1 (albedo times light, the render, is unchanged by this).

* :func:`fit_texture_appearance` with a FLAME texture space (``FLAME_texture.npz``, :func:`load_flame_texture_space`):
  the texture coefficients (prior N(0, 1)) and the SH light are fitted jointly (Gauss-Newton on the bilinear
  model, robustly reweighted) on the same pixels; the texture is ``mean + basis @ alpha`` like the official
  MagicPortrait release (DECA-style). The texture model's albedo fixes the scale: the light is not normalised.

:class:`AppearanceRenderer` renders the three guidance maps with a :class:`RenderAppearance`; its depth and
normal maps are those of :class:`~.renderer.GuidanceRenderer` for the same (welded) mesh. A UV texture is looked up
through per-corner uv faces (``uv_faces``) on the welded mesh's rasterisation, so seams get the welded normals.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from magicportrait.config import GUIDANCE, check_at_least, check_choices, check_positive, check_range, option
from magicportrait.errors import InputError
from magicportrait.types import load_npz, save_npz

from .rasterizer import Foreground, interpolate_foreground, rasterize_foreground
from .renderer import GuidanceMaps, GuidanceRenderer
from .shading import (
    DEFAULT_SH_LIGHT,
    as_texture,
    camera_normals_foreground,
    depth_foreground,
    sample_texture_foreground,
    sh_basis,
    shade_foreground,
    vertex_normals,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AppearanceConfig",
    "AppearanceRenderer",
    "FlameTextureSpace",
    "RenderAppearance",
    "estimate_appearance",
    "face_oval_loop",
    "face_region_mask",
    "fit_texture_appearance",
    "load_flame_texture_space",
    "mirror_vertices",
    "polygon_mask",
    "unweld",
]

_CAMERA_FLIP = np.array([1.0, -1.0, -1.0])  # image-space normal -> camera space (x right, y up, z to the camera)


# ------------------------------------------------------------------------------------------------ configuration
@dataclass
class AppearanceConfig:
    """How the albedo and the SH light of the render map are estimated from the source portrait."""

    cli_group: ClassVar[str] = GUIDANCE
    cli_prefix: ClassVar[str] = "appearance_"  # its flags: --appearance-robust-loss, ...

    robust_loss: Literal["huber", "l2"] = option(
        "huber", "Loss of the colour fits: huber (eyes, brows, lips, hair and highlights count less) or l2.")
    huber_threshold: float = option(
        1.5, "Huber threshold, in units of the median colour-residual norm of the current fit.")
    robust_iterations: int = option(8, "Reweighting (IRLS) iterations of the light fit.")
    min_samples: int = option(
        50, "Fewer usable face pixels than this: use the default light and a uniform mean colour (with a warning).")
    max_samples: int = option(20000, "At most this many pixels (evenly subsampled) enter the light/texture fits.")
    frontal_threshold: float = option(
        0.3, "Pixels and vertices whose camera-space normal z is below this are not used (grazing, unreliable).")
    frontal_ramp: float = option(
        0.3, "A seen vertex's colour counts fully once its normal z exceeds the threshold by this much.")
    saturation: float = option(0.99, "Pixels with a channel at or above this (clipped highlights) are not used.")
    min_shading: float = option(0.2, "Shading is clamped to at least this before colours are divided by it.")
    depth_tolerance: float = option(
        1.0, "Slack of the vertex visibility test, pixels (plus the surface's depth change over half a pixel).")
    light_ridge: float = option(1e-4, "Ridge on the 8 non-constant SH coefficients, relative to the data term.")
    smoothness: float = option(
        0.005, "Weight of mesh smoothness against a fully seen vertex's colour in the albedo fill (0 < s << 1).")
    mirror_weight: float = option(0.5, "Weight of a hidden vertex's seen mirror vertex, relative to a seen vertex.")
    texture_components: int = option(50, "Texture-space components loaded and fitted (the first ones).")
    texture_size: int = option(256, "Side the texture space is downsampled to when loaded (load_flame_texture_space).")
    alternations: int = option(8, "Joint Gauss-Newton steps (light and texture coefficients) of the texture fit.")
    texture_noise: float = option(
        0.05, "Expected colour error (0..1) of the texture model: weighs the N(0, 1) prior of its coefficients.")

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(self, "huber_threshold", "frontal_ramp", "min_shading", "smoothness", "texture_noise")
        check_at_least(self, 1, "robust_iterations", "min_samples", "max_samples", "texture_components",
                       "texture_size", "alternations")
        check_range(self, "frontal_threshold", 0, 1, high_open=True)
        check_range(self, "saturation", 0, 1, low_open=True)
        check_at_least(self, 0, "depth_tolerance", "light_ridge", "mirror_weight")


# ------------------------------------------------------------------------------------------------- the result
@dataclass
class RenderAppearance:
    """How the 'render' map is coloured: 9x3 SH light and an albedo (per vertex, or a UV texture).

    Attributes:
        sh_light: `(9, 3)` float32 SH coefficients (:mod:`.shading` convention).
        vertex_albedo: `(V, 3)` float32 in [0, 1], or None when a texture is used.
        texture: `(Ht, Wt, 3)` float32 RGB in [0, 1] (with ``uv`` and ``uv_faces``).
        uv: `(Nvt, 2)` texel pixel coordinates (u right, v down) of the unwelded vertices.
        uv_faces: `(F, 3)` faces indexing the unwelded vertices, in the order of the mesh's faces.
        vertex_map: `(Nvt,)` the mesh vertex of each unwelded vertex (render ``vertices[:, vertex_map]`` with
            ``uv_faces`` to draw the texture with :class:`~.renderer.GuidanceRenderer` directly).
        texture_coefficients: `(K,)` fitted texture-space coefficients (information only).
    """

    sh_light: np.ndarray
    vertex_albedo: np.ndarray | None = None
    texture: np.ndarray | None = None
    uv: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    vertex_map: np.ndarray | None = None
    texture_coefficients: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.sh_light = np.asarray(self.sh_light, np.float32)
        if self.sh_light.shape != (9, 3):
            raise InputError(f"sh_light must have shape (9, 3), got {self.sh_light.shape}.")
        for name, dtype in (("vertex_albedo", np.float32), ("texture", np.float32), ("uv", np.float32),
                            ("uv_faces", np.int64), ("vertex_map", np.int64), ("texture_coefficients", np.float32)):
            if getattr(self, name) is not None:
                setattr(self, name, np.asarray(getattr(self, name), dtype))
        if self.texture is not None:
            if self.uv is None or self.uv_faces is None:
                raise InputError("a texture appearance needs uv and uv_faces.")
            if self.texture.ndim != 3 or self.texture.shape[2] != 3:
                raise InputError(f"texture must have shape (Ht, Wt, 3), got {self.texture.shape}.")
            if self.uv.ndim != 2 or self.uv.shape[1] != 2 or self.uv_faces.ndim != 2 or self.uv_faces.shape[1] != 3:
                raise InputError(f"uv must be (Nvt, 2) and uv_faces (F, 3), got {self.uv.shape}, "
                                 f"{self.uv_faces.shape}.")
        elif self.vertex_albedo is not None:
            if self.vertex_albedo.ndim != 2 or self.vertex_albedo.shape[1] != 3:
                raise InputError(f"vertex_albedo must have shape (V, 3), got {self.vertex_albedo.shape}.")

    @property
    def textured(self) -> bool:
        return self.texture is not None

    def save(self, path: str | os.PathLike) -> Path:
        arrays = {name: value for name, value in vars(self).items() if value is not None}
        return save_npz(path, "RenderAppearance", arrays, {"textured": self.textured})

    @classmethod
    def load(cls, path: str | os.PathLike) -> RenderAppearance:
        arrays, _ = load_npz(path, "RenderAppearance")
        if "sh_light" not in arrays:
            raise InputError(f"{path}: a RenderAppearance file without sh_light.")
        names = ("sh_light", "vertex_albedo", "texture", "uv", "uv_faces", "vertex_map", "texture_coefficients")
        return cls(**{name: arrays.get(name) for name in names})


# ------------------------------------------------------------------------------------------------- face region
@lru_cache(maxsize=1)
def face_oval_loop() -> np.ndarray:
    """The 36 MediaPipe face-oval points in loop order: ``FACEMESH_FACE_OVAL``'s edges chained into a cycle."""
    from magicportrait.heads.mediapipe_topology import mediapipe_connections

    loop = _chain_edges(mediapipe_connections()["FACEMESH_FACE_OVAL"])
    loop.setflags(write=False)  # cached: shared by all callers
    return loop


def _chain_edges(edges) -> np.ndarray:
    """Vertices of a single closed cycle given as unordered undirected edges, in walking order."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(int(a), []).append(int(b))
        neighbours.setdefault(int(b), []).append(int(a))
    if any(len(n) != 2 for n in neighbours.values()):
        raise ValueError("the edges do not form a simple cycle.")
    start = min(neighbours)
    loop, previous, current = [start], start, neighbours[start][0]
    while current != start:
        loop.append(current)
        previous, current = current, next(n for n in neighbours[current] if n != previous)
    if len(loop) != len(neighbours):
        raise ValueError("the edges form more than one cycle.")
    return np.array(loop, dtype=np.int64)


def polygon_mask(polygon, image_size: tuple[int, int]) -> np.ndarray:
    """`(H, W)` bool: pixels whose centre (i + 0.5, j + 0.5) lies inside a closed `(P, 2)` polygon (even-odd)."""
    poly = np.asarray(polygon, np.float64)
    height, width = (int(s) for s in image_size)
    mask = np.zeros((height, width), bool)
    lo = np.clip(np.floor(poly.min(0)).astype(np.int64), 0, [width, height])
    hi = np.clip(np.ceil(poly.max(0)).astype(np.int64), 0, [width, height])
    if (hi <= lo).any():
        return mask
    xs = np.arange(lo[0], hi[0]) + 0.5
    ys = (np.arange(lo[1], hi[1]) + 0.5)[:, None]
    a, b = poly, np.roll(poly, -1, axis=0)
    crosses = (a[:, 1] <= ys) != (b[:, 1] <= ys)  # (rows, edges): the edge spans the scan line
    dy = np.where(b[:, 1] == a[:, 1], 1.0, b[:, 1] - a[:, 1])
    x_cross = a[:, 0] + (ys - a[:, 1]) * (b[:, 0] - a[:, 0]) / dy
    count = (crosses[:, None, :] & (x_cross[:, None, :] > xs[None, :, None])).sum(axis=2)
    mask[lo[1]:hi[1], lo[0]:hi[0]] = count % 2 == 1
    return mask


def face_region_mask(landmarks_xy, image_size: tuple[int, int]) -> np.ndarray:
    """`(H, W)` bool mask of the pixels whose centre lies inside the face oval of MediaPipe landmarks.

    Args:
        landmarks_xy: `(478, 2)` (or `(468, 2)`, or with a z column) MediaPipe landmarks in image pixels.
        image_size: (H, W).
    """
    points = np.asarray(landmarks_xy, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < 468 or points.shape[1] < 2 or not np.isfinite(points[:, :2]).all():
        raise InputError(f"face_region_mask needs (478, 2) finite MediaPipe landmarks, got shape {points.shape}.")
    return polygon_mask(points[face_oval_loop(), :2], image_size)


# ------------------------------------------------------------------------------------------------ input checks
def _as_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"image must be an (H, W, 3) RGB array, got shape {img.shape}.")
    if img.dtype != np.uint8:
        raise InputError(f"image must be uint8 RGB, got {img.dtype}.")
    return img.astype(np.float32) / 255.0


def _as_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    verts = np.asarray(vertices.detach().cpu() if isinstance(vertices, torch.Tensor) else vertices, np.float64)
    if verts.ndim == 3 and verts.shape[0] == 1:
        verts = verts[0]
    if verts.ndim != 2 or verts.shape[1] != 3 or not np.isfinite(verts).all():
        raise InputError(f"vertices must be finite with shape (V, 3), got {verts.shape}.")
    tris = np.asarray(faces.detach().cpu() if isinstance(faces, torch.Tensor) else faces)
    if tris.ndim != 2 or tris.shape[1] != 3 or tris.shape[0] == 0 or not np.issubdtype(tris.dtype, np.integer):
        raise InputError(f"faces must be integer with shape (F, 3), got {tris.shape} {tris.dtype}.")
    if tris.min() < 0 or tris.max() >= verts.shape[0]:
        raise InputError(f"faces index vertices outside 0..{verts.shape[0] - 1}.")
    return verts, tris.astype(np.int64)


def _as_mask(region_mask, image_size: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(region_mask)
    if mask.shape != tuple(image_size):
        raise InputError(f"region_mask must have the image's shape {tuple(image_size)}, got {mask.shape}.")
    return mask.astype(bool)


# ------------------------------------------------------------------------------------------------- source view
@dataclass
class _SourceView:
    """One rasterisation of the source mesh: covered pixels with their camera normals (numpy, float64)."""

    fg: Foreground
    pixels: np.ndarray  # (K,) flat pixel index j * W + i
    normals: np.ndarray  # (K, 3) camera-space unit normals
    zbuf: np.ndarray  # (H, W) z of the visible surface, +inf on the background


def _rasterize_source(vertices: np.ndarray, faces: np.ndarray, image_size: tuple[int, int]) -> _SourceView:
    verts = torch.as_tensor(vertices, dtype=torch.float32).unsqueeze(0)
    faces_t = torch.as_tensor(faces)
    fg = rasterize_foreground(verts, faces_t, image_size)
    normals = camera_normals_foreground(fg, verts, faces_t)
    zbuf = fg.scatter(fg.zbuf, float("inf"))[0]
    return _SourceView(fg=fg, pixels=fg.pixel_index.numpy(), normals=normals.double().numpy(),
                       zbuf=zbuf.double().numpy())


def _usable_pixels(view: _SourceView, image: np.ndarray, mask: np.ndarray, config: AppearanceConfig) -> np.ndarray:
    """Indices into the view's covered pixels that are in the region, face the camera and are not clipped."""
    unclipped = image.reshape(-1, 3)[view.pixels].max(axis=1) < config.saturation
    usable = mask.reshape(-1)[view.pixels] & (view.normals[:, 2] > config.frontal_threshold) & unclipped
    index = np.flatnonzero(usable)
    if index.size == 0:
        raise InputError("no pixel to estimate the render map's appearance from: the face region mask does not "
                         "overlap the camera-facing part of the mesh, or all of it is clipped white (is the mesh in "
                         "the image's pixel space?).")
    return index


def _subsample(index: np.ndarray, max_samples: int) -> np.ndarray:
    """At most ``max_samples`` evenly spaced entries (deterministic)."""
    if index.size <= max_samples:
        return index
    return index[np.linspace(0, index.size - 1, max_samples).round().astype(np.int64)]


# ---------------------------------------------------------------------------------------------------- lighting
def _sh(normals: np.ndarray) -> np.ndarray:
    """`(K, 3)` camera normals -> `(K, 9)` float64 SH basis (with the irradiance constants)."""
    return sh_basis(torch.from_numpy(np.ascontiguousarray(normals, np.float64))).numpy()


def _shading(normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    return _sh(normals) @ np.asarray(light, np.float64)


def _robust_weights(residual: np.ndarray, config: AppearanceConfig) -> np.ndarray:
    """Huber IRLS weights, one per sample from the norm of its `(S, 3)` colour residual (l2: all 1)."""
    norm = np.linalg.norm(residual, axis=1)
    if config.robust_loss == "l2":
        return np.ones_like(norm)
    threshold = config.huber_threshold * max(float(np.median(norm)), 1e-4)  # floor: exact fits stay finite
    return np.minimum(1.0, threshold / np.maximum(norm, 1e-12))


def _weighted_lstsq(design: np.ndarray, target: np.ndarray, weights: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """argmin_x sum w (design x - target)^2 + sum ridge * x^2 via the normal equations (few unknowns)."""
    weighted = design * weights[:, None]
    lhs = design.T @ weighted + np.diag(ridge)
    return np.linalg.solve(lhs, weighted.T @ target)


def _light_ridge(basis: np.ndarray, weights: np.ndarray, config: AppearanceConfig) -> np.ndarray:
    """Ridge of the 8 non-constant coefficients, scaled to the data term; the ambient term is free."""
    scale = config.light_ridge * float(np.einsum("sk,sk,s->", basis, basis, weights)) / basis.shape[1]
    return np.r_[0.0, np.full(basis.shape[1] - 1, scale)]


def _fit_light(normals: np.ndarray, colours: np.ndarray, config: AppearanceConfig) -> np.ndarray:
    """Robust ``colour ~ sh_basis(n) @ L`` (a constant albedo folded into L): `(9, 3)` L."""
    basis = _sh(normals)
    weights = np.ones(len(colours))
    iterations = 1 if config.robust_loss == "l2" else max(1, config.robust_iterations)
    for step in range(iterations):
        light = _weighted_lstsq(basis, colours, weights, _light_ridge(basis, weights, config))
        if step + 1 < iterations:
            weights = _robust_weights(colours - basis @ light, config)
    return light


# -------------------------------------------------------------------------------------------- per-vertex albedo
def _camera_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    normals = vertex_normals(torch.from_numpy(vertices), torch.from_numpy(faces)).numpy()
    return normals * _CAMERA_FLIP


def _bilinear(images: np.ndarray, xy: np.ndarray, padding: str = "border") -> np.ndarray:
    """`(H, W, C)` images at `(S, 2)` pixel positions (centres at i + 0.5), bilinear like the renderer -> `(S, C)`."""
    height, width = images.shape[:2]
    tensor = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(2, 0, 1)[None]
    grid = torch.from_numpy(np.asarray(xy, np.float64) / np.array([width, height]) * 2.0 - 1.0).float()
    sampled = F.grid_sample(tensor, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode=padding,
                            align_corners=False)
    return sampled[0, :, 0].T.double().numpy()


def _masked_bilinear(image: np.ndarray, valid: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear colour of `(V, 2)` pixel positions using only ``valid`` pixels: (colour (V, 3), coverage (V,))."""
    stack = np.concatenate([image * valid[..., None], valid[..., None]], axis=2)
    sampled = _bilinear(stack, xy, padding="zeros")
    coverage = sampled[:, 3]
    return sampled[:, :3] / np.maximum(coverage, 1e-6)[:, None], coverage


def _visible_vertices(vertices: np.ndarray, normals: np.ndarray, view: _SourceView,
                      config: AppearanceConfig) -> np.ndarray:
    """`(V,)` bool: the vertex is the visible surface at its pixel (z-buffer test with slope-aware slack)."""
    height, width = view.zbuf.shape
    col = np.floor(vertices[:, 0]).astype(np.int64)
    row = np.floor(vertices[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    surface_z = np.full(len(vertices), -np.inf)
    surface_z[inside] = view.zbuf[row[inside], col[inside]]
    # the pixel centre can be up to half a pixel (diagonal ~0.71) away: allow the surface's depth change there
    slope = np.sqrt(np.clip(1.0 - normals[:, 2] ** 2, 0.0, 1.0)) / np.maximum(normals[:, 2], 0.05)
    return inside & (vertices[:, 2] <= surface_z + config.depth_tolerance + 0.71 * slope)


def _observed_albedo(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, view: _SourceView,
                     usable: np.ndarray, light: np.ndarray, config: AppearanceConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex albedo where the vertex is seen on ``usable`` pixels: (albedo (V, 3), weight (V,)).

    Colours are divided by the shading of their own pixel's normal first, then sampled at the vertices: at creases
    and occlusion edges (eyelids, nostrils) a vertex normal can differ from the surface seen around it.
    """
    normals = _camera_vertex_normals(vertices, faces)
    frontal = np.clip((normals[:, 2] - config.frontal_threshold) / max(config.frontal_ramp, 1e-6), 0.0, 1.0)
    pixels = view.pixels[usable]
    pixel_albedo = np.zeros((view.zbuf.size, 3))
    shading = np.maximum(_shading(view.normals[usable], light), config.min_shading)
    pixel_albedo[pixels] = image.reshape(-1, 3)[pixels] / shading
    valid = np.zeros(view.zbuf.size, bool)
    valid[pixels] = True
    albedo, coverage = _masked_bilinear(pixel_albedo.reshape(*view.zbuf.shape, 3), valid.reshape(view.zbuf.shape),
                                        vertices[:, :2])
    weight = frontal * np.clip(coverage, 0.0, 1.0) * _visible_vertices(vertices, normals, view, config)
    return albedo, weight


def mirror_vertices(rest_vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """`(V,)` index of each vertex's left/right mirror (x reflected about the mean x) in a rest shape, -1 if none.

    The nearest vertex to the reflected position counts when it is within 1.5 median edge lengths (model meshes
    such as FLAME are only nearly symmetric).
    """
    from scipy.spatial import cKDTree

    rest = np.asarray(rest_vertices, np.float64)
    reflected = rest.copy()
    reflected[:, 0] = 2.0 * rest[:, 0].mean() - rest[:, 0]
    edges = rest[faces[:, [1, 2, 0]]] - rest[faces]
    tolerance = 1.5 * float(np.median(np.linalg.norm(edges, axis=2)))
    distance, index = cKDTree(rest).query(reflected)
    return np.where(distance <= tolerance, index, -1)


def _laplacian(faces: np.ndarray, num_vertices: int):
    """Combinatorial graph Laplacian ``D - A`` of the mesh's edges (scipy sparse, CSC)."""
    import scipy.sparse as sp

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adjacency = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices))
    degree = sp.diags(np.asarray(adjacency.sum(axis=1)).ravel())
    return (degree - adjacency).tocsc()


def _with_mirror(albedo: np.ndarray, weight: np.ndarray, mirror: np.ndarray | None,
                 config: AppearanceConfig) -> tuple[np.ndarray, np.ndarray]:
    """Add each vertex's mirror observation, as far as its own observation is missing or weak."""
    if mirror is None:
        return albedo, weight
    has = mirror >= 0
    partner = np.where(has, mirror, 0)
    mirror_w = np.where(has, config.mirror_weight * weight[partner] * (1.0 - weight), 0.0)
    total = weight + mirror_w
    blended = (weight[:, None] * albedo + mirror_w[:, None] * albedo[partner]) / np.maximum(total, 1e-12)[:, None]
    return np.where(total[:, None] > 0, blended, albedo), total


def _fill_albedo(albedo: np.ndarray, weight: np.ndarray, faces: np.ndarray, config: AppearanceConfig) -> np.ndarray:
    """Smooth completion: argmin sum w |a - albedo|^2 + s * sum_edges |a_i - a_j|^2 (+ a tiny pull to the mean).

    Unseen vertices (w = 0) get the harmonic interpolation of the seen ones; the tiny pull to the weighted mean
    colour only keeps parts with no seen vertex at all (a separate eyeball, say) well-defined (its reach, about
    sqrt(smoothness / pull) = 100 edges, exceeds a head's size in edges).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    num = len(albedo)
    mean = (weight[:, None] * albedo).sum(0) / max(float(weight.sum()), 1e-12)
    pull = 1e-4 * config.smoothness
    system = sp.diags(weight + pull).tocsc() + config.smoothness * _laplacian(faces, num)
    rhs = weight[:, None] * np.nan_to_num(albedo) + pull * mean
    return splu(system.tocsc()).solve(np.ascontiguousarray(rhs))


def _normalise_light(light: np.ndarray, shading_samples: np.ndarray) -> np.ndarray:
    """Scale each channel so the shading averages 1 over the fitted pixels (the albedo takes the colour)."""
    mean = shading_samples.mean(axis=0)
    return light / np.where(np.abs(mean) > 1e-6, mean, 1.0)


def _fallback_appearance(colours: np.ndarray, normals: np.ndarray, num_vertices: int) -> RenderAppearance:
    light = DEFAULT_SH_LIGHT.numpy().astype(np.float64)
    albedo = colours.mean(0) / np.maximum(_shading(normals, light).mean(0), 1e-3)
    logger.warning("only %d usable face pixels: using the default light and a uniform albedo for the render map.",
                   len(colours))
    return RenderAppearance(sh_light=light, vertex_albedo=np.tile(np.clip(albedo, 0, 1), (num_vertices, 1)))


def estimate_appearance(image, vertices, faces, region_mask, rest_vertices=None,
                        config: AppearanceConfig | None = None) -> RenderAppearance:
    """Per-vertex albedo and SH light of the render map, estimated from the source portrait (no texture model).

    Args:
        image: `(H, W, 3)` uint8 RGB source image.
        vertices: `(V, 3)` the source's posed mesh in the image's pixel space (x right, y down, z into the scene).
        faces: `(F, 3)` triangles (outward normal ``cross(v1 - v0, v2 - v0)``).
        region_mask: `(H, W)` bool, pixels whose colours may be used (e.g. :func:`face_region_mask`).
        rest_vertices: optional `(V, 3)` rest shape in a model frame that is left/right symmetric in x, used to
            copy the colour of seen vertices to their hidden mirror vertices.
        config: :class:`AppearanceConfig`.

    Returns:
        :class:`RenderAppearance` with ``sh_light`` and ``vertex_albedo`` (see the module docstring for the scale).

    Raises:
        InputError: bad shapes, or no usable pixel in the region.
    """
    config = config or AppearanceConfig()
    img = _as_image(image)
    verts, tris = _as_mesh(vertices, faces)
    mask = _as_mask(region_mask, img.shape[:2])
    mirror = None if rest_vertices is None else mirror_vertices(_as_rest(rest_vertices, verts.shape), tris)
    view = _rasterize_source(verts, tris, img.shape[:2])
    usable = _usable_pixels(view, img, mask, config)
    colours = img.reshape(-1, 3)[view.pixels[usable]].astype(np.float64)
    normals = view.normals[usable]
    if len(usable) < config.min_samples:
        return _fallback_appearance(colours, normals, len(verts))
    samples = _subsample(np.arange(len(usable)), config.max_samples)
    light = _fit_light(normals[samples], colours[samples], config)
    light = _normalise_light(light, _shading(normals[samples], light))
    observed, weight = _observed_albedo(img, verts, tris, view, usable, light, config)
    light, observed = _albedo_within_one(light, observed, weight)
    observed, weight = _with_mirror(observed, weight, mirror, config)
    albedo = _fill_albedo(observed, weight, tris, config)
    return RenderAppearance(sh_light=light, vertex_albedo=np.clip(albedo, 0.0, 1.0))


def _as_rest(rest_vertices, shape: tuple[int, ...]) -> np.ndarray:
    rest = np.asarray(rest_vertices, np.float64)
    if rest.shape != shape or not np.isfinite(rest).all():
        raise InputError(f"rest_vertices must be finite with the vertices' shape {shape}, got {rest.shape}.")
    return rest


def _albedo_within_one(light: np.ndarray, albedo: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move seen albedo above 1 into the light (one factor for all channels; the product, the render, is kept)."""
    seen = weight > 0
    excess = float(albedo[seen].max()) if seen.any() else 1.0
    return (light * excess, albedo / excess) if excess > 1.0 else (light, albedo)


# ------------------------------------------------------------------------------------------------ texture space
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
        """`(Ht, Wt, 3)` float32 texture of `(k,)` coefficients (the first k components), clamped to [0, 1]."""
        alpha = np.asarray(coefficients, np.float32)
        return np.clip(self.mean + self.basis[..., : alpha.size] @ alpha, 0.0, 1.0)

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


def _downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Area-average `(H, W, ...)` float32 to `(size, size, ...)` when larger (no upsampling)."""
    height, width = images.shape[:2]
    if height <= size and width <= size:
        return images
    if height % size == 0 and width % size == 0:  # block means: no full-size temporary copies
        fy, fx = height // size, width // size
        return images.reshape(size, fy, size, fx, *images.shape[2:]).mean(axis=(1, 3), dtype=np.float32)
    flat = torch.from_numpy(np.ascontiguousarray(images, np.float32)).reshape(height, width, -1)
    out = F.interpolate(flat.permute(2, 0, 1)[None], size=(min(size, height), min(size, width)), mode="area")
    return out[0].permute(1, 2, 0).reshape(*out.shape[2:], *images.shape[2:]).numpy()


def load_flame_texture_space(path: str | os.PathLike, num_components: int = 50, size: int = 256) -> FlameTextureSpace:
    """Load ``FLAME_texture.npz`` (or a BFM-derived ``FLAME_albedo_from_BFM.npz`` that carries vt/ft).

    The basis is cut to its first ``num_components`` components, converted from the files' BGR to RGB and [0, 1]
    scale, and area-downsampled to ``size`` x ``size`` (the official release fits at 256).

    Raises:
        InputError: missing file or keys, no UV coordinates (vt / ft), inconsistent shapes, too few components.
    """
    path = Path(path)
    with _open_npz(path) as data:
        mean_key, basis_key, scale = _texture_layout(data.files, path)
        vt, ft = _uv_layout(data, path)
        mean, basis = _image_layout(_read(data, mean_key, path), _read_components(data, basis_key, num_components,
                                                                                  path), path)
    rgb_mean = _downsample(mean[..., ::-1].astype(np.float32) * np.float32(scale), size)
    rgb_basis = _downsample(basis, size)[..., ::-1, :] * np.float32(scale)
    return FlameTextureSpace(mean=np.ascontiguousarray(rgb_mean), basis=np.ascontiguousarray(rgb_basis), vt=vt,
                             ft=ft, source=str(path))


def unweld(faces, uv_faces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One new vertex per distinct (vertex, vt) corner pair.

    Args:
        faces: `(F, 3)` mesh faces.
        uv_faces: `(F, 3)` texture-coordinate faces (``ft``), corner for corner.

    Returns:
        ``(new_faces (F, 3), vertex_map (Nu,), vt_map (Nu,))``: the faces over the new vertices, and the mesh
        vertex and the vt index of each new vertex.
    """
    f = np.asarray(faces, np.int64)
    ft = np.asarray(uv_faces, np.int64)
    if f.shape != ft.shape:
        raise InputError(f"the texture space's ft {ft.shape} does not match the mesh's faces {f.shape}.")
    pairs = np.stack([f.reshape(-1), ft.reshape(-1)], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return inverse.reshape(f.shape), unique[:, 0], unique[:, 1]


def _sample_space(space: FlameTextureSpace, uv: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean `(S, 3)` and basis `(S, 3, num)` at `(S, 2)` texel coordinates (bilinear, like the renderer)."""
    height, width = space.size
    stack = np.concatenate([space.mean[..., None], space.basis[..., :num]], axis=3).reshape(height, width, -1)
    values = _bilinear(stack, uv).reshape(len(uv), 3, num + 1)
    return values[:, :, 0], values[:, :, 1:]


def _fit_texture_light(colours: np.ndarray, basis_sh: np.ndarray, albedo: np.ndarray, weights: np.ndarray,
                       config: AppearanceConfig) -> np.ndarray:
    """Per channel ``colour_c ~ albedo_c * (sh @ L_c)`` for a fixed albedo: `(9, 3)` L."""
    light = np.empty((9, 3))
    for channel in range(3):
        design = basis_sh * albedo[:, channel : channel + 1]
        light[:, channel] = _weighted_lstsq(design, colours[:, channel], weights,
                                            _light_ridge(design, weights, config))
    return light


def _joint_texture_step(colours: np.ndarray, sh: np.ndarray, mean: np.ndarray, basis: np.ndarray,
                        light: np.ndarray, alpha: np.ndarray, weights: np.ndarray,
                        config: AppearanceConfig) -> tuple[np.ndarray, np.ndarray]:
    """One Gauss-Newton step on (light, alpha) of ``sum w |c - (sh @ L) * (mean + basis @ alpha)|^2 / noise^2
    + |alpha|^2`` (alternating the two linear halves converges slowly: brightness trades between them).

    The normal equations are assembled per colour channel: channel c's residuals depend on ``L[:, c]`` and alpha.
    """
    num = basis.shape[2]
    albedo = mean + basis @ alpha
    shading = sh @ light
    residual = colours - shading * albedo
    w = weights / config.texture_noise ** 2
    lhs, rhs = np.zeros((27 + num, 27 + num)), np.zeros(27 + num)
    prior = np.ones(27 + num)  # alpha ~ N(0, 1); the light entries are replaced below
    for c in range(3):
        light_rows = slice(9 * c, 9 * c + 9)
        d_light = sh * albedo[:, c : c + 1]  # d prediction_c / d L[:, c]
        d_alpha = basis[:, c, :] * shading[:, c : c + 1]  # d prediction_c / d alpha
        w_light, w_alpha = d_light * w[:, None], d_alpha * w[:, None]
        lhs[light_rows, light_rows] = d_light.T @ w_light
        lhs[light_rows, 27:] = w_light.T @ d_alpha
        lhs[27:, light_rows] = lhs[light_rows, 27:].T
        lhs[27:, 27:] += d_alpha.T @ w_alpha
        rhs[light_rows] = w_light.T @ residual[:, c]
        rhs[27:] += w_alpha.T @ residual[:, c]
        ridge = config.light_ridge * np.trace(lhs[light_rows, light_rows]) / 9  # as in the light-only fit
        prior[light_rows] = np.r_[0.0, np.full(8, ridge)]
    current = np.concatenate([light.T.reshape(-1), alpha])
    updated = current + np.linalg.solve(lhs + np.diag(prior), rhs - prior * current)
    return updated[:27].reshape(3, 9).T, updated[27:]


def _fit_texture_model(colours: np.ndarray, sh: np.ndarray, mean: np.ndarray, basis: np.ndarray,
                       config: AppearanceConfig) -> tuple[np.ndarray, np.ndarray]:
    """Light `(9, 3)` and coefficients `(K,)` of ``colour ~ (sh @ L) * (mean + basis @ alpha)``, robustly."""
    alpha, weights = np.zeros(basis.shape[2]), np.ones(len(colours))
    light = _fit_texture_light(colours, sh, mean, weights, config)  # start: the mean texture
    for _ in range(max(1, config.alternations)):
        light, alpha = _joint_texture_step(colours, sh, mean, basis, light, alpha, weights, config)
        weights = _robust_weights(colours - (sh @ light) * (mean + basis @ alpha), config)
    return light, alpha


def fit_texture_appearance(image, vertices, faces, region_mask, space: FlameTextureSpace,
                           config: AppearanceConfig | None = None) -> RenderAppearance:
    """Texture-space coefficients and SH light fitted to the source portrait (see the module docstring).

    Args:
        image, vertices, faces, region_mask: as for :func:`estimate_appearance` (``faces`` in the texture space's
            face order, e.g. FLAME's ``f``).
        space: :func:`load_flame_texture_space`.
        config: :class:`AppearanceConfig` (``texture_components``, ``alternations``, ``texture_noise``).

    Returns:
        :class:`RenderAppearance` with the texture, its uv / uv_faces / vertex_map and the fitted coefficients.
    """
    config = config or AppearanceConfig()
    img = _as_image(image)
    verts, tris = _as_mesh(vertices, faces)
    mask = _as_mask(region_mask, img.shape[:2])
    uv_faces, vertex_map, vt_map = unweld(tris, space.ft)
    uv = space.uv_pixels()[vt_map]
    num = min(config.texture_components, space.num_components)
    view = _rasterize_source(verts, tris, img.shape[:2])
    usable = _usable_pixels(view, img, mask, config)
    if len(usable) < config.min_samples:
        logger.warning("only %d usable face pixels: the render map uses the default light and the mean texture.",
                       len(usable))
        return RenderAppearance(sh_light=DEFAULT_SH_LIGHT.numpy(), texture=space.texture(np.zeros(0)), uv=uv,
                                uv_faces=uv_faces, vertex_map=vertex_map, texture_coefficients=np.zeros(num))
    samples = usable[_subsample(np.arange(len(usable)), config.max_samples)]
    uv_pixels = interpolate_foreground(view.fg, torch.from_numpy(uv_faces), torch.from_numpy(uv))
    mean, basis = _sample_space(space, uv_pixels[torch.from_numpy(samples)].double().numpy(), num)
    colours = img.reshape(-1, 3)[view.pixels[samples]].astype(np.float64)
    light, alpha = _fit_texture_model(colours, _sh(view.normals[samples]), mean, basis, config)
    return RenderAppearance(sh_light=light, texture=space.texture(alpha), uv=uv, uv_faces=uv_faces,
                            vertex_map=vertex_map, texture_coefficients=alpha)


# -------------------------------------------------------------------------------------------------- rendering
class AppearanceRenderer:
    """GuidanceRenderer wrapper that applies a RenderAppearance (handles unwelding/normals).

    Depth and normal maps are exactly :class:`~.renderer.GuidanceRenderer`'s for the welded mesh; the render map
    uses the appearance's light and its vertex albedo, or its texture looked up through ``uv_faces`` on the same
    rasterisation (so normals stay welded across UV seams).
    """

    def __init__(self, faces, appearance: RenderAppearance, image_size: tuple[int, int] = (512, 512),
                 device: str | torch.device = "cpu") -> None:
        self.appearance = appearance
        self.renderer = GuidanceRenderer(faces, image_size=image_size, sh_light=appearance.sh_light, device=device)
        self.device = self.renderer.device
        self._texture = self._uv = self._uv_faces = None
        if appearance.textured:
            if appearance.uv_faces.shape != tuple(self.renderer.faces.shape):
                raise InputError(f"the appearance's uv_faces {appearance.uv_faces.shape} do not match the mesh's "
                                 f"faces {tuple(self.renderer.faces.shape)}.")
            if appearance.uv_faces.min() < 0 or appearance.uv_faces.max() >= len(appearance.uv):
                raise InputError("the appearance's uv_faces index outside its uv.")
            self._texture = as_texture(appearance.texture, device=self.device)
            self._uv = torch.as_tensor(appearance.uv, device=self.device)
            self._uv_faces = torch.as_tensor(appearance.uv_faces, device=self.device)

    def _vertices(self, vertices) -> torch.Tensor:
        verts = torch.as_tensor(np.asarray(vertices) if not isinstance(vertices, torch.Tensor) else vertices,
                                device=self.device).to(torch.float32)
        verts = verts.unsqueeze(0) if verts.ndim == 2 else verts
        if verts.ndim != 3 or verts.shape[-1] != 3:
            raise ValueError(f"vertices must have shape (N, V, 3), got {tuple(verts.shape)}.")
        albedo = self.appearance.vertex_albedo
        if not self.appearance.textured and albedo is not None and albedo.shape[0] != verts.shape[1]:
            raise ValueError(f"the appearance has {albedo.shape[0]} vertex albedos, the mesh has {verts.shape[1]} "
                             "vertices.")
        return verts

    def _textured_foreground(self, verts: torch.Tensor):
        """Foreground and `(K,)` depth, `(K, 3)` clamped normal and `(K, 3)` render of the covered pixels."""
        faces = self.renderer.faces
        fg = rasterize_foreground(verts, faces, self.renderer.image_size, cull_backfaces=self.renderer.cull_backfaces)
        depth = depth_foreground(fg, verts)
        normals = camera_normals_foreground(fg, verts, faces)
        uv = interpolate_foreground(fg, self._uv_faces, self._uv)
        albedo = sample_texture_foreground(self._texture, uv, fg.frame).to(normals.dtype)
        render = shade_foreground(normals, albedo, self.renderer.sh_light, fg.frame)
        return fg, depth, normals.clamp_(0, 1), render

    def render(self, vertices) -> GuidanceMaps:
        """Depth, normal and render maps of `(N, V, 3)` image-space vertices (see GuidanceRenderer.render)."""
        verts = self._vertices(vertices)
        if not self.appearance.textured:
            return self.renderer.render(verts, vertex_colors=self.appearance.vertex_albedo)
        fg, depth, normal, render = self._textured_foreground(verts)
        return GuidanceMaps(depth=fg.scatter(depth), normal=fg.scatter(normal), render=fg.scatter(render),
                            mask=fg.mask())

    def render_uint8(self, vertices) -> dict[str, np.ndarray]:
        """``{'depth', 'normal', 'render'}`` as `(N, H, W, 3)` uint8, like GuidanceRenderer.render_uint8."""
        verts = self._vertices(vertices)
        if not self.appearance.textured:
            return self.renderer.render_uint8(verts, vertex_colors=self.appearance.vertex_albedo)
        fg, depth, normal, render = self._textured_foreground(verts)
        maps = {"depth": depth[:, None].expand(-1, 3), "normal": normal, "render": render}
        return {name: fg.scatter(_quantize(values)).cpu().numpy() for name, values in maps.items()}


def _quantize(values: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded like GuidanceRenderer's maps."""
    return (values.detach().float().clamp(0, 1) * 255.0).round_().to(torch.uint8)
