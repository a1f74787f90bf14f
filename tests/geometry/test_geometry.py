import numpy as np
import pytest

from magicportrait.geometry.procrustes import weighted_similarity_procrustes
from magicportrait.geometry.rotations import (
    axis_angle_to_matrix,
    euler_degrees_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_degrees,
    rotation_angle_degrees,
)


def test_axis_angle_known_rotation():
    # 90 degrees about z maps x to y.
    matrix = axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(matrix @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_axis_angle_round_trip_including_pi_and_zero():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 3))
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    vectors *= rng.uniform(0, np.pi, size=(200, 1))
    vectors[0] = [np.pi, 0.0, 0.0]
    vectors[1] = 0.0
    matrices = axis_angle_to_matrix(vectors)
    np.testing.assert_allclose(axis_angle_to_matrix(matrix_to_axis_angle(matrices)), matrices, atol=1e-9)
    np.testing.assert_allclose(matrix_to_axis_angle(matrices)[2:], vectors[2:], atol=1e-9)


def test_euler_round_trip_and_meaning():
    angles = np.array([[20.0, -10.0, 5.0], [-35.0, 15.0, -8.0]])
    matrices = euler_degrees_to_matrix(angles)
    np.testing.assert_allclose(matrix_to_euler_degrees(matrices), angles, atol=1e-9)
    # Pure yaw is a rotation about the vertical image axis (y).
    yaw = euler_degrees_to_matrix(np.array([30.0, 0.0, 0.0]))
    np.testing.assert_allclose(yaw @ [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    assert rotation_angle_degrees(np.eye(3), yaw) == pytest.approx(30.0)


def test_procrustes_recovers_similarity_with_weights_ignoring_outliers():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(60, 3))
    rotation = euler_degrees_to_matrix(np.array([25.0, -12.0, 7.0]))
    target = 3.5 * points @ rotation.T + [10.0, -4.0, 2.0]
    target[:5] += 50.0  # outliers, weighted out
    weights = np.ones(60)
    weights[:5] = 0.0
    scale, fitted_rotation, translation = weighted_similarity_procrustes(points, target, weights)
    assert scale[0] == pytest.approx(3.5)
    np.testing.assert_allclose(fitted_rotation[0], rotation, atol=1e-10)
    np.testing.assert_allclose(translation[0], [10.0, -4.0, 2.0], atol=1e-9)


def test_procrustes_never_returns_a_reflection():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(30, 3))
    mirrored = points * [-1.0, 1.0, 1.0]
    _, rotation, _ = weighted_similarity_procrustes(points, mirrored)
    assert np.linalg.det(rotation[0]) == pytest.approx(1.0)
