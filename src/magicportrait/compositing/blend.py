"""Blending a rendered face into an image: feathered masks, low-frequency colour matching, multi-band blending.

All three work on RGB uint8 ``(H, W, 3)`` images and ``(H, W)`` masks and cost a few ms at 512x512 on one core
(float32 OpenCV filters, heavy filtering done at low resolution or only inside the mask's bounding box).
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from magicportrait.errors import InputError

__all__ = ["feather_mask", "laplacian_blend", "match_colour"]

# Resolution (longer side, px) at which match_colour spreads its offsets: the correction is low-frequency.
_COLOUR_GRID_PX = 64
# Ridge on the slope of match_colour's local planes, relative to their weight (coordinates in sigmas).
_SLOPE_RIDGE = 0.05


class _Scratch(threading.local):
    """Per-thread reusable float32 buffers for full-size temporaries.

    A fresh multi-MB array is paid for in page faults on every call (glibc hands freed memory back to the OS),
    which at 512 px costs more than the arithmetic; reusing a buffer avoids that. Never return these buffers.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self.buffers[name] = np.empty(size, np.float32)
        return buffer[:size].reshape(shape)


_scratch = _Scratch()


def as_unit_mask(mask: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A bool / uint8 / float ``(H, W)`` mask as float32 in [0, 1].

    uint8 masks are read as 0/255 unless their maximum is 1 (then 0/1, as ``cv2.fillPoly(..., 1)`` makes).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or (shape is not None and mask.shape != tuple(shape)):
        expected = f"{tuple(shape)}" if shape is not None else "(H, W)"
        raise InputError(f"mask must be a 2-D {expected} array, got shape {mask.shape}; pass one value per pixel.")
    if mask.dtype == np.bool_:
        return mask.astype(np.float32)
    unit = mask.astype(np.float32)  # a copy, then in place
    if mask.dtype == np.uint8:
        if mask.max(initial=0) > 1:
            unit *= np.float32(1.0 / 255.0)
        return unit
    return np.clip(unit, 0.0, 1.0, out=unit)


def _check_image(image: np.ndarray, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name} must be an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}.")
    if shape is not None and image.shape != shape:
        raise InputError(f"{name} has shape {image.shape} but the other image has {shape}; give same-size images.")
    return image


def feather_mask(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Soft float32 ``(H, W)`` mask in [0, 1] whose ramp lies inside ``mask``: erode by ``radius_px``, then blur.

    The erosion (square, ``2r+1``) and the Gaussian (kernel ``2r+1``, sigma ``r/3``) have the same footprint, so
    the result never exceeds the input mask anywhere: nothing outside the mask leaks in. It is exactly 1 where
    the mask is 1 within ``2r`` px (Chebyshev) and exactly 0 outside the mask. The image border does not erode: a
    mask touching it stays 1 there. ``radius_px == 0`` returns the mask as float.
    """
    soft = as_unit_mask(mask)
    radius = int(round(float(radius_px)))
    if radius < 0:
        raise InputError(f"feather radius must be >= 0 px, got {radius_px}.")
    if radius == 0:
        return soft
    size = 2 * radius + 1
    ramp = cv2.erode(soft, np.ones((size, size), np.uint8))  # outside the image counts as inside the mask
    # Blurring the complement makes "deep inside" exactly 1 (a blur of zeros is 0, a blur of ones only nearly 1);
    # the minimum with the mask makes "outside" exactly 0. In place: fresh full-size arrays cost page faults.
    np.subtract(1.0, ramp, out=ramp)
    cv2.GaussianBlur(ramp, (size, size), radius / 3.0, dst=ramp, borderType=cv2.BORDER_REPLICATE)
    np.subtract(1.0, ramp, out=ramp)
    cv2.min(ramp, soft, dst=ramp)
    return cv2.max(ramp, 0.0, dst=ramp)


def _inside(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask >= 0.5`` (in the units of :func:`as_unit_mask`) as a 0/1 uint8 array, without a float copy."""
    mask = np.asarray(mask)
    if mask.dtype == np.uint8 and mask.shape == shape:
        return (mask >= (128 if mask.max(initial=0) > 1 else 1)).view(np.uint8)
    return (as_unit_mask(mask, shape) >= 0.5).view(np.uint8)


def _band_inside_edge(inside: np.ndarray, band_px: int) -> np.ndarray:
    """uint8 indicator of the pixels of the 0/1 ``inside`` within ``band_px`` of its edge (not the image's)."""
    size = 2 * band_px + 1
    return cv2.subtract(inside, cv2.erode(inside, np.ones((size, size), np.uint8)))


def _local_linear_fill(weights: np.ndarray, weighted_values: np.ndarray, sigma: float) -> np.ndarray:
    """First-order normalised convolution: at each pixel p, the value ``a`` of the Gaussian-weighted (sigma)
    least-squares plane ``d(q) ~ a + g . (q - p)`` through the weighted samples.

    Order 0 (``G*(w d) / G*w``) lets the nearest stretch of band win, so a lighting ramp across a face is
    flattened in its middle; the local plane reproduces ramps exactly. The slope is ridge-regularised (where the
    samples lie on a line it is undetermined), and where ``G*w`` is tiny the value leans towards the global mean.
    Works on ``(h, w)`` weights and ``(h, w, 3)`` weighted values at low resolution.
    """
    height, width = weights.shape

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)

    ys, xs = np.mgrid[:height, :width].astype(np.float32) / np.float32(sigma)  # coordinates in sigmas
    m0, mx, my = blur(weights), blur(weights * xs), blur(weights * ys)
    # Moments about each pixel p: sums of w (q - p) and w (q - p)(q - p)^T over the Gaussian window.
    su, sv = mx - xs * m0, my - ys * m0
    suu = blur(weights * xs * xs) - 2 * xs * mx + xs * xs * m0 + _SLOPE_RIDGE * m0
    svv = blur(weights * ys * ys) - 2 * ys * my + ys * ys * m0 + _SLOPE_RIDGE * m0
    suv = blur(weights * xs * ys) - xs * my - ys * mx + xs * ys * m0
    det = np.maximum(suu * svv - suv * suv, 1e-20)
    qu, qv = (svv * su - suv * sv) / det, (suu * sv - suv * su) / det  # S^-1 s: eliminates the slope
    floor = np.float32(1e-3 * max(float(m0.max()), 1e-12))
    denominator = np.maximum(m0 - (su * qu + sv * qv), 0.0) + floor
    global_mean = weighted_values.reshape(-1, 3).sum(0) / max(float(weights.sum()), 1e-12)
    filled = np.empty_like(weighted_values)
    for channel in range(3):
        values = np.ascontiguousarray(weighted_values[..., channel])
        b0 = blur(values)
        bu, bv = blur(values * xs) - xs * b0, blur(values * ys) - ys * b0
        filled[..., channel] = (b0 - (qu * bu + qv * bv) + floor * global_mean[channel]) / denominator
    return filled


