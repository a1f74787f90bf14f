"""Motion you can edit: the aligned head's rotation per axis, its movement, the jaw, lips, eyelids and brows
scaled separately, the portrait's own expression removed, and the motion applied to a range of frames only.

All scales are relative to the portrait (the source head's first frame): 0 keeps the portrait's own pose or
expression on that part, 1 keeps the motion as aligned, 2 doubles it. The eye scale is different: it multiplies
the eyelids' opening (0 closes the eyes, 1 keeps them as driven). The overall expression's scale is the
alignment's ``--expression-scale``; these multiply it per region.

Expressions are edited on the head's surface, the same way for every head model: the motion's vertex offsets
from the portrait's shape are multiplied by soft per-region weights (:mod:`magicportrait.heads.regions`) and put
back into expression parameters by least squares over the model's (linear) expression basis, exact for the open
geometry, whose expression *is* the vertex offsets. FLAME's jaw is a joint: its rotation is scaled directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import ClassVar

import numpy as np

from magicportrait.config import MOTION_EDIT, check_range, field_flag, option
from magicportrait.errors import InputError
from magicportrait.geometry.rotations import (
    axis_angle_to_matrix,
    euler_degrees_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_degrees,
)
from magicportrait.heads.base import HeadModel
from magicportrait.heads.regions import (
    CLOSED_EYE,
    MOUTH_CORNERS,
    REGIONS,
    eye_opening,
    neutral_mouth,
    region_weights,
    scale_eye_opening,
    set_lip_gap,
)
from magicportrait.types import NUM_LANDMARKS, HeadTrack

JAW_JOINT = 1  # FLAME's joints: neck, jaw, left eye, right eye
MAX_SCALE = 3.0
MAX_EYE_SCALE = 1.5  # wider, and the lids cross the rows of points around the eyes
NEUTRALIZED = ("jaw", "lips", "brows")  # the eyes' opening is the eye scale's job
CHUNK = 256  # expression components evaluated at once
STILL_FPS = 25.0  # a retargeted still, saved as a one-frame motion


@dataclass
class MotionEdit:
    """Edits of the aligned motion (CLI ``--edit-*``; the UI's motion panel)."""

    cli_group: ClassVar[str] = MOTION_EDIT
    cli_prefix: ClassVar[str] = "edit_"
    ui_ranges: ClassVar[dict[str, tuple[float, float]]] = {  # the UI's sliders
        **dict.fromkeys(("yaw", "pitch", "roll", "translation", "jaw", "lips", "brows"), (0.0, MAX_SCALE)),
        "eyes": (0.0, MAX_EYE_SCALE), "ramp": (0, 25)}

    yaw: float = option(1.0, "Scale of the head's turn left/right, relative to the portrait's own pose (0: the "
                             "portrait's, 1: as driven, 2: doubled).")
    pitch: float = option(1.0, "Scale of the head's nod up/down, relative to the portrait's own pose.")
    roll: float = option(1.0, "Scale of the head's tilt in the picture plane, relative to the portrait's own pose.")
    translation: float = option(1.0, "Scale of the head's movement across the picture and toward the camera (0: "
                                     "it stays where the portrait's head is).")
    jaw: float = option(1.0, "Scale of the jaw's and chin's motion (0: the portrait's own jaw).")
    lips: float = option(1.0, "Scale of the lips' motion (0: the portrait's own lips).")
    brows: float = option(1.0, "Scale of the eyebrows' motion (0: the portrait's own brows).")
    eyes: float = option(1.0, "Eyelid opening as a multiple of the driven one (0: closed, 1: as driven, up to 1.5: "
                              "wider).")
    relative: str | None = option(None, "Regions whose motion counts from the reference frame (--reference-frame) "
                                        "instead of as aligned, comma-separated: jaw, lips, eyes, brows (e.g. eyes: "
                                        "a driving face with narrower eyes than the portrait's keeps the "
                                        "portrait's opening and follows only its blinks).")
    neutralize: bool = option(False, "Remove the portrait's own expression first (a smiling portrait driven by a "
                                     "neutral face ends up neutral): jaw, lips and brows start from a neutral face.")
    frames: str | None = option(None, "Apply the motion only to frames START:END (END excluded; either may be "
                                      "left out: 30:90, 30:, :90); outside, the portrait's own pose and expression "
                                      "are kept.")
    ramp: int = option(6, "Frames over which the motion fades in and out at the borders of --edit-frames.")

    def __post_init__(self) -> None:
        for name in ("yaw", "pitch", "roll", "translation", "jaw", "lips", "brows"):
            check_range(self, name, 0, MAX_SCALE)
        check_range(self, "eyes", 0, MAX_EYE_SCALE)
        check_range(self, "ramp", 0)
        unknown = set(self.relative_regions) - set(REGIONS)
        if unknown:
            raise InputError(f"{field_flag(self, 'relative')} takes regions among {', '.join(REGIONS)}, got "
                             f"{', '.join(sorted(unknown))}.")
        if self.frames is not None:
            self.frame_range(None)

    @property
    def relative_regions(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in (self.relative or "").split(",") if name.strip())

    @property
    def is_identity(self) -> bool:
        """True when the edit changes nothing."""
        return self == MotionEdit(ramp=self.ramp)

    def frame_range(self, num_frames: int | None) -> tuple[int, int | None]:
        """``frames`` as (start, end); end None = to the last frame (``num_frames`` bounds it when given)."""
        if self.frames is None:
            return 0, num_frames
        parts = self.frames.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            start = int(parts[0]) if parts[0].strip() else 0
            end = int(parts[1]) if parts[1].strip() else None
        except ValueError:
            raise InputError(f"{field_flag(self, 'frames')} takes START:END (e.g. 30:90, 30: or :90), got "
                             f"{self.frames!r}.") from None
        if start < 0 or (end is not None and end <= start):
            raise InputError(f"{field_flag(self, 'frames')} needs 0 <= START < END, got {self.frames!r}.")
        if num_frames is not None:
            if start >= num_frames:
                raise InputError(f"{field_flag(self, 'frames')} {self.frames} starts after the motion's last frame "
                                 f"({num_frames - 1}).")
            end = num_frames if end is None else min(end, num_frames)
        return start, end


def edit_motion(head: HeadTrack, portrait: HeadTrack, edit: MotionEdit, model: HeadModel,
                reference_frame: int = 0) -> HeadTrack:
    """``head`` (the aligned motion) edited by ``edit``, relative to the ``portrait``'s own head (its first frame);
    ``model`` is the head model both were fitted with; ``reference_frame`` is the frame of ``head`` that counts as
    "no motion" for ``edit.relative``. The edit is recorded in the result's extras."""
    if edit.is_identity:
        return head
    edited = _scale_rotation(head, portrait, np.array([edit.yaw, edit.pitch, edit.roll]))
    edited = _scale_movement(edited, portrait, edit.translation)
    edited = _edit_expression(edited, portrait, edit, model, min(reference_frame, head.num_frames - 1))
    weight = frame_weights(head.num_frames, *edit.frame_range(head.num_frames), edit.ramp)
    edited = blend_with_portrait(edited, portrait, weight)
    return replace(edited, extras={**head.extras, "motion_edit": asdict(edit)})


def frame_weights(num_frames: int, start: int, end: int, ramp: int) -> np.ndarray:
    """`(T,)` how much of the motion each frame shows: 0 outside ``start:end``, 1 inside, eased in (smoothstep) over
    its first and last ``ramp`` frames (at a border that is not the video's own start or end)."""
    t = np.arange(num_frames, dtype=np.float64)
    if ramp <= 0:
        return ((t >= start) & (t < end)).astype(np.float64)
    rise = np.ones(num_frames) if start == 0 else np.clip((t - start + 1) / (ramp + 1), 0, 1)
    fall = np.ones(num_frames) if end >= num_frames else np.clip((end - t) / (ramp + 1), 0, 1)
    weight = np.minimum(rise, fall)
    return weight * weight * (3 - 2 * weight)


def blend_with_portrait(head: HeadTrack, portrait: HeadTrack, weight: np.ndarray) -> HeadTrack:
    """Per frame, ``weight`` 1 keeps ``head``, 0 gives the portrait's own pose and expression, in between eases
    from one to the other (rotation along the shortest arc, scale geometrically)."""
    if np.all(weight >= 1):
        return head
    w = np.asarray(weight, np.float64)[:, None]
    base = axis_angle_to_matrix(portrait.rotation[0].astype(np.float64))
    relative = matrix_to_axis_angle(axis_angle_to_matrix(head.rotation.astype(np.float64)) @ base.T)
    rotation = matrix_to_axis_angle(axis_angle_to_matrix(relative * w) @ base)
    translation, scale = _movement(head, portrait, w)
    expression = portrait.expression[0] + w * (head.expression - portrait.expression[0])
    joints = head.joint_rotations
    if joints.shape[1] and portrait.joint_rotations.shape[1] == joints.shape[1]:
        joints = portrait.joint_rotations[0] + w[:, :, None] * (joints - portrait.joint_rotations[0])
    return replace(head, rotation=rotation.astype(np.float32), scale=scale.astype(np.float32),
                   translation=translation.astype(np.float32), expression=expression.astype(np.float32),
                   joint_rotations=np.asarray(joints, np.float32))


def _scale_rotation(head: HeadTrack, portrait: HeadTrack, factors: np.ndarray) -> HeadTrack:
    """Yaw, pitch and roll of each frame relative to the portrait's rotation, multiplied by ``factors``."""
    if np.all(factors == 1):
        return head
    base = axis_angle_to_matrix(portrait.rotation[0].astype(np.float64))
    euler = matrix_to_euler_degrees(axis_angle_to_matrix(head.rotation.astype(np.float64)) @ base.T)
    rotation = matrix_to_axis_angle(euler_degrees_to_matrix(euler * factors) @ base)
    return replace(head, rotation=rotation.astype(np.float32))


def _scale_movement(head: HeadTrack, portrait: HeadTrack, factor: float) -> HeadTrack:
    """The head's translation and size change relative to the portrait's, multiplied by ``factor``."""
    if factor == 1:
        return head
    translation, scale = _movement(head, portrait, np.full((head.num_frames, 1), float(factor)))
    return replace(head, translation=translation.astype(np.float32), scale=scale.astype(np.float32))


def _movement(head: HeadTrack, portrait: HeadTrack, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation and scale ``weight`` `(T, 1)` of the way from the portrait's to ``head``'s (scale
    geometrically)."""
    translation = portrait.translation[0] + weight * (head.translation - portrait.translation[0])
    scale = portrait.scale[0] * (head.scale / portrait.scale[0]) ** weight[:, 0]
    return translation, scale


def _edit_expression(head: HeadTrack, portrait: HeadTrack, edit: MotionEdit, model: HeadModel,
                     reference_frame: int) -> HeadTrack:
    scales = {"jaw": edit.jaw, "lips": edit.lips, "brows": edit.brows}
    if all(v == 1 for v in scales.values()) and edit.eyes == 1 and not edit.neutralize and not edit.relative:
        return head
    basis = ExpressionBasis(model, head.identity, head.expression.shape[1])
    weights = region_weights(model)
    multiplier = 1.0 + sum((scales[name] - 1.0) * weights[:, REGIONS.index(name)] for name in scales)
    own = basis.vertices(portrait.expression[:1])[0]
    moved = basis.vertices(head.expression)
    for name in edit.relative_regions:  # the region's offset at the reference frame is the portrait's own
        moved -= weights[:, REGIONS.index(name), None] * (moved[reference_frame] - own)
    target = own + multiplier[:, None] * (moved - own)
    joints = np.array(head.joint_rotations, np.float64)
    has_jaw = joints.shape[1] > JAW_JOINT and portrait.joint_rotations.shape[1] > JAW_JOINT
    own_jaw = portrait.joint_rotations[0, JAW_JOINT] if has_jaw else None
    if edit.neutralize:
        neutral = _neutral_vertices(model, basis, weights)
        target -= weights[:, [REGIONS.index(name) for name in NEUTRALIZED]].sum(1)[:, None] * (own - neutral)
        own_jaw = np.zeros(3) if has_jaw else None
    if has_jaw:
        joints[:, JAW_JOINT] = own_jaw + edit.jaw * (joints[:, JAW_JOINT] - portrait.joint_rotations[0, JAW_JOINT])
    expression = basis.fit(target)
    if edit.eyes != 1:
        expression = basis.fit_landmarks(expression, scale_eye_opening(basis.landmarks(expression), edit.eyes))
    return replace(head, expression=expression.astype(np.float32), joint_rotations=joints.astype(np.float32))


def _neutral_vertices(model: HeadModel, basis: ExpressionBasis, weights: np.ndarray) -> np.ndarray:
    """`(V, 3)` the portrait's head without expression: zero expression where the model has a basis to zero
    (FLAME); the open geometry's zero expression is the portrait as it is, so there the mouth is put at rest
    (:func:`~magicportrait.heads.regions.neutral_mouth`)."""
    rest = basis.vertices(np.zeros((1, basis.num_expression)))[0]
    if rest.shape[0] != NUM_LANDMARKS or basis.num_expression != rest.size:
        return rest
    return neutral_mouth(rest, weights)


class ExpressionBasis:
    """A head model's expression as a linear map (at zero joint rotations) for one identity: `(T, E)` expression
    parameters <-> `(T, V, 3)` pose-free vertices, and the landmarks on them (both maps are linear: blend shapes,
    and landmarks as fixed barycentric combinations of vertices)."""

    def __init__(self, model: HeadModel, identity: np.ndarray, num_expression: int) -> None:
        self.model, self.num_expression = model, num_expression
        self.rest = np.asarray(model.shape_vertices(identity, np.zeros((1, num_expression))), np.float64)[0]
        unit = np.eye(num_expression)
        columns = np.concatenate([np.asarray(model.shape_vertices(identity, unit[i:i + CHUNK]), np.float64)
                                  for i in range(0, num_expression, CHUNK)]) - self.rest  # (E, V, 3)
        self.matrix = columns.reshape(num_expression, -1).T  # (3V, E)
        self.rest_landmarks = np.asarray(model.landmarks(self.rest[None]), np.float64)[0]
        landmark_columns = np.concatenate([np.asarray(model.landmarks(self.rest + columns[i:i + CHUNK]), np.float64)
                                           for i in range(0, num_expression, CHUNK)]) - self.rest_landmarks
        self.landmark_matrix = landmark_columns.reshape(num_expression, -1).T  # (478 * 3, E)
        self._solve = _pseudo_inverse(self.matrix)
        self._landmark_solve = None  # computed on first use (only retargeting and the eye scale need it)

    def vertices(self, expression: np.ndarray) -> np.ndarray:
        """`(T, V, 3)` pose-free vertices (zero joint rotations) of `(T, E)` expression parameters."""
        expression = np.asarray(expression, np.float64).reshape(-1, self.num_expression)
        return self.rest + (expression @ self.matrix.T).reshape(len(expression), *self.rest.shape)

    def landmarks(self, expression: np.ndarray) -> np.ndarray:
        """`(T, 478, 3)` pose-free landmarks of `(T, E)` expression parameters."""
        expression = np.asarray(expression, np.float64).reshape(-1, self.num_expression)
        return self.rest_landmarks + (expression @ self.landmark_matrix.T).reshape(len(expression), -1, 3)

    def fit(self, vertices: np.ndarray) -> np.ndarray:
        """`(T, E)` least-squares expression parameters of `(T, V, 3)` vertices."""
        offsets = (np.asarray(vertices, np.float64) - self.rest).reshape(len(vertices), -1)
        return offsets @ self._solve.T

    def fit_landmarks(self, expression: np.ndarray, target: np.ndarray) -> np.ndarray:
        """`(T, E)` expression nearest ``expression`` whose landmarks best match `(T, 478, 3)` ``target`` (least
        squares: the open geometry matches exactly; FLAME as far as its expression basis reaches)."""
        if self._landmark_solve is None:
            self._landmark_solve = _pseudo_inverse(self.landmark_matrix)
        change = (np.asarray(target, np.float64) - self.landmarks(expression)).reshape(len(target), -1)
        return np.asarray(expression, np.float64) + change @ self._landmark_solve.T


def _pseudo_inverse(matrix: np.ndarray) -> np.ndarray:
    """The least-squares inverse of a linear map; the identity where the map is (the open geometry's expression
    is its vertex offsets, and its vertices are its landmarks), without computing it."""
    if matrix.shape[0] == matrix.shape[1] and np.allclose(matrix, np.eye(len(matrix)), atol=1e-9):
        return np.eye(len(matrix))
    return np.linalg.pinv(matrix)


def retarget_head(portrait: HeadTrack, model: HeadModel, eye_target: float | None = None,
                  lip_target: float | None = None, rotation_degrees: tuple[float, float, float] = (0, 0, 0),
                  basis: ExpressionBasis | None = None) -> HeadTrack:
    """The portrait's own head (one frame) with its eyelid opening and lip opening set to targets (fractions of the
    eye's / mouth's width, see :func:`~magicportrait.heads.regions.eye_opening` and
    :func:`~magicportrait.heads.regions.lip_opening`; None keeps them) and turned by (yaw, pitch, roll) degrees.
    ``basis``: the portrait's :class:`ExpressionBasis`, when the caller keeps it between calls."""
    head = portrait.select(slice(0, 1))
    basis = basis or ExpressionBasis(model, head.identity, head.expression.shape[1])
    landmarks = basis.landmarks(head.expression)[0]
    if eye_target is not None:
        current = float(eye_opening(landmarks))
        if current < CLOSED_EYE:
            raise InputError("The portrait's eyes are closed: a single photo does not show the eyes to open them; "
                             "leave the eye opening as it is.")
        landmarks = scale_eye_opening(landmarks, eye_target / current)
    if lip_target is not None:
        weights = _landmark_weights()
        width = float(np.linalg.norm(landmarks[MOUTH_CORNERS[1]] - landmarks[MOUTH_CORNERS[0]]))
        landmarks = set_lip_gap(landmarks, weights, lip_target * width)
    expression = basis.fit_landmarks(head.expression, landmarks[None])
    turn = euler_degrees_to_matrix(np.asarray(rotation_degrees, np.float64))
    rotation = matrix_to_axis_angle(turn @ axis_angle_to_matrix(head.rotation[0].astype(np.float64)))
    record = {"eye_opening": eye_target, "lip_opening": lip_target,
              "rotation_degrees": [float(v) for v in rotation_degrees]}
    return replace(head, expression=expression.astype(np.float32), rotation=rotation[None].astype(np.float32),
                   fps=head.fps or STILL_FPS, extras={**head.extras, "retarget": record})


@lru_cache(maxsize=1)
def _landmark_weights() -> np.ndarray:
    """`(478, 4)` region weights of the landmarks (the same for every head model: they are MediaPipe's points)."""
    from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel

    return region_weights(MediaPipeHeadModel())
