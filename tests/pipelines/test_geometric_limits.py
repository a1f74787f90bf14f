"""How far the geometric generator lets the head turn: +-max_* from the portrait's pose, and for a 3/4-view
portrait only max_hidden_turn back toward the side the photo hides (that side is guessed, and smears when large)."""

from __future__ import annotations

import numpy as np
import pytest

from magicportrait.alignment import limit_rotation
from magicportrait.geometry.rotations import euler_degrees_to_matrix, matrix_to_axis_angle, matrix_to_euler_degrees
from magicportrait.pipelines.geometric import GeometricConfig
from magicportrait.types import HeadTrack


def _head(rotations: np.ndarray) -> HeadTrack:
    count = len(rotations)
    return HeadTrack(model="mediapipe", identity=np.zeros(9, np.float32), expression=np.zeros((count, 9), np.float32),
                     rotation=rotations.astype(np.float32), scale=np.ones(count, np.float32),
                     translation=np.zeros((count, 2), np.float32), image_size=(512, 512), fps=25.0)


def test_bounds_are_symmetric_for_a_frontal_portrait_and_one_sided_for_a_three_quarter_view():
    config = GeometricConfig()
    np.testing.assert_allclose(config.rotation_bounds(np.array([10.0, -5.0, 3.0])),
                               [[-45, -30, -45], [45, 30, 45]])
    np.testing.assert_allclose(config.rotation_bounds(np.array([40.0, 0.0, 0.0])), [[-15, -30, -45], [45, 30, 45]])
    np.testing.assert_allclose(config.rotation_bounds(np.array([-40.0, 35.0, 0.0])), [[-45, -15, -45], [15, 30, 45]])
    assert GeometricConfig(max_hidden_turn=50).rotation_bounds(np.array([40.0, 0, 0]))[0, 0] == -45  # not past max


def test_a_three_quarter_portrait_turns_back_toward_its_hidden_side_only_a_little():
    source = euler_degrees_to_matrix(np.array([40.0, 0.0, 0.0]))  # the portrait's own pose: yaw 40
    turns = np.array([-30.0, -10.0, 30.0])  # toward the camera (reveals the hidden side), a little, away
    rotations = np.stack([matrix_to_axis_angle(euler_degrees_to_matrix(np.array([t, 0, 0])) @ source) for t in turns])
    total = matrix_to_euler_degrees(euler_degrees_to_matrix(np.array([-30.0, 0, 0])) @ source)[0]
    assert total == pytest.approx(10.0, abs=1e-6)  # turning by -30 brings the yaw-40 face to 10: toward the camera
    bounds = GeometricConfig().rotation_bounds(np.array([40.0, 0.0, 0.0]))
    clamped, changed = limit_rotation(_head(rotations), matrix_to_axis_angle(source), bounds)
    assert changed.tolist() == [True, False, False]
    relative = matrix_to_euler_degrees(_matrices(clamped.rotation) @ source.T)
    np.testing.assert_allclose(relative[:, 0], [-15.0, -10.0, 30.0], atol=1e-3)


def _matrices(axis_angles: np.ndarray) -> np.ndarray:
    from magicportrait.geometry.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(axis_angles.astype(np.float64))
