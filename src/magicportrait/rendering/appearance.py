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

Both return a :class:`~magicportrait.types.RenderAppearance`; :mod:`.guidance` renders with it.
:func:`source_appearance` picks one for a source portrait and its fitted head.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from magicportrait.config import GUIDANCE, check_at_least, check_choices, check_positive, check_range, option
from magicportrait.errors import InputError
from magicportrait.geometry.mesh import graph_laplacian, mirror_vertices, unweld
from magicportrait.heads.flame_texture import FlameTextureSpace, load_flame_texture_space
from magicportrait.types import RenderAppearance

from .rasterizer import Foreground, interpolate_foreground, rasterize_foreground
from .shading import (
    DEFAULT_SH_LIGHT,
    camera_normals_foreground,
    sh_basis,
    vertex_normals,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AppearanceConfig",
    "estimate_appearance",
    "face_oval_loop",
    "face_region_mask",
    "fit_texture_appearance",
    "polygon_mask",
    "source_appearance",
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
    system = sp.diags(weight + pull).tocsc() + config.smoothness * graph_laplacian(faces, num)
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


# ------------------------------------------------------------------------------------------------- the stage
def source_appearance(head_model, crop: np.ndarray, track, head, config: AppearanceConfig | None = None,
                      texture_path: str | os.PathLike | None = None) -> RenderAppearance | None:
    """The render map's albedo and SH light for a source crop and its fitted head (T=1, crop space).

    None for the open face geometry (its vertices are the landmarks: the crop itself is the texture). With a
    FLAME texture space (``texture_path``) the texture coefficients and light are fitted jointly, otherwise a
    per-vertex albedo is estimated.
    """
    if head_model.name == "mediapipe":
        return None
    config = config or AppearanceConfig()
    vertices = head_model.posed_vertices(head)[0]
    region = face_region_mask(track.landmarks[0, :, :2], crop.shape[:2])
    if texture_path is not None:
        space = load_flame_texture_space(texture_path, num_components=config.texture_components,
                                         size=config.texture_size)
        return fit_texture_appearance(crop, vertices, head_model.faces, region, space, config=config)
    rest = head_model.shape_vertices(np.zeros_like(head.identity), head.expression[:1] * 0)[0]
    return estimate_appearance(crop, vertices, head_model.faces, region, rest_vertices=rest, config=config)
