"""Motion accuracy and temporal stability, measured with our own tracker and head model.

Both videos (generated and driving, or generated and ground truth) are tracked (MediaPipe face mesh) and fitted with
the same head model: FLAME when a FLAME file is configured, else the open face geometry; or, with ``--tracker smirk``
(the paper's protocol), encoded by SMIRK, whose global rotation and expression parameters are compared (with
``deca-smirk``: DECA's rotation, SMIRK's expression). Then per frame:

- **pose** (APD, P-RMSE): the head rotation as (yaw, pitch, roll) in degrees; APD is the mean absolute difference
  over frames and the three angles, P-RMSE the root mean square. ``pose="relative"`` compares each video's rotation
  relative to its own first frame instead (use it when the generator keeps the portrait's own pose, as the relative
  pose mode does; the paper compares absolute poses);
- **expression** (AED, E-RMSE): FLAME's expression coefficients psi, or, with the open geometry, the pose-free shape
  of each frame minus the video's own neutral shape (478 x 3 offsets in cm, so identities can differ); AED is the
  mean absolute difference over frames and parameters, E-RMSE the root mean square;
- **LMD**: the mean distance between corresponding 2D landmarks (pixels of the first video), for self-reenactment;
- **jitter**: the mean magnitude of the landmarks' second temporal difference (pixels/frame^2) of one video, after
  removing the face's mean motion (so a moving head is not jitter);
- **flicker**: the mean absolute change of the face region's mean luminance from the previous frame (grey levels);
  the region is the landmarks' box grown by 20% (:mod:`.regions`), so a static background does not dilute it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_euler_degrees
from magicportrait.types import FlameCodes, HeadTrack, Track

__all__ = ["MotionComparison", "compare_heads", "flicker", "head_from_codes", "landmark_distance", "landmark_jitter",
           "pose_degrees"]
_FLAME_TO_MODEL = np.array([1.0, -1.0, -1.0], np.float32)  # an axis-angle in FLAME's frame -> the model frame


@dataclass
class MotionComparison:
    """Per-frame pose and expression errors of a generated head track against a reference one."""

    pose_error: np.ndarray  # (T, 3) absolute yaw, pitch, roll differences, degrees
    expression_error: np.ndarray  # (T, E) absolute expression parameter differences
    head_model: str

    @property
    def apd(self) -> float:
        return float(self.pose_error.mean())

    @property
    def p_rmse(self) -> float:
        return float(np.sqrt((self.pose_error**2).mean()))

    @property
    def aed(self) -> float:
        """NaN when the head model has no expression parameters (e.g. a FLAME file without an expression basis)."""
        return float(self.expression_error.mean()) if self.expression_error.size else float("nan")

    @property
    def e_rmse(self) -> float:
        return float(np.sqrt((self.expression_error**2).mean())) if self.expression_error.size else float("nan")


def pose_degrees(head: HeadTrack, relative: bool = False) -> np.ndarray:
    """`(T, 3)` head rotation as (yaw, pitch, roll) degrees; ``relative``: relative to the first frame."""
    rotation = axis_angle_to_matrix(np.asarray(head.rotation, np.float64))
    if relative:
        rotation = rotation @ np.swapaxes(rotation[:1], -1, -2)
    return matrix_to_euler_degrees(rotation)


def head_from_codes(codes: FlameCodes, fps: float = 0.0) -> HeadTrack:
    """The pose and expression of encoder codes (SMIRK's or DECA's) as a head track for :func:`compare_heads`:
    the global rotation in the model frame (as our fits give it), the expression coefficients as they are."""
    count = codes.num_frames
    return HeadTrack(model=codes.source or "codes", identity=np.zeros(0, np.float32), expression=codes.expression,
                     rotation=codes.global_pose * _FLAME_TO_MODEL, scale=np.ones(count, np.float32),
                     translation=np.zeros((count, 3), np.float32), image_size=codes.image_size, fps=fps)


def compare_heads(generated: HeadTrack, reference: HeadTrack, pose: str = "absolute") -> MotionComparison:
    """Pose and expression errors frame by frame (the shorter track's length is used)."""
    if pose not in ("absolute", "relative"):
        raise ValueError(f"pose must be 'absolute' or 'relative', got {pose!r}.")
    if generated.model != reference.model:
        raise ValueError(f"Both tracks must come from the same head model, got {generated.model} and "
                         f"{reference.model}.")
    count = min(generated.num_frames, reference.num_frames)
    relative = pose == "relative"
    pose_error = np.abs(_wrap_degrees(pose_degrees(generated, relative)[:count]
                                      - pose_degrees(reference, relative)[:count]))
    expression_error = np.abs(np.asarray(generated.expression[:count], np.float64)
                              - np.asarray(reference.expression[:count], np.float64))
    return MotionComparison(pose_error=pose_error, expression_error=expression_error, head_model=generated.model)


def _wrap_degrees(angles: np.ndarray) -> np.ndarray:
    return (angles + 180.0) % 360.0 - 180.0


def landmark_distance(generated: Track, reference: Track) -> np.ndarray:
    """`(T,)` mean 2D distance (pixels) between corresponding landmarks; ``reference`` is scaled to the generated
    video's frame size if it differs."""
    count = min(generated.num_frames, reference.num_frames)
    scale = np.array(generated.image_size[::-1], np.float64) / np.array(reference.image_size[::-1], np.float64)
    difference = generated.landmarks[:count, :, :2] - reference.landmarks[:count, :, :2] * scale
    return np.linalg.norm(difference, axis=-1).mean(axis=1)


def landmark_jitter(track: Track) -> np.ndarray:
    """`(T,)` per-frame jitter: mean |second temporal difference| of the landmarks after removing the mean motion
    (pixels/frame^2); the first and last frames get 0 (no second difference there)."""
    points = track.landmarks[:, :, :2].astype(np.float64)
    points = points - points.mean(axis=1, keepdims=True)  # the face's translation is motion, not jitter
    jitter = np.zeros(track.num_frames)
    if track.num_frames >= 3:
        acceleration = points[2:] - 2 * points[1:-1] + points[:-2]
        jitter[1:-1] = np.linalg.norm(acceleration, axis=-1).mean(axis=1)
    return jitter


def flicker(frames: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """`(T,)` absolute change of the mean luminance (Rec. 601, grey levels) from the previous frame; 0 first.

    ``boxes``: `(T, 4)` (x0, y0, x1, y1) face regions (see :func:`~magicportrait.evaluation.regions.face_boxes`):
    frame t and t-1 are both measured inside frame t's box, so the face moving over the background is not flicker.
    """
    from magicportrait.evaluation.regions import box_mean, luminance

    frames = np.asarray(frames)
    change = np.zeros(len(frames))
    if boxes is None:
        means = luminance(frames).mean(axis=(1, 2))
        change[1:] = np.abs(np.diff(means))
        return change
    for index in range(1, len(frames)):
        box = boxes[index]
        change[index] = abs(box_mean(luminance(frames[index]), box) - box_mean(luminance(frames[index - 1]), box))
    return change
