"""Square face crop boxes ``(center_x, center_y, side)`` and the affine maps between frames and crops.

Coordinates: landmarks live in continuous image space, where pixel ``(row i, column j)`` covers
``[j, j+1) x [i, i+1)`` (MediaPipe's normalised coordinates times the frame size). OpenCV's ``warpAffine``
instead puts pixel centres on integers. :func:`crop_matrix` returns the OpenCV form, which is what
``cv2.warpAffine`` needs; :func:`transform_points` applies such a matrix to image-space points with the half-pixel
shift done for you, so a crop and its landmarks always agree and invert exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from magicportrait.errors import InputError
from magicportrait.tracking.smoothing import SmoothingMethod, smooth
from magicportrait.types import Track


def parse_face_box(value: str | tuple[float, ...] | list[float], name: str = "--face-box"
                   ) -> tuple[float, float, float, float]:
    """A user's face box ``"x,y,width,height"`` (pixels of the image; or a sequence of four numbers) as floats.

    Raises:
        InputError: not four numbers, or a width or height that is not positive.
    """
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
    try:
        x, y, width, height = (float(part) for part in parts)
    except (TypeError, ValueError):
        raise InputError(f"{name} takes four numbers x,y,width,height (pixels of the image, e.g. "
                         f"{name} 410,380,190,210), got {value!r}.") from None
    if not (width > 0 and height > 0) or not all(np.isfinite([x, y, width, height])):
        raise InputError(f"{name} {value!r}: the width and height must be positive and all four numbers finite.")
    return x, y, width, height


def landmark_bboxes(landmarks: np.ndarray) -> np.ndarray:
    """Axis-aligned 2D bounding boxes ``(..., 4)`` as (x0, y0, x1, y1) of landmarks ``(..., N, 2 or 3)``."""
    xy = np.asarray(landmarks)[..., :2]
    return np.concatenate([xy.min(axis=-2), xy.max(axis=-2)], axis=-1)


def bbox_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def square_boxes_from_landmarks(landmarks: np.ndarray, scale: float = 2.0, shift_up: float = 0.1) -> np.ndarray:
    """Square crop boxes ``(T, 3)`` = (center_x, center_y, side) around landmarks ``(T, 478, 3)``.

    ``side = scale * max(bbox width, bbox height)``. The centre is the landmark bbox centre moved up by
    ``shift_up`` times the bbox height: the mesh stops at the upper forehead while the head (hair) extends well
    above it, and below the chin there is only the neck, so a slightly higher centre frames the head evenly.
    """
    bboxes = landmark_bboxes(landmarks).astype(np.float64)
    width, height = bboxes[:, 2] - bboxes[:, 0], bboxes[:, 3] - bboxes[:, 1]
    center_x = 0.5 * (bboxes[:, 0] + bboxes[:, 2])
    center_y = 0.5 * (bboxes[:, 1] + bboxes[:, 3]) - shift_up * height
    side = scale * np.maximum(width, height)
    return np.stack([center_x, center_y, side], axis=1).astype(np.float32)


OFFICIAL_CANVAS_PER_FACE_BOX = 512 / (432 - 80) * 1.5
"""The official crop: a square of 1.5 x the detector's face-box width mapped to [80, 432] of the 512 canvas, so the
canvas spans 2.18 face-box widths."""
FACE_BOX_PER_68_BOX, FACE_BOX_RAISE = 1.1, 0.12
"""A face detector's box from the 68-point box, as DECA relates its detector's boxes to its landmarks: side 1.1 x
the 68-point box's mean side, centre 0.12 x that side higher."""


def official_framing_box(landmarks: np.ndarray) -> np.ndarray:
    """The official preprocessing's framing ``(3,)`` = (centre_x, centre_y, side) of one face from its 478 landmarks.

    The official crop is defined on insightface's face box, which we do not run: we estimate that box from the 68
    iBUG points of the track (:mod:`magicportrait.tracking.ibug68`) by DECA's detector-box relation
    (:data:`FACE_BOX_PER_68_BOX`, :data:`FACE_BOX_RAISE`), then take the canvas the official crop gives it."""
    from magicportrait.tracking.ibug68 import ibug68_from_mediapipe

    points = ibug68_from_mediapipe(np.asarray(landmarks, np.float64)[:, :2])
    left, top = points.min(axis=0)
    right, bottom = points.max(axis=0)
    face_side = FACE_BOX_PER_68_BOX * ((right - left) + (bottom - top)) / 2
    centre = np.array([(left + right) / 2, (top + bottom) / 2 - FACE_BOX_RAISE * face_side])
    return np.array([*centre, OFFICIAL_CANVAS_PER_FACE_BOX * face_side], np.float32)


