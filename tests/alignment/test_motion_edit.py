"""Motion edits: each scale does what it says on the aligned head's parameters, the frame range keeps the
portrait outside it with smooth ramps, and the edit works through a head model's expression basis (FLAME-like)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from magicportrait.alignment import MotionEdit, edit_motion
from magicportrait.alignment.editing import ExpressionBasis, frame_weights
from magicportrait.errors import InputError
from magicportrait.geometry.rotations import (
    axis_angle_to_matrix,
    euler_degrees_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_degrees,
)
from magicportrait.heads import MediaPipeHeadModel
from magicportrait.heads.base import HeadModel
from magicportrait.heads.regions import REGIONS, eyelid_landmarks, landmark_regions, region_weights
from magicportrait.types import HeadTrack

NUM_FRAMES = 20
PORTRAIT_EULER = np.array([12.0, -5.0, 3.0])


def _track(model_name, identity, expression, euler, scale, translation, joints=None) -> HeadTrack:
    return HeadTrack(model=model_name, identity=np.asarray(identity, np.float32),
                     expression=np.asarray(expression, np.float32),
                     rotation=matrix_to_axis_angle(euler_degrees_to_matrix(euler)).astype(np.float32),
                     scale=np.asarray(scale, np.float32), translation=np.asarray(translation, np.float32),
                     joint_rotations=None if joints is None else np.asarray(joints, np.float32),
                     image_size=(512, 512), fps=25.0)


@pytest.fixture(scope="module")
def model():
    return MediaPipeHeadModel()


@pytest.fixture(scope="module")
def scene(model):
    """A portrait (open geometry, lips slightly apart) and a motion: turning, nodding, tilting, moving, and a
    mouth, brow and eye motion that grows over the frames."""
    identity = model.canonical.reshape(-1)
    t = np.linspace(0, 1, NUM_FRAMES)
    relative = np.stack([20 * t, 10 * t, -8 * t], axis=1)
    euler = matrix_to_euler_degrees(euler_degrees_to_matrix(relative) @ euler_degrees_to_matrix(PORTRAIT_EULER))
    motion = np.zeros((NUM_FRAMES, 478, 3))
    weights = region_weights(model)
    offset = np.zeros((478, 3))
    offset[:, 1] = 0.8 * weights[:, REGIONS.index("jaw")]  # the jaw opens: the chin and the lower lip drop
    offset[:, 0] = -0.3 * weights[:, REGIONS.index("lips")] * np.sign(identity.reshape(478, 3)[:, 0])  # a pucker
    offset[:, 1] -= 0.5 * weights[:, REGIONS.index("brows")]
    motion[:] = offset
    motion *= t[:, None, None]
    portrait = _track("mediapipe", identity, np.zeros((1, identity.size)), PORTRAIT_EULER[None], [30.0],
                      [[256.0, 250.0, 0.0]])
    head = _track("mediapipe", identity, motion.reshape(NUM_FRAMES, -1), euler, 30.0 * (1 + 0.2 * t),
                  np.stack([256 + 40 * t, 250 - 20 * t, np.zeros_like(t)], axis=1))
    return portrait, head


def _relative_euler(head: HeadTrack, portrait: HeadTrack) -> np.ndarray:
    base = axis_angle_to_matrix(portrait.rotation[0].astype(np.float64))
    return matrix_to_euler_degrees(axis_angle_to_matrix(head.rotation.astype(np.float64)) @ base.T)


def test_rotation_scales_act_per_axis(model, scene):
    portrait, head = scene
    before = _relative_euler(head, portrait)
    edited = _relative_euler(edit_motion(head, portrait, MotionEdit(yaw=0, pitch=2, roll=0.5), model), portrait)
    np.testing.assert_allclose(edited[:, 0], 0, atol=1e-3)
    np.testing.assert_allclose(edited[:, 1], 2 * before[:, 1], atol=1e-3)
    np.testing.assert_allclose(edited[:, 2], 0.5 * before[:, 2], atol=1e-3)


def test_translation_zero_keeps_the_head_in_place(model, scene):
    portrait, head = scene
    edited = edit_motion(head, portrait, MotionEdit(translation=0), model)
    np.testing.assert_allclose(edited.translation, np.repeat(portrait.translation, NUM_FRAMES, 0), atol=1e-4)
    np.testing.assert_allclose(edited.scale, portrait.scale[0], rtol=1e-6)
    np.testing.assert_array_equal(edited.rotation, head.rotation)


def _vertices(model, head):
    return model.shape_vertices(head.identity, head.expression)


def test_region_scales_move_only_their_region(model, scene):
    portrait, head = scene
    labels = landmark_regions(model.canonical)
    brows, lips, jaw = (labels == REGIONS.index(name) for name in ("brows", "lips", "jaw"))
    still = _vertices(model, portrait)[0]
    moved = _vertices(model, head)
    edited = _vertices(model, edit_motion(head, portrait, MotionEdit(jaw=0, lips=0), model))
    tolerance = 0.02  # cm, of motions up to 0.8: region borders are soft, so a region's edge shares a little
    np.testing.assert_allclose(edited[:, lips | jaw], np.broadcast_to(still[lips | jaw], edited[:, lips | jaw].shape),
                               atol=tolerance)  # the mouth is the portrait's: closed
    np.testing.assert_allclose(edited[:, brows], moved[:, brows], atol=tolerance)  # the brows still move
    doubled = _vertices(model, edit_motion(head, portrait, MotionEdit(brows=2), model))
    np.testing.assert_allclose(doubled[:, brows] - still[brows], 2 * (moved[:, brows] - still[brows]),
                               atol=tolerance)
    np.testing.assert_allclose(doubled[:, lips], moved[:, lips], atol=tolerance)


def _lid_heights(vertices: np.ndarray) -> np.ndarray:
    """`(T, 2, 16)` each eyelid point's height below the line through its eye's corners (y is down)."""
    loops, corners = eyelid_landmarks()
    a, b = vertices[:, corners[:, 0]], vertices[:, corners[:, 1]]  # (T, 2, 3)
    along = (vertices[:, loops, 0] - a[..., None, 0]) / (b[..., None, 0] - a[..., None, 0])
    return vertices[:, loops, 1] - (a[..., None, 1] + along * (b[..., None, 1] - a[..., None, 1]))


def test_jaw_zero_keeps_the_mouth_closed(model, scene):
    portrait, head = scene
    gap = lambda vertices: vertices[..., 14, 1] - vertices[..., 13, 1]  # noqa: E731 - inner lips, y down
    own = gap(_vertices(model, portrait)[0])
    assert gap(_vertices(model, head))[-1] - own > 0.5  # the driven mouth opens
    edited = _vertices(model, edit_motion(head, portrait, MotionEdit(jaw=0), model))
    np.testing.assert_allclose(gap(edited), own, atol=0.02)
    labels = landmark_regions(model.canonical)
    lips = labels == REGIONS.index("lips")
    own_lips = _vertices(model, portrait)[0, lips]
    kept = np.abs(edited[:, lips] - own_lips).mean() / np.abs(_vertices(model, head)[:, lips] - own_lips).mean()
    assert kept > 0.8  # the pucker stays (the corners share a little with the lower lip)


def test_eyes_zero_closes_the_eyelids(model, scene):
    portrait, head = scene
    heights = _lid_heights(_vertices(model, head))
    opening = heights[..., 12] - heights[..., 4]  # lower lid middle (145 / 374) minus upper (159 / 386)
    assert (opening > 0.3).all()  # centimetres: open in every frame
    closed = _lid_heights(_vertices(model, edit_motion(head, portrait, MotionEdit(eyes=0), model)))
    np.testing.assert_allclose(closed, 0, atol=1e-4)  # every lid point on the corners' line
    wider = _lid_heights(_vertices(model, edit_motion(head, portrait, MotionEdit(eyes=1.5), model)))
    np.testing.assert_allclose(wider, 1.5 * heights, atol=1e-4)


def test_neutralize_closes_the_portraits_open_lips(model, scene):
    portrait, head = scene
    identity = model.canonical.copy()  # the canonical face's lips are about 1 cm apart
    assert identity[14, 1] - identity[13, 1] > 0.5
    edited = edit_motion(head, portrait, MotionEdit(neutralize=True, jaw=0, lips=0), model)
    vertices = _vertices(model, edited)
    np.testing.assert_allclose(vertices[:, 14, 1] - vertices[:, 13, 1], 0, atol=0.05)


def test_frames_outside_the_range_are_the_portrait(model, scene):
    portrait, head = scene
    edited = edit_motion(head, portrait, MotionEdit(frames="5:15", ramp=3), model)
    outside = np.r_[0:5, 15:NUM_FRAMES]
    np.testing.assert_allclose(_relative_euler(edited, portrait)[outside], 0, atol=1e-3)
    np.testing.assert_allclose(edited.translation[outside], np.repeat(portrait.translation, len(outside), 0),
                               atol=1e-3)
    np.testing.assert_allclose(edited.expression[outside], 0, atol=1e-6)
    np.testing.assert_allclose(edited.rotation[8:12], head.rotation[8:12], atol=1e-6)  # past the ramps: unchanged


def test_frame_weights_ramp_smoothly():
    weights = frame_weights(30, 10, 20, 4)
    np.testing.assert_array_equal(weights[:10], 0)
    np.testing.assert_array_equal(weights[20:], 0)
    np.testing.assert_array_equal(weights[14:16], 1)
    np.testing.assert_allclose(weights[10:14], [0.104, 0.352, 0.648, 0.896], atol=1e-3)  # smoothstep of k/5
    np.testing.assert_allclose(weights[16:20], weights[10:14][::-1], atol=1e-12)
    np.testing.assert_array_equal(frame_weights(8, 0, 8, 4), 1)  # the video's own ends do not ramp
    np.testing.assert_array_equal(frame_weights(8, 2, 5, 0), [0, 0, 1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("kwargs, message", [
    ({"yaw": -1}, "--edit-yaw must be between 0 and 3"),
    ({"eyes": 2}, "--edit-eyes must be between 0 and 1.5"),
    ({"frames": "30-90"}, "--edit-frames takes START:END"),
    ({"frames": "9:3"}, "--edit-frames needs 0 <= START < END"),
    ({"ramp": -2}, "--edit-ramp must be at least 0"),
])
def test_bad_edit_values_name_their_flag(kwargs, message):
    with pytest.raises(InputError, match=message):
        MotionEdit(**kwargs)


def test_frame_range_parsing():
    assert MotionEdit(frames="30:").frame_range(100) == (30, 100)
    assert MotionEdit(frames=":40").frame_range(100) == (0, 40)
    assert MotionEdit(frames="30:900").frame_range(100) == (30, 100)
    with pytest.raises(InputError, match="starts after the motion's last frame"):
        MotionEdit(frames="200:").frame_range(100)


def test_no_edit_returns_the_same_track(model, scene):
    portrait, head = scene
    assert edit_motion(head, portrait, MotionEdit(ramp=2), model) is head


class LinearHead(HeadModel):
    """A FLAME-like head: expression blend shapes on the canonical face, each moving mostly one region (like
    FLAME's components, which are not confined to a region either: every one moves the whole face a little)."""

    name = "linear"

    def __init__(self, num_expression: int = 12) -> None:
        open_geometry = MediaPipeHeadModel()
        self.template, self.faces = open_geometry.canonical, open_geometry.faces
        weights = np.concatenate([region_weights(open_geometry), np.full((len(self.template), 1), 0.05)], axis=1)
        rng = np.random.default_rng(3)
        self.basis = rng.normal(scale=0.3, size=(num_expression, *self.template.shape))
        self.basis *= weights.T[np.arange(num_expression) % weights.shape[1], :, None]

    @property
    def num_vertices(self) -> int:
        return len(self.template)

    def fit(self, track):
        raise NotImplementedError

    def shape_vertices(self, identity, expression, joint_rotations=None):
        expression = np.asarray(expression, np.float64).reshape(-1, len(self.basis))
        return self.template + np.einsum("te,evd->tvd", expression, self.basis)

    def landmarks(self, vertices):
        return np.asarray(vertices)

    def template_vertices(self):
        return self.template


def test_expression_basis_edits_work_through_the_parameters():
    model = LinearHead()
    basis = ExpressionBasis(model, np.zeros(3), 12)
    codes = np.random.default_rng(4).normal(size=(5, 12))
    np.testing.assert_allclose(basis.fit(basis.vertices(codes)), codes, atol=1e-8)  # exact within the span
    joints = np.zeros((5, 4, 3))
    joints[:, 1, 0] = np.linspace(0, 0.3, 5)  # the jaw opens
    portrait = _track("linear", np.zeros(3), np.zeros((1, 12)), PORTRAIT_EULER[None], [30.0], [[0, 0, 0]],
                      np.zeros((1, 4, 3)))
    head = _track("linear", np.zeros(3), codes, np.repeat(PORTRAIT_EULER[None], 5, 0), [30.0] * 5,
                  np.zeros((5, 3)), joints)
    half = edit_motion(head, portrait, MotionEdit(jaw=0.5), model)
    np.testing.assert_allclose(half.joint_rotations[:, 1], 0.5 * joints[:, 1], atol=1e-7)
    # All regions at 0: the least-squares expression leaves those regions' vertices (nearly) where they were.
    still = edit_motion(head, portrait, MotionEdit(jaw=0, lips=0, brows=0), model)
    labels = landmark_regions(model.template)
    mouth = np.isin(labels, [REGIONS.index("jaw"), REGIONS.index("lips")])
    moved = np.abs(basis.vertices(codes)[:, mouth] - model.template[mouth]).mean()
    left = np.abs(basis.vertices(still.expression)[:, mouth] - model.template[mouth]).mean()
    assert left < 0.1 * moved


def test_relative_regions_count_from_the_reference_frame(model, scene):
    portrait, head = scene
    raised = head.expression.reshape(NUM_FRAMES, 478, 3).copy()  # the brows raised from frame 0 on
    brows = landmark_regions(model.canonical) == REGIONS.index("brows")
    raised[:, brows, 1] -= 0.3
    offset = replace(head, expression=raised.reshape(NUM_FRAMES, -1))
    edited = _vertices(model, edit_motion(offset, portrait, MotionEdit(relative="brows"), model, reference_frame=0))
    still = _vertices(model, portrait)[0]
    np.testing.assert_allclose(edited[0, brows], still[brows], atol=0.02)  # frame 0 is "no motion"
    np.testing.assert_allclose(edited[:, brows] - edited[:1, brows], _vertices(model, offset)[:, brows]
                               - _vertices(model, offset)[:1, brows], atol=0.02)  # the brows' motion is kept
    with pytest.raises(InputError, match="--edit-relative takes regions among jaw, lips, eyes, brows, got nose"):
        MotionEdit(relative="nose")


def test_retarget_sets_eye_and_lip_opening_and_turn(model, scene):
    from magicportrait.alignment.editing import retarget_head
    from magicportrait.heads.regions import eye_opening, lip_opening

    portrait, _ = scene
    head = retarget_head(portrait, model, eye_target=0.1, lip_target=0.3, rotation_degrees=(10, 0, 0))
    landmarks = model.shape_vertices(head.identity, head.expression)[0]
    assert float(eye_opening(landmarks)) == pytest.approx(0.1, abs=1e-6)
    assert float(lip_opening(landmarks)) == pytest.approx(0.3, abs=0.01)  # the corners move a little with the lips
    np.testing.assert_allclose(_relative_euler(head, portrait), [[10, 0, 0]], atol=1e-4)
    closed = replace(portrait, expression=scale_eye_expression(model, portrait, 0.0))
    with pytest.raises(InputError, match="eyes are closed"):
        retarget_head(closed, model, eye_target=0.3)


def scale_eye_expression(model, head, factor):
    from magicportrait.heads.regions import scale_eye_opening

    vertices = model.shape_vertices(head.identity, head.expression)
    return (scale_eye_opening(vertices, factor) - model.shape_vertices(head.identity, 0 * head.expression)).reshape(
        len(vertices), -1).astype(np.float32)