def match_colour(foreground: np.ndarray, background: np.ndarray, mask: np.ndarray, band_px: int = 16,
                 sigma_px: float | None = None, same_surface: np.ndarray | None = None,
                 max_difference: float | None = None) -> np.ndarray:
    """The foreground (RGB uint8) with a smooth colour offset so its edge colours match the background's.

    Why: a rendered face and the photo it is blended into differ by slow lighting / white-balance changes; a
    global offset leaves gradients (one cheek lit, the other not) and full histogram matching flattens detail.
    Here the per-channel difference ``d = background - foreground`` is measured on a band ``band_px`` wide just
    inside the mask's edge (where both images show the same skin) and spread over the image by normalised
    Gaussian convolution (sigma ``sigma_px``, default 15% of the band's larger side), first order: each pixel gets
    the value of the locally weighted plane fit to the band's ``d`` (order 0, ``G*(band d) / G*band``, would flatten
    a lighting ramp in the middle of the face; see :func:`_local_linear_fill`). It is computed on a grid of at most
    64 px and upsampled, and clipped to the range ``d`` takes on the band: a low-frequency offset field added to the
    foreground, so detail is kept. Where foreground == background the result is the foreground, exactly. The mask
    is thresholded at 0.5 (128 for 0/255 uint8 masks). ``same_surface`` (an ``(H, W)`` mask, thresholded alike):
    where the background shows the same surface as the foreground; only there is the band measured (a face turned
    away from its old place has window or hair behind its edge, which is no colour for the skin to take on).
    ``max_difference``: band pixels whose colours differ by more than this in any channel (grey levels) are not
    measured either (hair over the skin: another surface, not another light).
    """
    foreground = _check_image(foreground, "foreground")
    background = _check_image(background, "background", foreground.shape)
    height, width = foreground.shape[:2]
    band_indicator = _band_inside_edge(_inside(mask, (height, width)), max(1, int(band_px)))
    if same_surface is not None:
        band_indicator &= _inside(same_surface, (height, width))
    if max_difference is not None:
        channels = cv2.split(cv2.absdiff(background, foreground))
        largest = cv2.max(cv2.max(channels[0], channels[1]), channels[2])
        band_indicator &= (largest <= max_difference).view(np.uint8)
    if not band_indicator.any():
        return foreground.copy()
    difference = _scratch.get("difference", foreground.shape)
    difference.fill(0.0)  # zero outside the band
    cv2.subtract(background, foreground, dst=difference, mask=band_indicator, dtype=cv2.CV_32F)
    band = _scratch.get("band", (height, width))
    np.copyto(band, band_indicator)
    rows, cols = np.flatnonzero(band.any(axis=1)), np.flatnonzero(band.any(axis=0))
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    sigma = float(sigma_px) if sigma_px is not None else max(float(band_px), 0.15 * extent)
    factor = max(1, math.ceil(max(height, width) / _COLOUR_GRID_PX))
    small_size = (math.ceil(width / factor), math.ceil(height / factor))
    small_band = cv2.resize(band, small_size, interpolation=cv2.INTER_AREA)
    small_difference = cv2.resize(difference, small_size, interpolation=cv2.INTER_AREA)
    offset = _local_linear_fill(small_band, small_difference, sigma / factor)
    sampled = small_difference[small_band > 0.25] / small_band[small_band > 0.25][:, None]
    if sampled.size:  # a plane extrapolates; never beyond what the band measured
        np.clip(offset, sampled.min(0), sampled.max(0), out=offset)
    offset = cv2.resize(offset, (width, height), dst=_scratch.get("offset", foreground.shape),
                        interpolation=cv2.INTER_LINEAR)
    return cv2.add(foreground, offset, dtype=cv2.CV_8U)  # rounds the offset: fg + 0 is fg exactly


