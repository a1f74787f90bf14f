"""The smooth 2D warp that moves everything outside the rendered face (hair, ears, neck, background) with the head.

Points are in continuous image space (pixel ``(row j, col i)`` covers ``[i, i+1) x [j, j+1)``, as landmarks are);
the maps returned are for ``cv2.remap``, whose integer map values are pixel centres (``x_cv = x - 0.5``).

The warp is a blend of the head's 2D similarity and the identity, ``q(p) = p + w(p) (S^-1(p) - p) + r(p)``: ``w``
is 1 over the head (an ellipse around the landmarks, grown to cover hair and ears), falls smoothly to 0 around it
and is 0 at the image border, so the background and the crop's border stay put and nothing tears. ``r`` is a
smooth residual that makes every landmark land exactly where the face mesh puts it (an open jaw pulls the chin and
the neck below it along). It is evaluated on a coarse grid and upsampled, since the field is smooth.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from magicportrait.errors import InputError

__all__ = ["head_motion_maps", "similarity_2d"]

# Control points where the head's influence is below this (at the frozen border, far down the neck) cannot be
# honoured: their residual would be divided by it and amplified, so they are left out of the residual field.
_MIN_INFLUENCE = 0.2
# Residual interpolation: widest Gaussian as a fraction of the face size; narrowest in grid cells.
_RESIDUAL_SIGMA = 0.35
_MIN_SIGMA_CELLS = 1.0
# Length of the below-chin fade, as a fraction of the head ellipse's half-height.
_CHIN_FADE = 0.5
# Width of the ramp from 0 (within border_px of the border) to 1, as a fraction of the image's shorter side.
_BORDER_RAMP = 0.1


def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 2 or points.shape[0] < 2 or not np.all(np.isfinite(points)):
        raise InputError(f"{name} must be finite (N >= 2, 2) points, got shape {points.shape}.")
    return points[:, :2]


def _as_weights(weights: np.ndarray | None, count: int) -> np.ndarray:
    if weights is None:
        return np.ones(count)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,) or np.any(weights < 0) or not weights.sum() > 0:
        raise InputError(f"weights must be ({count},) non-negative with a positive sum, got {weights.shape}.")
    return weights


def _similarity_complex(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[complex, complex]:
    """Weighted least-squares ``target ~ a * source + b`` in complex numbers (a = scale * e^{i angle}).

    This is 2D Umeyama: a complex factor is a rotation times a scale, so reflections are excluded by construction.
    """
    w = weights / weights.sum()
    src = source[:, 0] + 1j * source[:, 1]
    tgt = target[:, 0] + 1j * target[:, 1]
    src_mean, tgt_mean = w @ src, w @ tgt
    src_c, tgt_c = src - src_mean, tgt - tgt_mean
    variance = float(w @ np.abs(src_c) ** 2)
    if variance <= 1e-18:
        raise InputError("the source points all coincide; a similarity needs at least two distinct points.")
    scale_rotation = complex(w @ (tgt_c * np.conj(src_c))) / variance
    return scale_rotation, complex(tgt_mean - scale_rotation * src_mean)


def similarity_2d(source_points: np.ndarray, target_points: np.ndarray, weights: np.ndarray | None = None
                  ) -> np.ndarray:
    """Weighted 2D similarity (rotation, uniform scale, translation; no reflection) with ``target ~ S(source)``.

    Returns the OpenCV-convention ``(2, 3)`` matrix, so ``cv2.warpAffine(image, S, size)`` moves an image the way
    ``magicportrait.tracking.boxes.transform_points(source_points, S)`` moves its points.
    """
    source = _as_points(source_points, "source_points")
    target = _as_points(target_points, "target_points")
    if source.shape != target.shape:
        raise InputError(f"source and target points differ in shape: {source.shape} vs {target.shape}.")
    a, b = _similarity_complex(source, target, _as_weights(weights, len(source)))
    # Image-space x' = A x + b becomes, with x_cv = x - 0.5: x'_cv = A x_cv + (b + A (0.5, 0.5) - (0.5, 0.5)).
    linear = np.array([[a.real, -a.imag], [a.imag, a.real]])
    offset = np.array([b.real, b.imag]) + linear @ np.array([0.5, 0.5]) - 0.5
    return np.column_stack([linear, offset])


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class _HeadInfluence:
    """``w(p)`` for output-frame points ``p``: ellipse falloff, partial neck follow, zero border.

    Everything is measured at ``S^-1(p)``, i.e. the ellipse is carried into the output frame by the head motion.
    """

    def __init__(self, source: np.ndarray, weights: np.ndarray, image_size: tuple[int, int], inner: float,
                 outer: float, below_chin_follow: float, border_px: float) -> None:
        self.centre = weights @ source / weights.sum()
        self.half_axes = np.maximum(0.5 * (source.max(0) - source.min(0)), 1e-6)
        self.chin_y = float(source[:, 1].max())
        self.chin_fade = _CHIN_FADE * float(self.half_axes[1])
        self.inner, self.outer, self.follow = inner, outer, below_chin_follow
        self.height, self.width = image_size
        self.border_px = border_px
        self.border_ramp = max(border_px, _BORDER_RAMP * min(image_size))

    def __call__(self, head_x: np.ndarray, head_y: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``w`` at output points ``(x, y)`` whose preimages under the head similarity are ``(head_x, head_y)``."""
        radius = np.hypot((head_x - self.centre[0]) / self.half_axes[0], (head_y - self.centre[1]) / self.half_axes[1])
        weight = 1.0 - _smoothstep((radius - self.inner) / (self.outer - self.inner))
        below_chin = _smoothstep((head_y - self.chin_y) / self.chin_fade)
        weight = weight * (1.0 - (1.0 - self.follow) * below_chin)
        return weight * self._border_factor(x, self.width) * self._border_factor(y, self.height)

    def _border_factor(self, coordinate: np.ndarray, length: int) -> np.ndarray:
        distance = np.minimum(coordinate, length - coordinate)
        return _smoothstep((distance - self.border_px) / self.border_ramp)