def smooth_boxes(boxes: np.ndarray, fps: float, strength: float, method: SmoothingMethod = "savgol") -> np.ndarray:
    """Smooth per-frame boxes ``(T, 3)`` over time so the crop does not jitter (see :func:`smooth` for strength).

    Centres are smoothed in pixels and sides in log space (zoom is multiplicative, and the side stays positive).
    Every frame keeps its own box: the crop follows the face instead of freezing on the first frame.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape[0] < 2 or fps <= 0:
        return boxes.astype(np.float32)
    centers = smooth(boxes[:, :2], method, strength, fps)
    log_side = smooth(np.log(boxes[:, 2]), method, strength, fps)
    return np.column_stack([centers, np.exp(log_side)]).astype(np.float32)


def crop_matrix(box: np.ndarray, out_size: int) -> np.ndarray:
    """The ``(2, 3)`` matrix for ``cv2.warpAffine(frame, M, (out_size, out_size))`` that crops ``box``.

    The square ``[cx - side/2, cx + side/2] x [cy - side/2, cy + side/2]`` of image space maps onto the whole
    ``out_size x out_size`` crop. The matrix uses OpenCV's pixel-centre convention (see the module docstring).
    """
    center_x, center_y, side = (float(v) for v in box)
    scale = out_size / side
    # image-space map u = scale * (x - c) + out/2, rewritten for pixel-centre coordinates (x_cv = x - 0.5).
    offset_x = scale * (0.5 - center_x) + 0.5 * out_size - 0.5
    offset_y = scale * (0.5 - center_y) + 0.5 * out_size - 0.5
    return np.array([[scale, 0.0, offset_x], [0.0, scale, offset_y]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine matrix (e.g. crop -> frame for :func:`crop_matrix`)."""
    linear_inv = np.linalg.inv(np.asarray(matrix, dtype=np.float64)[:, :2])
    return np.column_stack([linear_inv, -linear_inv @ np.asarray(matrix, dtype=np.float64)[:, 2]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map image-space points ``(..., 2 or 3)`` with an OpenCV-convention affine ``matrix`` (as warpAffine does).

    A third (depth) coordinate is scaled by the matrix's linear scale, so z stays in the same units as x.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    xy = (points[..., :2] - 0.5) @ matrix[:, :2].T + matrix[:, 2] + 0.5
    if points.shape[-1] == 2:
        return xy
    depth_scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    return np.concatenate([xy, points[..., 2:] * depth_scale], axis=-1)


def crop_image(image: np.ndarray, box: np.ndarray, out_size: int,
               interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Crop the square ``box`` of ``image`` resized to ``out_size``; outside the frame is black."""
    matrix = crop_matrix(box, out_size)
    return cv2.warpAffine(image, matrix, (out_size, out_size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT)


def crop_face(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Square crop ``box`` = (cx, cy, side) of ``image`` resized to ``size``; edges replicated outside.

    warpAffine samples without low-pass filtering, so a crop much larger than ``size`` (an 8K portrait) is
    first shrunk with area averaging to avoid aliasing.
    """
    box = np.asarray(box, dtype=np.float64)
    shrink = min(1.0, 2.0 * size / box[2])
    if shrink < 1.0:
        height, width = image.shape[:2]
        small = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        box = np.array([box[0] * small[0] / width, box[1] * small[1] / height, box[2] * small[0] / width])
    return cv2.warpAffine(image, crop_matrix(box, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def crop_track(track: Track, matrices: np.ndarray, size: int) -> Track:
    """Map a Track's landmarks and boxes into a ``size`` square crop: one `(2, 3)` matrix for every frame, or
    `(T, 2, 3)`, one per frame. z scales like x and y; a box's centre moves and its side scales."""
    matrices = np.asarray(matrices, np.float64)
    if matrices.ndim == 2:
        landmarks, boxes = transform_points(track.landmarks, matrices), transform_points(track.boxes, matrices)
    else:
        landmarks = np.stack([transform_points(lm, m) for lm, m in zip(track.landmarks, matrices, strict=True)])
        boxes = np.stack([transform_points(box, m) for box, m in zip(track.boxes, matrices, strict=True)])
    return Track(landmarks=landmarks.astype(np.float32), boxes=boxes.astype(np.float32), detected=track.detected,
                 fps=track.fps, image_size=(size, size), num_faces=track.num_faces, source=track.source)