def default_levels(height: int, width: int) -> int:
    """Pyramid depth ``round(log2(min side)) - 4`` (5 at 512 px), at least 1."""
    return max(1, int(round(math.log2(max(min(height, width), 2)))) - 4)


def blend_margin(levels: int) -> int:
    """Pixels beyond a mask's support that a ``levels``-deep Laplacian blend can change.

    Each pyrDown / pyrUp has a 5-tap kernel (radius 2 at its level), so level ``k`` reaches ``2 (2^k - 1)`` px
    down and ``2^k`` back up (the upsampling kernel covers one coarse pixel): ``3 (2^L - 1)`` in all (93 px at
    5 levels; measured), plus 2 px for the rounding of odd sizes.
    """
    return 3 * (2**levels - 1) + 2


def _mask_box(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (slice(max(0, rows[0] - margin), min(height, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(width, cols[-1] + 1 + margin)))


def _collapse_blended(difference: np.ndarray, mask: np.ndarray, levels: int) -> np.ndarray:
    """Collapse of ``mask_k * Laplacian_k(difference)`` over a Burt-Adelson pyramid (linear in ``difference``).

    Works in place where it can: at 512 px each full-size float temporary costs as much as the arithmetic.
    """
    gaussians = [difference]
    masks = [cv2.merge([mask, mask, mask], dst=_scratch.get("mask", difference.shape))]
    for _ in range(levels):
        gaussians.append(cv2.pyrDown(gaussians[-1]))
        masks.append(cv2.pyrDown(masks[-1]))
    result = cv2.multiply(gaussians[-1], masks[-1])
    for level in range(levels - 1, -1, -1):
        shape = gaussians[level].shape
        laplacian = cv2.pyrUp(gaussians[level + 1], dst=_scratch.get("band", shape), dstsize=shape[1::-1])
        cv2.subtract(gaussians[level], laplacian, dst=laplacian)
        result = cv2.pyrUp(result, dst=_scratch.get(f"result{level % 2}", shape), dstsize=shape[1::-1])
        cv2.accumulateProduct(laplacian, masks[level], result)
    return result


def laplacian_blend(foreground: np.ndarray, background: np.ndarray, mask: np.ndarray,
                    levels: int | None = None) -> np.ndarray:
    """Multi-band (Burt-Adelson) blend ``foreground * mask + background * (1 - mask)``, RGB uint8 out.

    Each frequency band is blended with the mask blurred to that band's scale, so the seam is wide for the low
    frequencies (lighting) and sharp for the high ones (no ghosting). Because the pyramid is linear, only the
    difference ``foreground - background`` is decomposed: ``out = background + collapse(mask_k * L_k(fg - bg))``.
    ``levels`` defaults to ``round(log2(min side)) - 4``. Any size works (cv2.pyrUp with explicit sizes). Only the
    bounding box of ``mask > 0`` plus the pyramid's reach (:func:`blend_margin`, ``~3 * 2**levels`` px) is
    processed; outside it the output is the background exactly.
    """
    foreground = _check_image(foreground, "foreground")
    background = _check_image(background, "background", foreground.shape)
    height, width = foreground.shape[:2]
    weights = as_unit_mask(mask, (height, width))
    levels = default_levels(height, width) if levels is None else int(levels)
    if levels < 1:
        raise InputError(f"levels must be >= 1, got {levels}.")
    output = background.copy()
    box = _mask_box(weights > 0, blend_margin(levels))
    if box is None:
        return output
    box_levels = min(levels, max(1, int(math.log2(max(2, min(output[box].shape[:2]))))))
    shape = output[box].shape
    difference = cv2.subtract(foreground[box], background[box], dst=_scratch.get("difference", shape),
                              dtype=cv2.CV_32F)
    blended = _collapse_blended(difference, np.ascontiguousarray(weights[box]), box_levels)
    # uint8 + float -> uint8 rounds the float operand: exact, as the background is integer (bg + 0 == bg).
    output[box] = cv2.add(background[box], blended, dtype=cv2.CV_8U)
    return output