def _inverse_similarity(a: complex, b: complex, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    preimage = ((x + 1j * y) - b) / a
    return preimage.real, preimage.imag


def _gaussian_1d(coordinates: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((coordinates[:, None] - centres[None, :]) / sigma) ** 2)


def _pairwise_gaussian(points: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-|p_i - p_j|^2 / 2 sigma^2)`` as a float32 ``(N, N)`` array, computed in place (float32 is plenty
    for a smooth field and halves the memory traffic that dominates at N ~ 500)."""
    points = points.astype(np.float32)
    kernel = np.subtract.outer(points[:, 0], points[:, 0])
    kernel *= kernel
    dy = np.subtract.outer(points[:, 1], points[:, 1])
    dy *= dy
    kernel += dy
    kernel *= np.float32(-0.5 / sigma**2)
    return np.exp(kernel, out=kernel)


class _ResidualField:
    """Smooth field through the control-point residuals: multilevel normalised Gaussian RBFs.

    Level 0 (sigma = 0.35 x face size) is a normalised Gaussian RBF field ``sum g_i c_i / sum g_i``: smooth, and
    it extends the residuals of the nearest points (the chin's to the neck) instead of decaying. One wide level
    cannot follow a jaw that moves while the forehead stays, so each further level halves sigma (down to one
    grid cell) and fits what is left; those levels are normalised softly, ``sum g_i c_i / (sum g_i + 1/2)``, so
    they vanish away from the points instead of extending as creases. Each level's coefficients come from a few
    Landweber steps ``c += rest - B c`` (stable, no ill-conditioned solve; the level's matrix B has eigenvalues
    in [0, 1]), which makes the points land within a few tenths of a px.
    """

    iterations = 6
    soft_floor = 0.5

    def __init__(self, points: np.ndarray, values: np.ndarray, sigma: float, min_sigma: float) -> None:
        self.points = points
        self.levels: list[tuple[float, float, np.ndarray]] = []
        self.misfit = values
        if len(points) == 0:
            return
        kernel = _pairwise_gaussian(points, sigma)
        basis = np.empty_like(kernel)  # in place throughout: at N ~ 500, fresh N x N arrays cost more than maths
        rest, floor = values.astype(np.float32), 0.0
        while True:
            np.divide(kernel, kernel.sum(1, keepdims=True) + np.float32(floor), out=basis)
            coefficients = rest.copy()
            for _ in range(self.iterations - 1):
                coefficients += rest - basis @ coefficients
            rest = rest - basis @ coefficients
            self.levels.append((sigma, floor, coefficients))
            sigma, floor = 0.5 * sigma, self.soft_floor
            if sigma < min_sigma:
                break
            np.square(kernel, out=kernel)  # exp(-d^2 / 2 (sigma/2)^2) = kernel^4
            np.square(kernel, out=kernel)
        self.misfit = rest.astype(np.float64)

    def on_grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The field on the grid ``ys x xs``, ``(len(ys), len(xs), 2)``; Gaussians are separable: two matmuls."""
        rows = len(ys)
        field = np.zeros((2, rows, len(xs)))
        for sigma, floor, coefficients in self.levels:
            gx = _gaussian_1d(xs, self.points[:, 0], sigma)
            gy = _gaussian_1d(ys, self.points[:, 1], sigma)
            # numerators (x, y) and denominator in one matmul: rows [gy c_x; gy c_y; gy] @ gx^T
            stacked = np.concatenate([gy * coefficients[:, 0], gy * coefficients[:, 1], gy]) @ gx.T
            denominator = np.maximum(stacked[2 * rows :] + floor, 1e-300)
            field += stacked[: 2 * rows].reshape(2, rows, -1) / denominator
        return np.moveaxis(field, 0, -1)


def _coarse_axis(length: int, cells: int) -> np.ndarray:
    """Continuous coordinates of the coarse samples that ``cv2.resize(INTER_LINEAR)`` to ``length`` puts on
    output pixel centres (its sample ``k`` lies at output pixel ``(k + 0.5) length / cells - 0.5``)."""
    return (np.arange(cells) + 0.5) * (length / cells)


def head_motion_maps(source_points: np.ndarray, target_points: np.ndarray, image_size: tuple[int, int], *,
                     weights: np.ndarray | None = None, inner: float = 1.25, outer: float = 2.0,
                     below_chin_follow: float = 0.6, border_px: float = 8, grid_step: int = 8
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Backward maps ``(map_x, map_y)`` (float32 ``(H, W)``) for ``cv2.remap(source, map_x, map_y, INTER_LINEAR,
    borderMode=BORDER_REFLECT)`` that move the head region with the landmarks ``source -> target``.

    ``weights (N,)`` weight the points in the similarity fit (rigid points high, jaw / lips low); every point's
    residual is honoured regardless. The head ellipse (centre: weighted centroid, half-axes: half the points'
    extent) has influence 1 within ``inner`` times it, a smoothstep to 0 at ``outer`` times it, fades to
    ``below_chin_follow`` below the lowest source point (the neck follows partially) and is 0 within
    ``border_px`` of the image border (rising to 1 over 10% of the shorter side beyond). Computed every
    ``grid_step`` px and upsampled: ~1.5 ms at 512x512 with 100 points (~5 ms with all 478 MediaPipe points:
    the residual fit is O(N^2)). Identical points give the identity grid.
    """
    if len(image_size) != 2:
        raise InputError(f"image_size must be (height, width), got {image_size!r}.")
    height, width = (int(v) for v in image_size)
    source = _as_points(source_points, "source_points")
    target = _as_points(target_points, "target_points")
    if source.shape != target.shape:
        raise InputError(f"source and target points differ in shape: {source.shape} vs {target.shape}.")
    if not 0 < inner < outer or not 0 <= below_chin_follow <= 1 or grid_step < 1 or height < 2 or width < 2:
        raise InputError("head_motion_maps needs 0 < inner < outer, 0 <= below_chin_follow <= 1, grid_step >= 1 "
                         f"and an image of at least 2x2 px; got inner={inner}, outer={outer}, "
                         f"below_chin_follow={below_chin_follow}, grid_step={grid_step}, image_size={image_size}.")
    point_weights = _as_weights(weights, len(source))
    a, b = _similarity_complex(source, target, point_weights)
    influence = _HeadInfluence(source, point_weights, (height, width), inner, outer, below_chin_follow, border_px)

    # Residuals at the control points: where the similarity blend leaves them, versus their source position.
    head_x, head_y = _inverse_similarity(a, b, target[:, 0], target[:, 1])
    weight_at_points = influence(head_x, head_y, target[:, 0], target[:, 1])
    base = target + weight_at_points[:, None] * (np.column_stack([head_x, head_y]) - target)
    # r(p) = w(p) f(p), so f must carry residual / w at each point for the point to land exactly.
    usable = weight_at_points >= _MIN_INFLUENCE
    residual = (source - base)[usable] / weight_at_points[usable, None]
    face_size = float(np.max(target.max(0) - target.min(0)))
    sigma = max(_RESIDUAL_SIGMA * face_size, 1.0)
    field = _ResidualField(target[usable], residual, sigma, _MIN_SIGMA_CELLS * grid_step)

    # The displacement q(p) - p on a coarse grid aligned with cv2.resize's sampling, then upsampled.
    xs = _coarse_axis(width, max(2, math.ceil(width / grid_step)))
    ys = _coarse_axis(height, max(2, math.ceil(height / grid_step)))
    grid_x, grid_y = np.meshgrid(xs, ys)
    pre_x, pre_y = _inverse_similarity(a, b, grid_x, grid_y)
    weight = influence(pre_x, pre_y, grid_x, grid_y)
    displacement = np.stack([pre_x - grid_x, pre_y - grid_y], axis=-1) + field.on_grid(xs, ys)
    displacement *= weight[..., None]
    identity_x, identity_y = _identity_grid(height, width)
    map_x = _upsampled(displacement[..., 0], height, width, int(math.ceil(border_px)))
    map_y = _upsampled(displacement[..., 1], height, width, int(math.ceil(border_px)))
    map_x += identity_x  # in place: a fresh full-size array costs more than the addition
    map_y += identity_y
    return map_x, map_y


def _upsampled(coarse: np.ndarray, height: int, width: int, border: int) -> np.ndarray:
    """Bilinear upsampling to full size; the frozen border is pinned to exactly 0 (the bilinear interpolation
    reaches half a grid cell into it)."""
    full = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    if border > 0:
        full[:border] = 0.0
        full[-border:] = 0.0
        full[:, :border] = 0.0
        full[:, -border:] = 0.0
    return full


@lru_cache(maxsize=4)
def _identity_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only pixel-centre coordinate grids (cv2.remap convention), cached per size."""
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    grid_x.flags.writeable = False
    grid_y.flags.writeable = False
    return grid_x, grid_y
