"""Face tracking stage: frames -> :class:`magicportrait.types.Track` (478 MediaPipe landmarks per frame).

MediaPipe is imported only when a :class:`FaceTracker` is created, so the smoothing and box helpers work without it.
"""

from magicportrait.tracking.boxes import (
    bbox_iou,
    crop_face,
    crop_image,
    crop_matrix,
    crop_track,
    invert_affine,
    landmark_bboxes,
    smooth_boxes,
    square_boxes_from_landmarks,
    transform_points,
)
from magicportrait.tracking.mediapipe_tracker import FaceTracker, TrackerConfig
from magicportrait.tracking.selection import FaceSelector, face_score, interpolate_missing
from magicportrait.tracking.smoothing import (
    continuous_quaternions,
    one_euro_filter,
    savgol_smooth,
    smooth,
    smooth_rotations,
)

__all__ = [
    "FaceSelector",
    "FaceTracker",
    "TrackerConfig",
    "bbox_iou",
    "continuous_quaternions",
    "crop_face",
    "crop_image",
    "crop_matrix",
    "crop_track",
    "face_score",
    "interpolate_missing",
    "invert_affine",
    "landmark_bboxes",
    "one_euro_filter",
    "savgol_smooth",
    "smooth",
    "smooth_boxes",
    "smooth_rotations",
    "square_boxes_from_landmarks",
    "transform_points",
]
