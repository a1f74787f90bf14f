"""Structured face alignment: the source's identity performing the driving video's motion.

Per driving frame, the aligned head has
- the identity shape of the source;
- the expression of the driving frame, optionally scaled: *absolute* (default, the official behaviour: the
  driving parameters as they are) or *relative* (the source's own expression plus the driving expression's
  change since the reference frame; also applied to the jaw, so a source that smiles keeps smiling);
- the driving frame's joint rotations (FLAME's neck, jaw and eyes);
- a pose that is either *relative* (the default with our own tracker: the driving head's rotation, scale change
  and translation since its reference frame, applied on top of the source's own pose, so the head starts where
  the source's is), or *absolute* (the official MagicPortrait behaviour and the default with its trackers: the
  driving head's rotation with the source's camera, i.e. the source's scale and position).
Both pose modes work with the orthographic and the perspective camera (scale and translation are then the
camera-space position in model units, and the size ratio is 1). The result keeps the source's camera.
Driving parameters are smoothed over time before the transfer (``smoothing`` 0 = off, 1 = strongest).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np

from magicportrait.config import MOTION, check_at_least, check_choices, check_range, flag, option
from magicportrait.errors import InputError
from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from magicportrait.tracking.smoothing import smooth, smooth_rotations
from magicportrait.types import HeadTrack


@dataclass
class AlignmentConfig:
    """How the driving motion is put on the source face."""

    cli_group: ClassVar[str] = MOTION

    pose_mode: Literal["relative", "absolute"] | None = option(
        None, "relative: the driving head's motion since its reference frame, on top of the source pose; "
        "absolute: the driving head's rotation at the source's position and size (official release). Default: "
        "relative with --tracker ours, absolute with the paper's trackers (deca-smirk, smirk).")
    reference_frame: int = option(0, "Driving frame whose pose (and expression, in relative expression mode) "
                                     "counts as 'no motion'.")
    expression_mode: Literal["absolute", "relative"] = option(
        "absolute", "absolute: the driving expression and jaw as they are (official); relative: the source's own "
        "expression plus the driving change since the reference frame.")
    expression_scale: float = option(1.0, "Multiplier of the driving expression and jaw opening (0 keeps the "
                                          "source's own in relative mode and with the open geometry).")
    smoothing: float | None = option(None, "Temporal smoothing of the driving motion, 0 (off) to 1 (strongest). "
                                           "Default: 0.5 with --tracker ours, 0 (official) with deca-smirk, smirk.")
    smoothing_method: Literal["savgol", "one_euro", "none"] = option(
        "savgol", "savgol: zero-lag Savitzky-Golay; one_euro: causal One-Euro filter.")

    def __post_init__(self) -> None:
        check_choices(self)
        check_at_least(self, 0, "reference_frame", "expression_scale")
        if self.smoothing is not None:
            check_range(self, "smoothing", 0, 1)

    def resolved(self, official: bool = False) -> AlignmentConfig:
        """A copy with the pose mode and smoothing that were left unset chosen: the official release's (absolute,
        none) for the paper's trackers (``official``), ours (relative, 0.5) for our own fit."""
        return replace(self, pose_mode=self.pose_mode or ("absolute" if official else "relative"),
                       smoothing=(0.0 if official else 0.5) if self.smoothing is None else self.smoothing)


def smooth_head_track(head: HeadTrack, strength: float, method: str = "savgol") -> HeadTrack:
    """A copy of ``head`` with rotation, scale, translation, expression and joints smoothed over time."""
    if strength <= 0 or method == "none" or head.num_frames < 3:
        return head
    fps = head.fps or 25.0

    def smoothed(values: np.ndarray) -> np.ndarray:
        if values.size == 0:  # e.g. no expression components (the partial FLAME model)
            return values
        return smooth(values, method=method, strength=strength, fps=fps).astype(np.float32)

    joints = head.joint_rotations
    if joints.shape[1]:
        joints = np.stack([smooth_rotations(joints[:, j], method=method, strength=strength, fps=fps)
                           for j in range(joints.shape[1])], axis=1).astype(np.float32)
    return replace(
        head, expression=smoothed(head.expression), scale=smoothed(head.scale), translation=smoothed(head.translation),
        rotation=smooth_rotations(head.rotation, method=method, strength=strength, fps=fps).astype(np.float32),
        joint_rotations=joints, extras=dict(head.extras),
    )


