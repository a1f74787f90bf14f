from dataclasses import replace

import numpy as np
import pytest

from magicportrait.alignment import AlignmentConfig, align_to_source
from magicportrait.geometry.rotations import (
    axis_angle_to_matrix,
    euler_degrees_to_matrix,
    matrix_to_axis_angle,
    rotation_angle_degrees,
)
from magicportrait.heads import MediaPipeHeadModel
from magicportrait.types import HeadTrack


def head(euler: np.ndarray, scale, translation, expression, identity) -> HeadTrack:
    count = len(euler)
    return HeadTrack(model="mediapipe", identity=identity, expression=expression,
                     rotation=matrix_to_axis_angle(euler_degrees_to_matrix(euler)).astype(np.float32),
                     scale=np.broadcast_to(np.asarray(scale, np.float32), (count,)).copy(),
                     translation=np.broadcast_to(np.asarray(translation, np.float32), (count, 3)).copy(),
                     image_size=(512, 512), fps=25.0)


@pytest.fixture
def tracks():
    model = MediaPipeHeadModel()
    source_identity = model.canonical.reshape(-1).astype(np.float32) * 1.1
    driving_identity = model.canonical.reshape(-1).astype(np.float32)
    expression = np.zeros((4, source_identity.size), np.float32)
    expression[3, 14 * 3 + 1] = 0.7
    source = head(np.array([[10.0, 0.0, 0.0]]), 30.0, [250.0, 260.0, 0.0], np.zeros((1, source_identity.size)),
                  source_identity)
    driving = head(np.array([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]]),
                   [60.0, 60.0, 66.0, 60.0], [[100.0, 100.0, 0.0], [110.0, 100.0, 0.0], [100, 100, 0], [100, 80, 0]],
                   expression, driving_identity)
    return model, source, driving


def test_relative_mode_adds_driving_motion_to_source_pose(tracks):
    _, source, driving = tracks
    aligned = align_to_source(source, driving, AlignmentConfig(smoothing=0.0))
    rotations = axis_angle_to_matrix(aligned.rotation)
    expected = euler_degrees_to_matrix(np.array([[10.0, 0, 0], [30.0, 0, 0]]))
    assert rotation_angle_degrees(rotations[:2], expected).max() < 1e-4
    # Scale follows the driving ratio; translation moves by the driving offset times the size ratio (30/60).
    np.testing.assert_allclose(aligned.scale, [30.0, 30.0, 33.0, 30.0], rtol=1e-6)
    np.testing.assert_allclose(aligned.translation[1], [255.0, 260.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(aligned.translation[3], [250.0, 250.0, 0.0], atol=1e-4)


def test_identity_from_source_expression_from_driving(tracks):
    model, source, driving = tracks
    aligned = align_to_source(source, driving, AlignmentConfig(smoothing=0.0, expression_scale=0.5))
    np.testing.assert_array_equal(aligned.identity, source.identity)
    assert aligned.expression[3, 14 * 3 + 1] == pytest.approx(0.35)
    vertices = model.posed_vertices(aligned)
    assert vertices.shape == (4, 478, 3)


def test_absolute_mode_keeps_source_camera(tracks):
    _, source, driving = tracks
    aligned = align_to_source(source, driving, AlignmentConfig(pose_mode="absolute", smoothing=0.0))
    np.testing.assert_allclose(aligned.scale, 30.0)
    np.testing.assert_allclose(aligned.translation, np.repeat(source.translation, 4, axis=0))
    np.testing.assert_allclose(aligned.rotation, driving.rotation, atol=1e-6)


def test_smoothing_reduces_pose_jitter():
    model = MediaPipeHeadModel()
    rng = np.random.default_rng(0)
    count = 60
    yaw = 15 * np.sin(np.linspace(0, 2 * np.pi, count))
    noisy = np.stack([yaw + rng.normal(0, 1.5, count), np.zeros(count), np.zeros(count)], axis=-1)
    identity = model.canonical.reshape(-1).astype(np.float32)
    driving = head(noisy, 60.0, [100.0, 100.0, 0.0], np.zeros((count, identity.size), np.float32), identity)
    source = head(np.zeros((1, 3)), 60.0, [100.0, 100.0, 0.0], np.zeros((1, identity.size)), identity)
    truth = euler_degrees_to_matrix(np.stack([yaw, np.zeros(count), np.zeros(count)], axis=-1))

    def error(strength):
        aligned = align_to_source(source, driving, AlignmentConfig(smoothing=strength))
        return rotation_angle_degrees(axis_angle_to_matrix(aligned.rotation), truth).mean()

    assert error(0.8) < 0.6 * error(0.0)


def test_mismatched_models_are_refused(tracks):
    _, source, driving = tracks
    with pytest.raises(ValueError, match="different head models"):
        align_to_source(source, replace(driving, model="flame"))


def test_smoothing_accepts_a_model_without_expression_components():
    count = 10
    empty = np.zeros((count, 0), np.float32)
    driving = head(np.zeros((count, 3)), 60.0, [100.0, 100.0, 0.0], empty, np.zeros(3, np.float32))
    source = head(np.zeros((1, 3)), 60.0, [100.0, 100.0, 0.0], np.zeros((1, 0), np.float32), np.zeros(3, np.float32))
    aligned = align_to_source(source, driving, AlignmentConfig(smoothing=0.5))
    assert aligned.expression.shape == (count, 0)
