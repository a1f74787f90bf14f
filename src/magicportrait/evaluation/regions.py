"""The face region of each frame, from its tracked landmarks: where flicker and temporal artefacts are measured.

A static background dilutes a whole-frame mean (a face a fifteenth of the frame shows a fifteenth of its flicker), so
the stability metrics look only at the face: the box of the 478 landmarks, grown a little to take in the hairline
and the jaw's edge.
"""

from __future__ import annotations

import numpy as np

FACE_BOX_GROWTH = 1.2  # box side / landmark box side


def face_boxes(landmarks: np.ndarray, image_size: tuple[int, int], growth: float = FACE_BOX_GROWTH) -> np.ndarray:
    """`(T, 4)` int (x0, y0, x1, y1) pixel boxes (end exclusive, at least 1 px, inside the image) around each
    frame's `(T, N, 2+)` landmarks, grown by ``growth`` about their centre."""
    points = np.asarray(landmarks, np.float64)[..., :2]
    low, high = points.min(axis=1), points.max(axis=1)
    centre, half = (low + high) / 2, (high - low) * growth / 2
    height, width = image_size
    limit = np.array([width, height], np.float64)
    start = np.clip(np.floor(centre - half), 0, limit - 1)
    end = np.clip(np.ceil(centre + half), start + 1, limit)
    return np.concatenate([start, end], axis=1).astype(np.int64)


def luminance(frames: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB frames, float64 grey levels."""
    return np.asarray(frames)[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def box_mean(image: np.ndarray, box: np.ndarray) -> float:
    x0, y0, x1, y1 = (int(v) for v in box)
    return float(image[y0:y1, x0:x1].mean())
