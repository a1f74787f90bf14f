"""Structured Face Alignment on FLAME: FLAME(beta_source, psi_driving, theta_driving) with the source's camera.

Uses the shared partial FLAME model (skips cleanly without it): a source portrait of identity A and a driving
video of identity B with known head rotation and jaw opening are made from the model, both are fitted, and the
aligned head must have A's shape while following B's motion.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from magicportrait.alignment import AlignmentConfig, align_to_source
from magicportrait.heads.base import pose_vertices
from magicportrait.types import FlameTrack, Track
from shared_paths import PARTIAL_MODEL, needs_partial_flame

SIZE = 512
NUM_FRAMES = 16

pytestmark = needs_partial_flame


@pytest.fixture(scope="module")
def model():
    from magicportrait.heads.flame_head import FlameHeadModel

    torch.set_num_threads(2)
    return FlameHeadModel.from_file(PARTIAL_MODEL)


def _track(landmarks: np.ndarray) -> Track:
    n = landmarks.shape[0]
    return Track(landmarks=landmarks.astype(np.float32), boxes=np.zeros((n, 3), np.float32),
                 detected=np.ones(n, bool), fps=25.0, image_size=(SIZE, SIZE))


def _landmarks(model, identity, rotation, joints, scale, translation) -> np.ndarray:
    vertices = model.shape_vertices(identity, np.zeros((len(rotation), model.num_expression)), joints)
    return model.landmarks(pose_vertices(vertices, rotation, scale, translation).astype(np.float64))


@pytest.fixture(scope="module")
def scene(model):
    rng = np.random.default_rng(7)
    direction = rng.standard_normal(model.num_shape)
    source_identity, driving_identity = 1.5 * direction, -1.5 * direction  # two clearly different people
    t = np.linspace(0.0, 1.0, NUM_FRAMES)
    driving_rotation = np.stack([np.deg2rad(8) * np.sin(2 * np.pi * t), np.deg2rad(25) * np.sin(2 * np.pi * t),
                                 np.zeros_like(t)], axis=1)
    driving_joints = np.zeros((NUM_FRAMES, 4, 3))
    driving_joints[:, 1, 0] = np.deg2rad(14) * np.sin(np.pi * t) ** 2
    driving_scale = np.full(NUM_FRAMES, 11.0)
    driving_translation = np.stack([240 + 15 * t, 260 - 10 * t, np.zeros_like(t)], axis=1)
    source_rotation = np.array([[0.0, np.deg2rad(-10), np.deg2rad(5)]])
    source = model.fit(_track(_landmarks(model, source_identity, source_rotation, np.zeros((1, 4, 3)),
                                         np.array([14.0]), np.array([[270.0, 250.0, 0.0]]))))
    driving = model.fit(_track(_landmarks(model, driving_identity, driving_rotation, driving_joints,
                                          driving_scale, driving_translation)))
    return {"source": source, "driving": driving, "source_identity": source_identity,
            "driving_identity": driving_identity, "driving_rotation": driving_rotation,
            "driving_joints": driving_joints, "source_rotation": source_rotation}


def _neutral_distance_mm(model, identity_a, identity_b) -> float:
    """Mean distance of the neutral face surfaces (the vertices around the landmarks: the back of the head is
    not observable from landmarks)."""
    zero = np.zeros((1, model.num_expression))
    a, b = model.shape_vertices(identity_a, zero), model.shape_vertices(identity_b, zero)
    face = np.unique(model.faces[model.embedding[0]])
    return float(10.0 * np.linalg.norm(a[:, face] - b[:, face], axis=-1).mean())


def test_keeps_source_identity_and_follows_driving_motion(model, scene):
    from magicportrait.heads.flame_head import rotation_error_degrees

    aligned = align_to_source(scene["source"], scene["driving"], AlignmentConfig(smoothing=0.0))
    assert isinstance(aligned, FlameTrack) and aligned.num_frames == NUM_FRAMES
    # Identity: the source's shape (a few mm from the truth), far from the driving person's.
    to_source = _neutral_distance_mm(model, aligned.identity, scene["source_identity"])
    between = _neutral_distance_mm(model, scene["source_identity"], scene["driving_identity"])
    # Measured: 2.4 mm vs 5.6 mm (one image fixes the face's depth profile only loosely; the prior shrinks it).
    assert to_source < 0.5 * between
    np.testing.assert_array_equal(aligned.identity, scene["source"].identity)
    # Every frame keeps the source's face: away from the jaw (above the nose tip), the driven, unposed mesh is
    # much closer to the source's neutral shape than the driving person's own driven mesh is.
    neutral = model.shape_vertices(scene["source"].identity, np.zeros((1, model.num_expression)))
    face = np.unique(model.faces[model.embedding[0][:468]])  # skin only: the iris points sit on the eyeballs
    upper = face[neutral[0, face, 1] < neutral[0, :, 1][neutral[0, :, 2].argmin()]]  # y down: above the nose tip

    def upper_distance_mm(head) -> np.ndarray:
        driven = model.shape_vertices(head.identity, head.expression, head.joint_rotations)
        return 10.0 * np.linalg.norm(driven[:, upper] - neutral[:, upper], axis=-1).mean(-1)

    aligned_distance, driving_distance = upper_distance_mm(aligned), upper_distance_mm(scene["driving"])
    print(f"upper face to source neutral: aligned {aligned_distance.max():.2f} mm, driving "
          f"{driving_distance.min():.2f} mm")
    assert aligned_distance.max() < 0.3 * driving_distance.min()
    # Relative pose: frame t turned from frame 0 exactly as the driving head turned (rotation since frame 0,
    # against the truth), starting from the source's own fitted rotation.
    from magicportrait.geometry.rotations import matrix_to_axis_angle

    aligned_motion = _matrix(aligned.rotation) @ _matrix(aligned.rotation[0]).T
    true_motion = _matrix(scene["driving_rotation"]) @ _matrix(scene["driving_rotation"][0]).T
    assert rotation_error_degrees(matrix_to_axis_angle(aligned_motion), matrix_to_axis_angle(true_motion)).max() < 1.5
    assert rotation_error_degrees(aligned.rotation[:1], scene["source"].rotation).max() < 1e-3
    # Jaw follows the driving jaw (absolute expression mode, the official behaviour).
    jaw_error = np.degrees(np.abs(aligned.joint_rotations[:, 1, 0] - scene["driving_joints"][:, 1, 0]))
    assert jaw_error.max() < 2.0
    # Frame 0 sits exactly where the source face is.
    np.testing.assert_allclose(aligned.scale[0], scene["source"].scale[0], rtol=1e-6)
    np.testing.assert_allclose(aligned.translation[0], scene["source"].translation[0], atol=1e-4)
    # The rendered mesh of frame 0 lands on the source's landmarks.
    landmarks = model.landmarks(model.posed_vertices(aligned.select(slice(0, 1))).astype(np.float64))
    source_landmarks = model.landmarks(model.posed_vertices(scene["source"]).astype(np.float64))
    assert np.linalg.norm(landmarks[0, :, :2] - source_landmarks[0, :, :2], axis=-1).mean() < 1.0


def test_absolute_mode_uses_source_camera(scene):
    from magicportrait.heads.flame_head import rotation_error_degrees

    aligned = align_to_source(scene["source"], scene["driving"], AlignmentConfig(pose_mode="absolute",
                                                                                smoothing=0.0))
    np.testing.assert_allclose(aligned.scale, scene["source"].scale[0])
    np.testing.assert_allclose(aligned.translation, np.repeat(scene["source"].translation, NUM_FRAMES, 0))
    np.testing.assert_allclose(aligned.rotation, scene["driving"].rotation, atol=1e-5)
    assert rotation_error_degrees(aligned.rotation, scene["driving_rotation"]).max() < 2.0  # measured 1.4


def test_relative_expression_mode_keeps_source_jaw(scene):
    source = scene["source"]
    opened = FlameTrack(**{**source.__dict__, "joint_rotations": source.joint_rotations.copy()})
    opened.joint_rotations[0, 1, 0] = np.deg2rad(5)  # a source with a slightly open mouth
    relative = align_to_source(opened, scene["driving"], AlignmentConfig(smoothing=0.0, expression_mode="relative"))
    change = scene["driving"].joint_rotations[:, 1, 0] - scene["driving"].joint_rotations[0, 1, 0]
    np.testing.assert_allclose(relative.joint_rotations[:, 1, 0], np.deg2rad(5) + change, atol=1e-6)
    absolute = align_to_source(opened, scene["driving"], AlignmentConfig(smoothing=0.0))
    np.testing.assert_allclose(absolute.joint_rotations[:, 1, 0], scene["driving"].joint_rotations[:, 1, 0])


def test_perspective_relative_translation_is_in_centimetres():
    kwargs = {"model": "flame", "identity": np.zeros(3), "image_size": (SIZE, SIZE), "fps": 25.0,
              "camera": "perspective", "focal_px": 1400.0}
    source = FlameTrack(expression=np.zeros((1, 0)), rotation=np.zeros((1, 3)), scale=np.ones(1),
                        translation=np.array([[1.0, 2.0, 90.0]]), **kwargs)
    driving = FlameTrack(expression=np.zeros((3, 0)), rotation=np.zeros((3, 3)), scale=np.ones(3),
                         translation=np.array([[0.0, 0.0, 120.0], [2.0, 0.0, 120.0], [2.0, 0.0, 100.0]]), **kwargs)
    aligned = align_to_source(source, driving, AlignmentConfig(smoothing=0.0))
    np.testing.assert_allclose(aligned.translation, [[1, 2, 90], [3, 2, 90], [3, 2, 70]])
    np.testing.assert_allclose(aligned.scale, 1.0)
    assert aligned.camera == "perspective" and aligned.focal_px == 1400.0
    orthographic = replace(source, camera="orthographic", focal_px=None)
    with pytest.raises(ValueError, match="different cameras"):
        align_to_source(orthographic, driving)


def _matrix(axis_angle: np.ndarray) -> np.ndarray:
    from magicportrait.geometry.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(np.asarray(axis_angle, np.float64))
