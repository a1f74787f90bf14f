"""Person vs background in a still image: MediaPipe's selfie segmentation (its model ships inside the wheel).

The geometric generator runs it once per portrait, so that only the person's head moves with the driving head and
the background behind the hair stays still.
"""

from __future__ import annotations

import logging

import numpy as np

from magicportrait.errors import DependencyError, InputError
from magicportrait.tracking.mediapipe_tracker import MEDIAPIPE_INSTALL

__all__ = ["person_mask"]

logger = logging.getLogger(__name__)
GENERAL_MODEL = 0  # MediaPipe's square 256x256 model: finer hair edges than the landscape one on portrait crops


def person_mask(image: np.ndarray) -> np.ndarray:
    """float32 ``(H, W)`` in [0, 1]: how likely each pixel of the uint8 RGB ``image`` shows a person."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"person_mask needs a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}.")
    try:
        from mediapipe.python.solutions import selfie_segmentation
    except ImportError as exc:
        raise DependencyError(f"Person segmentation needs MediaPipe, which could not be imported ({exc}). "
                              f"Install it with: {MEDIAPIPE_INSTALL}") from exc
    from magicportrait.console import native_stderr_captured

    with native_stderr_captured():  # the graph's start-up log lines (shown with -v)
        with selfie_segmentation.SelfieSegmentation(model_selection=GENERAL_MODEL) as segmenter:
            result = segmenter.process(np.ascontiguousarray(image))
    mask = result.segmentation_mask
    if mask is None:
        return np.zeros(image.shape[:2], np.float32)
    return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
