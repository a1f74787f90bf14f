"""PSNR and SSIM between generated frames and the ground truth (self-reenactment), in the standard definitions.

- PSNR: ``10 log10(data_range**2 / MSE)`` with the MSE over all pixels and channels (or the pixels of a mask, e.g.
  the face), in float64; identical images give ``inf``.
- SSIM: Wang et al. 2004 on each RGB channel, averaged over channels: an 11x11 Gaussian window (sigma 1.5),
  K1 = 0.01, K2 = 0.03, population (not sample) statistics, and the mean over the window positions that lie
  fully inside the image. This is exactly ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255)``, computed with OpenCV's separable
  filter (about 5x faster, same float64 result to ~1e-14).

Frames are uint8 RGB ``(T, H, W, 3)`` (or a list of ``(H, W, 3)``) and are compared at their own size.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from magicportrait.errors import InputError

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # skimage's int(3.5 * sigma + 0.5): an 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of two equally shaped images (or whole videos, pooled MSE); ``inf`` when they are identical.

    ``mask`` (boolean, the image's spatial shape, e.g. ``(H, W)`` or ``(T, H, W)``) restricts the MSE to the
    pixels where it is true (all channels of those pixels).
    """
    a, b = _same_shape(a, b)
    squared_sum, count = _squared_error(a, b, mask)
    if count == 0:
        raise InputError("The PSNR mask selects no pixel.")
    return _psnr_from_mse(squared_sum / count, data_range)


def psnr_frames(frames_a, frames_b, data_range: float = 255, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-frame PSNR ``(T,)`` in dB. ``mask``: ``(H, W)`` for all frames or ``(T, H, W)``; an empty mask -> NaN."""
    frames_a, frames_b = _frame_pairs(frames_a, frames_b)
    masks = _frame_masks(mask, len(frames_a))
    values = np.empty(len(frames_a))
    for index, (a, b, frame_mask) in enumerate(zip(frames_a, frames_b, masks, strict=True)):
        squared_sum, count = _squared_error(a, b, frame_mask)
        values[index] = _psnr_from_mse(squared_sum / count, data_range) if count else np.nan
    return values


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> float:
    """Mean SSIM of two ``(H, W, C)`` images (per channel, then averaged); 1.0 for identical images."""
    a, b = _same_shape(a, b)
    if a.ndim != 3:
        raise InputError(f"SSIM expects (H, W, C) images, got shape {a.shape}.")
    if min(a.shape[:2]) < 2 * SSIM_RADIUS + 1:
        raise InputError(f"SSIM needs images of at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1} pixels "
                         f"(its Gaussian window), got {a.shape[1]}x{a.shape[0]}.")
    return _ssim_map(a.astype(np.float64), b.astype(np.float64), data_range).mean()


def ssim_frames(frames_a, frames_b, data_range: float = 255) -> np.ndarray:
    """Per-frame SSIM ``(T,)`` (see :func:`ssim`); frames run on a thread per core (OpenCV and numpy free the GIL)."""
    frames_a, frames_b = _frame_pairs(frames_a, frames_b)
    with ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, len(frames_a)))) as pool:
        values = list(pool.map(ssim, frames_a, frames_b, [data_range] * len(frames_a)))
    return np.array(values, dtype=np.float64)


def _ssim_map(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """The SSIM index at every window position fully inside the image, ``(H - 10, W - 10, C)``."""
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1)
    kernel = np.exp(-(offsets ** 2) / (2 * SSIM_SIGMA ** 2))
    kernel /= kernel.sum()

    def local_mean(image: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)

    mean_a, mean_b = local_mean(a), local_mean(b)
    mean_aa, mean_bb, mean_ab = mean_a * mean_a, mean_b * mean_b, mean_a * mean_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    # In place where possible: the temporaries of 512x512x3 float64 maps otherwise dominate the run time.
    numerator = local_mean(a * b)
    numerator -= mean_ab
    numerator *= 2
    numerator += c2
    mean_ab *= 2
    mean_ab += c1
    numerator *= mean_ab
    denominator = local_mean(a * a)
    denominator += local_mean(b * b)
    denominator -= mean_aa
    denominator -= mean_bb
    denominator += c2
    mean_aa += mean_bb
    mean_aa += c1
    denominator *= mean_aa
    numerator /= denominator
    return numerator[SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]


def _psnr_from_mse(mse: float, data_range: float) -> float:
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range ** 2 / mse))


def _squared_error(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> tuple[float, int]:
    """Sum of squared differences (float64) and the number of values summed, within ``mask`` if given."""
    difference = a.astype(np.float64) - b.astype(np.float64)
    if mask is None:
        return float(np.square(difference).sum()), difference.size
    mask = np.asarray(mask).astype(bool)
    spatial = a.shape[:mask.ndim]
    if mask.shape != spatial:
        raise InputError(f"The mask has shape {mask.shape}; it must match the images' spatial shape {spatial}.")
    selected = difference[mask]
    return float(np.square(selected).sum()), selected.size


def _same_shape(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"Images must have the same shape to be compared, got {a.shape} and {b.shape}. "
                         "Resize one of them first.")
    return a, b


def _frame_pairs(frames_a, frames_b) -> tuple[list[np.ndarray], list[np.ndarray]]:
    frames_a, frames_b = _frame_list(frames_a, "frames_a"), _frame_list(frames_b, "frames_b")
    if len(frames_a) != len(frames_b):
        raise InputError(f"Frames are compared pairwise: got {len(frames_a)} and {len(frames_b)} frames.")
    return frames_a, frames_b


def _frame_list(frames, name: str) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise InputError(f"{name} must be frames (T, H, W, 3), got shape {frames.shape}.")
    return [np.asarray(frame) for frame in frames]


def _frame_masks(mask: np.ndarray | None, count: int) -> list[np.ndarray | None]:
    if mask is None:
        return [None] * count
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return [mask] * count
    if mask.ndim == 3 and len(mask) == count:
        return list(mask)
    raise InputError(f"The mask must be (H, W) or ({count}, H, W), got shape {mask.shape}.")
