"""The 2D motion of everything outside the re-rendered face: the head (hair, ears, hat) moves rigidly with the
face's 2D similarity; the body (neck below a short band, shoulders, clothes, hands) and the background stay still.

Points are in continuous image space (pixel ``(row j, col i)`` covers ``[i, i+1) x [j, j+1)``, as landmarks are);
the maps returned are for ``cv2.remap``, whose integer map values are pixel centres (``x_cv = x - 0.5``).

Geometry, fixed once per portrait by :class:`HeadFrame`: the face's centre, its "down" axis (forehead to chin)
and half-sizes across and along it, and the chin line (perpendicular to "down" through the lowest face point).

* :func:`head_follow` is how much of the head's motion each point takes: 1 on the head (within ``inner`` face
  half-sizes, the hair above reaching higher), smoothly 0 beyond ``outer``, beside the neck past the neck's
  width and below the neck band (body, shoulders, clothes, hands far from the head).
* :func:`rigid_head_maps` moves the source by ``q(p) = p + w(p) (S^-1(p) - p)``, ``S`` the head's similarity and
  ``w`` that weight: a continuous field, so the person never tears; the hair and neck bend gently over the soft
  bands. A thin ring around the face takes a smooth field of the landmarks' residuals from the similarity, so
  the outline lands where the face mesh puts it (a turned cheek, an open jaw); beyond it, on the head, the map
  is exactly the inverse similarity, so straight lines on the head stay straight. ``w`` also falls to 0 at the
  crop border, so a head that reaches it stays continuous with the full frame.

Only the person moves: :mod:`magicportrait.compositing.head_layers` composes the warped person (premultiplied by
its soft alpha) over a still background layer, in which what the head can uncover is filled in from the
background around it (:mod:`magicportrait.compositing.fill`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

from magicportrait.errors import InputError

if TYPE_CHECKING:
    from magicportrait.compositing.head_motion import DepthMotion

__all__ = ["HeadFrame", "head_follow", "head_weight", "rigid_head_maps", "similarity_2d"]

# Width of the ramp from 0 (within border_px of the border) to 1, as a fraction of the image's shorter side.
_BORDER_RAMP = 0.1
# Below the face's centre the moving part narrows to the neck: its half-width (in face half-widths) goes from the
# head's ``outer`` reach at TAPER_START face half-heights below the centre to NECK_WIDTH at TAPER_PAST_CHIN neck
# bands below the chin line, with a soft edge NECK_SOFT wide, so the shoulders and a collar beside the jaw stay on
# the still body while the ears and the hair beside the cheeks move. The taper is long: hair beside the face moves
# along it when the head rolls, and a short one would fold the hair (the map's Jacobian stays above ~0.3 at 15°).
NECK_WIDTH = 0.7
TAPER_START = 0.0
NECK_SOFT = 0.5
TAPER_PAST_CHIN = 1.0
# The landmarks' residual from the similarity (a turn moves the cheek's outline, an open jaw the chin) bends only a
# thin ring around the face, so the hair and ears beside the face's outline meet it: full within RING_INNER face
# half-sizes, none beyond RING_OUTER. Residual interpolation: widest Gaussian as a fraction of the face size.
RING_INNER, RING_OUTER = 1.05, 1.35
_RESIDUAL_SIGMA = 0.35
HAIR_ABOVE = 1.5
# The band where the head's motion fades out is at least this many times as wide as the motion there (a smoothstep's
# steepest slope is 1.5 / width, so the warp's Jacobian stays above 1 - 1.5 / FOLD_MARGIN = 0.25: no fold).
FOLD_MARGIN = 2.0


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


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class HeadFrame:
    """The source face's place: ``centre``, unit ``down`` axis, ``half_size`` (across, along down) in px and the
    chin line at ``chin`` px along ``down`` from the centre; ``neck_length`` is the neck band's length in px; the
    head moves fully within ``inner`` face half-sizes of the centre, not at all beyond ``outer``."""

    centre: np.ndarray
    down: np.ndarray
    half_size: np.ndarray
    chin: float
    neck_length: float
    inner: float = 1.5
    outer: float = 2.1

    @classmethod
    def from_points(cls, points: np.ndarray, *, down: np.ndarray | None = None, neck_length: float = 0.5,
                    inner: float = 1.5, outer: float = 2.1) -> HeadFrame:
        """From the face landmarks (its outline included); ``down`` defaults to the image's +y; ``neck_length``
        in face half-heights."""
        points = _as_points(points, "points")
        axis = np.array([0.0, 1.0]) if down is None else np.asarray(down, dtype=np.float64)[:2]
        if not np.all(np.isfinite(axis)) or np.linalg.norm(axis) < 1e-9 or not neck_length > 0:
            raise InputError(f"HeadFrame needs a non-zero down axis and neck_length > 0; got {down}, {neck_length}.")
        if not 0 < inner < outer:
            raise InputError(f"HeadFrame needs 0 < inner < outer; got inner={inner}, outer={outer}.")
        axis = axis / np.linalg.norm(axis)
        across, along = _axes(points, axis)
        centre_u, centre_v = 0.5 * (across.max() + across.min()), 0.5 * (along.max() + along.min())
        centre = centre_u * np.array([-axis[1], axis[0]]) + centre_v * axis
        half_size = np.maximum(0.5 * np.array([np.ptp(across), np.ptp(along)]), 1e-6)
        return cls(centre, axis, half_size, float(along.max() - centre_v), float(neck_length * half_size[1]),
                   float(inner), float(outer))

    def coordinates(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offsets from the centre across and along ``down``, in px."""
        dx, dy = x - self.centre[0], y - self.centre[1]
        return -self.down[1] * dx + self.down[0] * dy, self.down[0] * dx + self.down[1] * dy

    def radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Elliptic radius in face half-sizes (1 on the face's bounding ellipse), with the half-height above the
        centre ``HAIR_ABOVE`` times larger: hair and hats reach far above the forehead, nothing else does."""
        across, along = self.coordinates(x, y)
        height = np.where(along < 0, HAIR_ABOVE * self.half_size[1], self.half_size[1])
        return np.hypot(across / self.half_size[0], along / height)

    def neck(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance below the chin line in neck-band lengths (0 at the chin, 1 at the band's end)."""
        return (self.coordinates(x, y)[1] - self.chin) / self.neck_length


def _axes(points: np.ndarray, down: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return -down[1] * points[:, 0] + down[0] * points[:, 1], points @ down


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    grid_x, grid_y = _identity_grid(height, width)
    return grid_x.astype(np.float64) + 0.5, grid_y.astype(np.float64) + 0.5


def head_follow(frame: HeadFrame, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much of the head's motion a point takes, as two factors in [0, 1]: ``(head, body)``.

    ``head``: 1 within ``frame.inner`` face half-sizes of the centre (hair, ears, hat), a smoothstep to 0 at
    ``frame.outer``: the hair beyond bends gently instead of tearing. ``body``: 1 above the chin line, a smoothstep
    to 0 over the neck band, and below the cheeks the moving part narrows to the neck (``NECK_WIDTH`` face
    half-widths, soft over ``NECK_SOFT``), so the shoulders and a collar beside the jaw stay still.
    """
    across, along = frame.coordinates(x, y)
    head = 1.0 - smoothstep((frame.radius(x, y) - frame.inner) / (frame.outer - frame.inner))
    start = TAPER_START * frame.half_size[1]
    taper = smoothstep((along - start) / max(frame.chin + TAPER_PAST_CHIN * frame.neck_length - start, 1e-6))
    half_width = NECK_WIDTH + (1.0 - taper) * (frame.outer - NECK_WIDTH)  # beside the cheeks: the head's reach
    body = 1.0 - smoothstep((np.abs(across) / frame.half_size[0] - half_width) / NECK_SOFT)
    body *= 1.0 - smoothstep(frame.neck(x, y))
    return head, body


def head_weight(frame: HeadFrame, image_size: tuple[int, int]) -> np.ndarray:
    """float32 ``(H, W)``: :func:`head_follow` at rest, in the source: what can move (1) and what never does (0)."""
    x, y = pixel_centres(*(int(v) for v in image_size))
    head, body = head_follow(frame, x, y)
    return (head * body).astype(np.float32)


def rigid_head_maps(source_points: np.ndarray, target_points: np.ndarray, frame: HeadFrame,
                    image_size: tuple[int, int], *, weights: np.ndarray | None = None, border_px: float = 8,
                    grid_step: int = 8, outline: np.ndarray | None = None,
                    motion: DepthMotion | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Backward maps ``(map_x, map_y)`` (float32 ``(H, W)``) for ``cv2.remap(source, map_x, map_y, INTER_LINEAR)``
    that move the head by the weighted similarity ``S`` of the landmarks ``source -> target`` and hold the body
    still (``frame``: the source's :class:`HeadFrame`; see the module docstring): ``q(p) = p + w (S^-1(p) - p)``,
    ``w`` = :func:`head_follow`'s head factor at ``S^-1(p)`` (the head's own frame) times its body factor at both
    ``S^-1(p)`` and ``p`` (so the body stays exactly still, however the head moves). The field is continuous: no
    tear anywhere, only a gentle bend over the soft bands.

    Exactly the inverse similarity on the head beyond the ring around the face (away from the border); exactly
    the identity on the body and within ``border_px`` of the border; the landmarks land within a px of their
    targets. ``outline``: indices of the points the ring's residual field goes through (default all): the face's
    outline alone, so that points inside the face, which a turn moves unlike the outline, do not bend the ring
    around it (those points are what a re-rendered face covers). ``motion``: the head's 3D motion with the
    source's depth per pixel (:class:`magicportrait.compositing.head_motion.DepthMotion`) in place of ``S`` (the
    head then moves with parallax, not flat). Computed every ``grid_step`` px and upsampled: ~1.5 ms at 512x512
    with ~150 points.
    """
    if len(image_size) != 2:
        raise InputError(f"image_size must be (height, width), got {image_size!r}.")
    height, width = (int(v) for v in image_size)
    source = _as_points(source_points, "source_points")
    target = _as_points(target_points, "target_points")
    if source.shape != target.shape:
        raise InputError(f"source and target points differ in shape: {source.shape} vs {target.shape}.")
    if grid_step < 1 or height < 2 or width < 2:
        raise InputError(f"rigid_head_maps needs grid_step >= 1 and an image of at least 2x2 px; got "
                         f"grid_step={grid_step}, image_size={image_size}.")
    inverse = _similarity_inverse(source, target, weights) if motion is None else motion.inverse
    residual = source - np.column_stack(inverse(target[:, 0], target[:, 1]))
    sigma = max(_RESIDUAL_SIGMA * float(np.max(target.max(0) - target.min(0))), 1.0)
    ring_points = slice(None) if outline is None else np.asarray(outline)
    field = _ResidualField(target[ring_points], residual[ring_points], sigma, float(grid_step))
    xs = _coarse_axis(width, max(2, math.ceil(width / grid_step)))
    ys = _coarse_axis(height, max(2, math.ceil(height / grid_step)))
    grid_x, grid_y = np.meshgrid(xs, ys)
    pre_x, pre_y = inverse(grid_x, grid_y)
    ramp = max(border_px, _BORDER_RAMP * min(height, width))
    # The neck band starts at the lower of the source's and the target's chin (an open jaw lowers it).
    lowered = max(0.0, float(frame.coordinates(target[:, 0], target[:, 1])[1].max()) - frame.chin)
    low = _widened(replace(frame, chin=frame.chin + lowered), pre_x - grid_x, pre_y - grid_y, pre_x, pre_y)
    head, body_pre = head_follow(low, pre_x, pre_y)
    follow = head * np.minimum(body_pre, head_follow(low, grid_x, grid_y)[1])
    follow *= _border_factor(grid_x, width, border_px, ramp) * _border_factor(grid_y, height, border_px, ramp)
    border = int(math.ceil(border_px))
    identity_x, identity_y = _identity_grid(height, width)
    # the ring is at least FOLD_MARGIN times as wide as the largest residual it fades out (no fold)
    ring_width = max(RING_OUTER - RING_INNER, FOLD_MARGIN * float(np.abs(residual[ring_points]).max(initial=0.0))
                     / float(np.mean(frame.half_size)))
    ring = (1.0 - smoothstep((frame.radius(pre_x, pre_y) - RING_INNER) / ring_width))
    offset = field.on_grid(xs, ys) * ring[..., None]
    map_x = _upsampled(follow * (pre_x - grid_x + offset[..., 0]), height, width, border)
    map_y = _upsampled(follow * (pre_y - grid_y + offset[..., 1]), height, width, border)
    map_x += identity_x  # in place: a fresh full-size array costs more than the addition
    map_y += identity_y
    return map_x, map_y


def _widened(frame: HeadFrame, shift_x: np.ndarray, shift_y: np.ndarray, pre_x: np.ndarray,
             pre_y: np.ndarray) -> HeadFrame:
    """``frame`` with the band where the head's motion fades out (``inner`` to ``outer``) widened inward to
    ``FOLD_MARGIN`` times the largest shift there (``shift``: the head's motion at the grid points whose preimages
    are ``pre``), so the warp does not fold back on itself (a strand of hair looping) in a large turn: the hair then
    bends over a wider band instead. Its outer end stays (beyond it the still layer holds the portrait as it is)
    and its inner end goes no nearer than the ring round the face."""
    radius = frame.radius(pre_x, pre_y)
    band = (radius > frame.inner) & (radius < frame.outer)
    if not band.any():
        return frame
    needed = FOLD_MARGIN * float(np.hypot(shift_x[band], shift_y[band]).max()) / float(np.mean(frame.half_size))
    if needed <= frame.outer - frame.inner:
        return frame
    return replace(frame, inner=max(RING_OUTER, min(frame.inner, frame.outer - needed)))


def _similarity_inverse(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None):
    """``(x, y) -> S^-1 (x, y)`` for the weighted similarity ``S`` of ``source -> target``."""
    a, b = _similarity_complex(source, target, _as_weights(weights, len(source)))

    def inverse(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moved_back = ((x + 1j * y) - b) / a
        return moved_back.real, moved_back.imag

    return inverse


def _gaussian_1d(coordinates: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    # the exponent is floored: exp below ~1e-308 gives subnormal floats, which make every later operation on them
    # ~100x slower (e^-80 ~ 2e-35 is nothing next to the fields' soft floors and a point's own weight)
    return np.exp(np.maximum(-0.5 * ((coordinates[:, None] - centres[None, :]) / sigma) ** 2, -80.0))


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


def _border_factor(coordinate: np.ndarray, length: int, border_px: float, ramp: float) -> np.ndarray:
    distance = np.minimum(coordinate, length - coordinate)
    return smoothstep((distance - border_px) / ramp)


def _coarse_axis(length: int, cells: int) -> np.ndarray:
    """Continuous coordinates of the coarse samples that ``cv2.resize(INTER_LINEAR)`` to ``length`` puts on
    output pixel centres (its sample ``k`` lies at output pixel ``(k + 0.5) length / cells - 0.5``)."""
    return (np.arange(cells) + 0.5) * (length / cells)


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
