"""Which face is *the* face: prominence of a face among several, keeping one person's identity through a video,
and filling the frames where that face was missing."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from magicportrait.errors import InputError
from magicportrait.tracking.boxes import bbox_iou
from magicportrait.tracking.detection import center_distance

MATCH_MIN_IOU = 0.3  # a face continues the track if it overlaps the last tracked face this much...
MATCH_MAX_CENTER_DIST = 0.5  # ...or its centre is within this many face sizes of it
DETECTION_MAX_CENTER_DIST = 0.75  # detector boxes are tighter than landmark boxes: allow a little more


def face_score(bbox: np.ndarray, image_size: tuple[int, int]) -> float:
    """Prominence of a face: bbox area weighted by centrality, ``area * (1 - 0.5 * d**2)``.

    ``d`` is the distance from the bbox centre to the frame centre divided by half the frame diagonal (0 at the
    centre, 1 in a corner), so a face in a corner counts half as much as the same face in the middle; size still
    dominates (a face 1.5x wider wins from anywhere).
    """
    height, width = image_size
    area = max(0.0, float(bbox[2] - bbox[0])) * max(0.0, float(bbox[3] - bbox[1]))
    offset = np.array([bbox[0] + bbox[2] - width, bbox[1] + bbox[3] - height]) / 2.0
    dist = float(np.linalg.norm(offset)) / (0.5 * math.hypot(width, height))
    return area * (1.0 - 0.5 * min(dist, 1.0) ** 2)


def bbox_size(bbox: np.ndarray) -> float:
    """Longer side of an (x0, y0, x1, y1) box."""
    return max(float(bbox[2] - bbox[0]), float(bbox[3] - bbox[1]))


class FaceSelector:
    """Decides which face is *the* face in each frame and keeps that identity over time.

    * Size: faces smaller than ``min_size`` pixels are ignored (the largest one is remembered for error messages).
    * Lock: while no face is tracked, the face with the highest :func:`face_score` is taken.
    * Identity: once locked, a face continues the track only if it matches the last tracked face (IoU >= 0.3,
      or centre within 0.5 face sizes); among matches the best overlap wins. Size plays no part, so another
      person growing larger (walking closer) cannot steal the track.
    * Gaps: a frame where no face matches is missing, even if other faces are visible: the tracker never jumps
      to a distant person. After ``relock_after`` consecutive missing frames the lock is released and the most
      prominent face is taken again (a scene cut, or the person left for good).
    """

    def __init__(self, image_size: tuple[int, int], relock_after: int, min_size: float = 0.0) -> None:
        self.image_size = image_size
        self.relock_after = max(1, relock_after)
        self.min_size = min_size
        self.largest_too_small = 0.0
        self.last_bbox: np.ndarray | None = None
        self.frames_missing = 0

    @property
    def locked(self) -> bool:
        return self.last_bbox is not None and self.frames_missing < self.relock_after

    def pick(self, bboxes: Sequence[np.ndarray]) -> int | None:
        """Index of the tracked face among landmark ``bboxes`` (x0, y0, x1, y1), or None if it is not there."""
        usable = self._usable(bboxes)
        if not usable:
            return None
        if not self.locked:
            return max(usable, key=lambda i: face_score(bboxes[i], self.image_size))
        matching = [i for i in usable if self._matches(bboxes[i])]
        if not matching:
            return None
        return max(matching, key=lambda i: (bbox_iou(self.last_bbox, bboxes[i]),
                                            -center_distance(self.last_bbox, bboxes[i])))

    def rank_detections(self, bboxes: Sequence[np.ndarray]) -> list[int]:
        """Indices of detector boxes that may be the tracked face, most likely first."""
        if not self.locked:
            return sorted(range(len(bboxes)), key=lambda i: -face_score(bboxes[i], self.image_size))
        near = [i for i, b in enumerate(bboxes) if center_distance(self.last_bbox, b) <= DETECTION_MAX_CENTER_DIST]
        return sorted(near, key=lambda i: center_distance(self.last_bbox, bboxes[i]))

    def update(self, bbox: np.ndarray | None) -> None:
        """Record the tracked face's bbox in this frame (None: missing)."""
        if bbox is None:
            self.frames_missing += 1
        else:
            self.last_bbox, self.frames_missing = bbox, 0

    def _usable(self, bboxes: Sequence[np.ndarray]) -> list[int]:
        sizes = [bbox_size(b) for b in bboxes]
        too_small = [s for s in sizes if s < self.min_size]
        self.largest_too_small = max([self.largest_too_small, *too_small])
        return [i for i, size in enumerate(sizes) if size >= self.min_size]

    def _matches(self, bbox: np.ndarray) -> bool:
        return (bbox_iou(self.last_bbox, bbox) >= MATCH_MIN_IOU
                or center_distance(self.last_bbox, bbox) <= MATCH_MAX_CENTER_DIST)


# ----------------------------------------------------------------------------------------- missing frames


def interpolate_missing(values: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Fill frames where ``detected`` is False by linear interpolation between the nearest detected frames.

    ``values``: ``(T, ...)``; before the first / after the last detected frame the nearest value is held.
    Detected frames are returned unchanged. Needs at least one detected frame.
    """
    detected = np.asarray(detected, dtype=bool)
    num_frames = len(detected)
    index = np.arange(num_frames)
    prev = np.maximum.accumulate(np.where(detected, index, -1))
    nxt = np.minimum.accumulate(np.where(detected, index, num_frames)[::-1])[::-1]
    prev = np.where(prev < 0, nxt, prev)  # leading gap: hold the first detection
    nxt = np.where(nxt >= num_frames, prev, nxt)  # trailing gap: hold the last detection
    span = np.maximum(nxt - prev, 1)
    weight = ((index - prev) / span).reshape(-1, *([1] * (values.ndim - 1)))
    filled = values[prev].astype(np.float64) * (1.0 - weight) + values[nxt].astype(np.float64) * weight
    return filled.astype(values.dtype)


def frame_ranges(indices: Iterable[int]) -> str:
    """Compact text of sorted frame indices, e.g. ``"4-7, 12, 20-25"``."""
    ranges: list[list[int]] = []
    for i in indices:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def check_face_index(face_index: int | None, source: str) -> None:
    if face_index is not None and face_index < 0:
        raise InputError(f"{source or 'Image'}: face number {face_index} is negative; faces are numbered 0, 1, 2, "
                         f"... from the left.")


def check_face_box(box: tuple[float, float, float, float], image_size: tuple[int, int], source: str) -> None:
    x, y, width, height = box
    if x >= image_size[1] or y >= image_size[0] or x + width <= 0 or y + height <= 0:
        raise InputError(f"--face-box {x:g},{y:g},{width:g},{height:g} lies outside {source or 'the image'} "
                         f"({image_size[1]}x{image_size[0]} px); give x,y,width,height in its pixels.")


def face_out_of_range_message(face_index: int, num_faces: int, source: str) -> str:
    faces = "1 face" if num_faces == 1 else f"{num_faces} faces"
    return (f"No face number {face_index} in {source or 'the image'}: found {faces} (numbered 0..{num_faces - 1} "
            f"from left to right). Choose a number in that range.")


# ------------------------------------------------------------------------------------------------ tracker