def align_to_source(source: HeadTrack, driving: HeadTrack, config: AlignmentConfig | None = None) -> HeadTrack:
    """Head parameters, in the source image's space, of the source face performing the driving motion.

    Args:
        source: the fitted source portrait (its first frame is used).
        driving: the fitted driving video, same head model.
        config: pose mode, expression scale and smoothing.

    Returns:
        A HeadTrack with the driving video's frame count and fps and the source's identity and image size.
    """
    config = (config or AlignmentConfig()).resolved()
    if source.model != driving.model:
        raise ValueError(f"Source ({source.model}) and driving ({driving.model}) use different head models.")
    if source.camera != driving.camera:
        raise ValueError(f"Source ({source.camera}) and driving ({driving.camera}) use different cameras.")
    if not 0 <= config.reference_frame < driving.num_frames:
        raise InputError(f"{flag('reference_frame')} {config.reference_frame} is outside the driving video "
                         f"(frames 0..{driving.num_frames - 1}).")
    driving = smooth_head_track(driving, config.smoothing, config.smoothing_method)
    source_rotation = axis_angle_to_matrix(source.rotation[0])
    driving_rotation = axis_angle_to_matrix(driving.rotation)

    if config.pose_mode == "relative":
        ref = config.reference_frame
        relative_rotation = driving_rotation @ driving_rotation[ref].T
        rotation = relative_rotation @ source_rotation
        size_ratio = source.scale[0] / driving.scale[ref]
        scale = driving.scale * size_ratio
        translation = source.translation[0] + (driving.translation - driving.translation[ref]) * size_ratio
    elif config.pose_mode == "absolute":
        rotation = driving_rotation
        scale = np.full(driving.num_frames, source.scale[0])
        translation = np.repeat(source.translation[:1], driving.num_frames, axis=0)
    else:
        raise ValueError(f"pose_mode must be 'relative' or 'absolute', got {config.pose_mode!r}.")

    expression, joints = _transfer_expression(source, driving, config)
    return type(source)(
        model=source.model,
        identity=source.identity,
        expression=expression.astype(np.float32),
        rotation=matrix_to_axis_angle(rotation).astype(np.float32),
        scale=np.asarray(scale, dtype=np.float32),
        translation=np.asarray(translation, dtype=np.float32),
        joint_rotations=joints.astype(np.float32),
        image_size=source.image_size,
        fps=driving.fps,
        camera=source.camera,
        focal_px=source.focal_px,
        extras={**source.extras, "pose_mode": config.pose_mode, "expression_mode": config.expression_mode,
                "smoothing": config.smoothing},
    )


JAW = 1  # index of the jaw among a FLAME track's joint rotations [neck, jaw, left eye, right eye]


def _transfer_expression(source: HeadTrack, driving: HeadTrack,
                         config: AlignmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame expression and joint rotations of the aligned head (see the module docstring)."""
    scale = config.expression_scale
    joints = np.array(driving.joint_rotations, dtype=np.float64)
    if config.expression_mode == "absolute":
        if joints.shape[1] > JAW:
            joints[:, JAW] *= scale
        return driving.expression * scale, joints
    if config.expression_mode != "relative":
        raise ValueError(f"expression_mode must be 'absolute' or 'relative', got {config.expression_mode!r}.")
    ref = config.reference_frame
    expression = source.expression[:1] + (driving.expression - driving.expression[ref]) * scale
    if joints.shape[1] > JAW and source.joint_rotations.shape[1] > JAW:
        # Small jaw angles (about one axis in practice) add like vectors.
        joints[:, JAW] = source.joint_rotations[0, JAW] + (joints[:, JAW] - joints[ref, JAW]) * scale
    return expression, joints


def limit_rotation(head: HeadTrack, reference_rotation: np.ndarray,
                   limits_degrees: tuple[float, float, float] | np.ndarray) -> tuple[HeadTrack, np.ndarray]:
    """Clamp each frame's rotation relative to ``reference_rotation`` (axis-angle) to +-(yaw, pitch, roll) degrees,
    or, with a `(2, 3)` ``limits_degrees``, between its rows (lower, upper: one-sided limits).

    A single photo shows one side of a head: turned much further than it, the re-rendered face would show surface
    the photo never saw. Returns the clamped head and a `(T,)` bool array of the frames that were changed.
    """
    from dataclasses import replace

    from magicportrait.geometry.rotations import euler_degrees_to_matrix, matrix_to_euler_degrees

    reference = axis_angle_to_matrix(np.asarray(reference_rotation, np.float64))
    relative = axis_angle_to_matrix(head.rotation.astype(np.float64)) @ reference.T
    euler = matrix_to_euler_degrees(relative)
    limits = np.asarray(limits_degrees, np.float64)
    lower, upper = (-limits, limits) if limits.ndim == 1 else (limits[0], limits[1])
    clamped = np.clip(euler, lower, upper)
    changed = (np.abs(clamped - euler) > 1e-6).any(axis=1)
    if not changed.any():
        return head, changed
    rotation = matrix_to_axis_angle(euler_degrees_to_matrix(clamped) @ reference).astype(head.rotation.dtype)
    rotation[~changed] = head.rotation[~changed]
    return replace(head, rotation=rotation), changed
