"""Pasting results made on a square face crop back into the full-size frame.

Only the frame's region under the crop (its ROI) is touched. In mode ``"changed"`` only the pixels the crop
result actually changed are replaced (feathered), so everything else keeps the frame's full-resolution detail and
an unchanged crop puts the frame back bit for bit; in mode ``"full"`` the whole crop is pasted with a soft border.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from magicportrait.errors import InputError

__all__ = ["PasteBack"]

PasteMode = Literal["changed", "full"]


def _raised_cosine_border(size: int, border_px: float) -> np.ndarray:
    """``(size, size)`` float32 mask: 1 inside, a raised cosine to 0 over ``border_px`` at each edge."""
    centres = np.arange(size) + 0.5  # continuous coordinates of the pixel centres
    distance = np.minimum(centres, size - centres)
    if border_px <= 0:
        ramp = np.ones(size)
    else:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip(distance / border_px, 0.0, 1.0))
    return np.outer(ramp, ramp).astype(np.float32)


class PasteBack:
    """Pastes ``(crop_size, crop_size, 3)`` crop results back into ``(H, W, 3)`` frames through ``crop_matrix``.

    ``crop_matrix`` is the frame -> crop ``(2, 3)`` matrix of ``magicportrait.tracking.boxes.crop_matrix`` (OpenCV
    convention). Everything that does not change from frame to frame is computed once: the frame ROI covered by
    the crop (clipped to the frame), the crop -> ROI warp, and the border mask (a raised cosine over the outer
    ``border`` fraction of the crop side) already warped into the ROI.

    Mode ``"changed"`` (needs the unmodified crop as ``crop_reference``): the paste weight is a change mask, the
    per-pixel max-over-channels ``|result - reference|`` mapped linearly from ``change_threshold[0]`` (0) to
    ``change_threshold[1]`` (1), dilated by ``feather_px`` and Gaussian-feathered over the same footprint, times
    the border mask. Where nothing changed the weight is exactly 0 and the frame is returned bit for bit.
    Mode ``"full"``: the weight is the border mask alone.
    """

    def __init__(self, frame_size: tuple[int, int], crop_matrix: np.ndarray, crop_size: int, *, border: float = 0.06,
                 mode: PasteMode = "changed", change_threshold: tuple[float, float] = (2.0, 8.0),
                 feather_px: float = 4.0) -> None:
        self.frame_size = _check_frame_size(frame_size)
        self.crop_size = int(crop_size)
        if self.crop_size < 1:
            raise InputError(f"crop_size must be a positive number of pixels, got {crop_size}.")
        if mode not in ("changed", "full"):
            raise InputError(f"paste-back mode must be 'changed' or 'full', got {mode!r}.")
        low, high = (float(v) for v in change_threshold)
        if not 0 <= low < high:
            raise InputError(f"change_threshold must be (low, high) with 0 <= low < high, got {change_threshold}.")
        if not 0 <= border <= 0.5 or feather_px < 0:
            raise InputError(f"border must be in [0, 0.5] and feather_px >= 0, got {border} and {feather_px}.")
        self.mode: PasteMode = mode
        self.change_threshold = (low, high)
        self.feather_px = int(round(feather_px))
        self.crop_matrix = _check_matrix(crop_matrix)
        self.roi = self._frame_roi()
        self._roi_matrix = self._crop_to_roi_matrix()
        self._border_crop = _raised_cosine_border(self.crop_size, border * self.crop_size)
        self._border_roi = self._warp_to_roi(self._border_crop)
        self._border_roi_complement = None if self._border_roi is None else 1.0 - self._border_roi
        levels = np.arange(256, dtype=np.float32)
        self._change_lut = np.clip((levels - low) / (high - low), 0.0, 1.0).astype(np.float32).reshape(1, 256)
        self._buffers = self._work_buffers()

    def _work_buffers(self) -> dict[str, np.ndarray]:
        """Per-frame temporaries, allocated once: fresh multi-MB arrays per call cost page faults that at 1080p
        outweigh the arithmetic. (So one PasteBack must not paste from two threads at once.)"""
        crop_shape = (self.crop_size, self.crop_size)
        buffers = {"spread": np.empty(crop_shape, np.float32), "feathered": np.empty(crop_shape, np.float32)}
        if self.roi is not None:
            roi_shape = (self.roi[0].stop - self.roi[0].start, self.roi[1].stop - self.roi[1].start)
            buffers.update(weight=np.empty(roi_shape, np.float32), complement=np.empty(roi_shape, np.float32),
                           warped=np.empty((*roi_shape, 3), np.uint8), blended=np.empty((*roi_shape, 3), np.uint8))
        return buffers

    def _frame_roi(self) -> tuple[slice, slice] | None:
        """Frame rows and columns under the crop (one pixel of slack for the bilinear taps), or None if none."""
        matrix = self.crop_matrix
        inverse = np.linalg.inv(matrix[:, :2])
        corners = np.array([[0, 0], [self.crop_size, 0], [0, self.crop_size], [self.crop_size, self.crop_size]])
        # continuous crop corners -> continuous frame points (OpenCV centres are at +0.5)
        frame_points = (corners - 0.5 - matrix[:, 2]) @ inverse.T + 0.5
        height, width = self.frame_size
        x0 = max(0, math.floor(frame_points[:, 0].min()) - 1)
        y0 = max(0, math.floor(frame_points[:, 1].min()) - 1)
        x1 = min(width, math.ceil(frame_points[:, 0].max()) + 1)
        y1 = min(height, math.ceil(frame_points[:, 1].max()) + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        return slice(y0, y1), slice(x0, x1)

    def _crop_to_roi_matrix(self) -> np.ndarray | None:
        """ROI pixel -> crop pixel matrix (for ``WARP_INVERSE_MAP``): the crop matrix shifted to the ROI origin."""
        if self.roi is None:
            return None
        origin = np.array([self.roi[1].start, self.roi[0].start], dtype=np.float64)
        matrix = self.crop_matrix.copy()
        matrix[:, 2] += matrix[:, :2] @ origin
        return matrix

    def _warp_to_roi(self, crop_image: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray | None:
        if self.roi is None:
            return None
        size = (self.roi[1].stop - self.roi[1].start, self.roi[0].stop - self.roi[0].start)
        return cv2.warpAffine(crop_image, self._roi_matrix, size, dst=dst,
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)

    def change_mask(self, crop_result: np.ndarray, crop_reference: np.ndarray) -> np.ndarray | None:
        """Crop-space float32 paste weight of mode "changed" (before the border mask); None where nothing changed.

        Where the change is below ``change_threshold[0]`` on a whole ``2 feather_px + 1`` neighbourhood the weight
        is exactly 0. The array returned is a work buffer, overwritten by the next call.
        """
        difference = cv2.absdiff(crop_result, crop_reference).reshape(self.crop_size, 3 * self.crop_size)
        # Max over channels: a 1x3 dilation of the interleaved rows puts max(R, G, B) on each G column (fast).
        largest = np.ascontiguousarray(cv2.dilate(difference, np.ones((1, 3), np.uint8))[:, 1::3])
        if int(largest.max()) <= self.change_threshold[0]:
            return None
        weight = cv2.LUT(largest, self._change_lut, dst=self._buffers["feathered"])  # uint8 -> float32 weight
        if self.feather_px > 0:
            size = 2 * self.feather_px + 1
            # The Gaussian's footprint equals the dilation's, so changed pixels keep their full weight.
            spread = cv2.dilate(weight, np.ones((size, size), np.uint8), dst=self._buffers["spread"])
            weight = cv2.GaussianBlur(spread, (size, size), self.feather_px / 2.0, dst=self._buffers["feathered"])
        return weight

    def paste(self, frame: np.ndarray, crop_result: np.ndarray, crop_reference: np.ndarray | None = None, *,
              out: np.ndarray | None = None) -> np.ndarray:
        """A new uint8 frame with ``crop_result`` pasted in: ``frame (1 - m) + warped m``, rounded.

        ``out`` (optional, a frame-shaped uint8 array, may be ``frame`` itself) receives the result instead of a
        new array: with ``out=frame`` only the ROI is written, and no 1080p frame is allocated per call.
        """
        frame = self._check_frame(frame)
        crop_result = self._check_crop(crop_result, "crop_result")
        output = self._output(frame, out)
        if self.roi is None:
            return output
        if self.mode == "full":
            weight, complement = self._border_roi, self._border_roi_complement
        else:
            if crop_reference is None:
                raise InputError("paste-back mode 'changed' needs crop_reference (the unmodified source crop); "
                                 "pass it, or use mode='full'.")
            crop_reference = self._check_crop(crop_reference, "crop_reference")
            change = self.change_mask(crop_result, crop_reference)
            if change is None:
                return output
            change = cv2.multiply(change, self._border_crop, dst=change)
            weight = self._warp_to_roi(change, dst=self._buffers["weight"])
            complement = np.subtract(1.0, weight, out=self._buffers["complement"])
        warped = self._warp_to_roi(crop_result, dst=self._buffers["warped"])
        # One uint8 pass: (overlay w + base (1 - w)) / 1, rounded; exactly the base where w == 0.
        output[self.roi] = cv2.blendLinear(warped, frame[self.roi], weight, complement, dst=self._buffers["blended"])
        return output

    def _output(self, frame: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            return frame.copy()
        if out.dtype != np.uint8 or out.shape != frame.shape:
            raise InputError(f"out must be a uint8 {frame.shape} array like the frame, got {out.dtype} {out.shape}.")
        if out is not frame:
            np.copyto(out, frame)
        return out

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        expected = (*self.frame_size, 3)
        if frame.dtype != np.uint8 or frame.shape != expected:
            raise InputError(f"frame must be a uint8 {expected} RGB image (the size this PasteBack was made for), "
                             f"got {frame.dtype} {frame.shape}.")
        return frame

    def _check_crop(self, crop: np.ndarray, name: str) -> np.ndarray:
        crop = np.asarray(crop)
        expected = (self.crop_size, self.crop_size, 3)
        if crop.dtype != np.uint8 or crop.shape != expected:
            raise InputError(f"{name} must be a uint8 {expected} RGB crop, got {crop.dtype} {crop.shape}.")
        return crop


def _check_frame_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in frame_size)
    except (TypeError, ValueError) as error:
        raise InputError(f"frame_size must be (height, width), got {frame_size!r}.") from error
    if height < 1 or width < 1:
        raise InputError(f"frame_size must be positive (height, width), got {frame_size!r}.")
    return height, width


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:, :2])) < 1e-12:
        raise InputError(f"crop_matrix must be a finite invertible (2, 3) affine matrix (frame -> crop, as "
                         f"tracking.boxes.crop_matrix returns), got shape {matrix.shape}.")
    return matrix
