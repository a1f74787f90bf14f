"""Contact sheets: pictures letterboxed into labelled square tiles, tiles into rows, rows into one image."""

from __future__ import annotations

import cv2
import numpy as np

TILE = 192
BACKGROUND = 40  # grey between blocks


def tile(image: np.ndarray, size: int = TILE, flagged: bool = False, label: str = "") -> np.ndarray:
    """``image`` letterboxed into a ``size`` square (RGB), with a red frame when flagged and a label."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size, size, 3), np.uint8)
    top, left = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    if flagged:
        cv2.rectangle(canvas, (1, 1), (size - 2, size - 2), (255, 0, 0), 4)
    if label:
        cv2.putText(canvas, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return canvas


def caption(text: str, width: int, height: int = 24) -> np.ndarray:
    """A dark strip ``width`` wide with ``text`` on it (a row's title)."""
    strip = np.full((height, width, 3), 20, np.uint8)
    cv2.putText(strip, text, (6, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1, cv2.LINE_AA)
    return strip


def stack_blocks(blocks: list[np.ndarray], gap: int = 8) -> np.ndarray:
    """Blocks one under the other, left-aligned, padded to the widest, ``gap`` grey pixels apart."""
    width = max(block.shape[1] for block in blocks)
    padded = [np.pad(block, ((0, gap), (0, width - block.shape[1]), (0, 0)), constant_values=BACKGROUND)
              for block in blocks]
    return np.vstack(padded)
