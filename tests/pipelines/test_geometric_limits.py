"""How far the geometric generator lets the head turn: +-max_* from the portrait's pose, and for a 3/4-view
portrait only max_hidden_turn back toward the side the photo hides (that side is guessed, and smears when large)."""

from __future__ import annotations

import numpy as np
import pytest

from magicportrait.alignment import limit_rotation
from magicportrait.errors import InputError
from magicportrait.geometry.rotations import euler_degrees_to_matrix, matrix_to_axis_angle, matrix_to_euler_degrees
from magicportrait.pipelines.geometric import GeometricConfig
from magicportrait.types import HeadTrack


def _head(rotations: np.ndarray) -> HeadTrack:
    count = len(rotations)
    return HeadTrack(model="mediapipe", identity=np.zeros(9, np.float32), expression=np.zeros((count, 9), np.float32),
                     rotation=rotations.astype(np.float32), scale=np.ones(count, np.float32),
                     translation=np.zeros((count, 2), np.float32), image_size=(512, 512), fps=25.0)


def test_bounds_are_symmetric_for_a_frontal_portrait_and_one_sided_for_a_three_quarter_view():
    config = GeometricConfig(max_turned=90)
    np.testing.assert_allclose(config.rotation_bounds(np.array([10.0, -5.0, 3.0])),
                               [[-45, -30, -45], [45, 30, 45]])
    np.testing.assert_allclose(config.rotation_bounds(np.array([40.0, 0.0, 0.0])), [[-15, -30, -45], [45, 30, 45]])
    np.testing.assert_allclose(config.rotation_bounds(np.array([-40.0, 35.0, 0.0])), [[-45, -15, -45], [15, 30, 45]])
    assert GeometricConfig(max_hidden_turn=50).rotation_bounds(np.array([40.0, 0, 0]))[0, 0] == -45  # not past max


def test_the_head_turns_no_further_from_the_camera_than_max_turned():
    """Default 40 degrees: a frontal portrait turns +-40; one turned 10 turns 30 further and 45 back (to -35); one
    turned 38 only 2 further; one turned beyond it keeps its own yaw; pitch and roll are not limited by it."""
    config = GeometricConfig()
    bounds = {yaw: config.rotation_bounds(np.array([yaw, 0.0, 0.0])) for yaw in (0.0, 10.0, -10.0, 38.0, 50.0)}
    np.testing.assert_allclose(bounds[0.0], [[-40, -30, -45], [40, 30, 45]])
    np.testing.assert_allclose(bounds[10.0][:, 0], [-45, 30])
    np.testing.assert_allclose(bounds[-10.0][:, 0], [-30, 45])
    np.testing.assert_allclose(bounds[38.0][:, 0], [-15, 2])
    np.testing.assert_allclose(bounds[50.0][:, 0], [-15, 0])
    with pytest.raises(InputError):
        GeometricConfig(max_turned=0)


def test_a_three_quarter_portrait_turns_back_toward_its_hidden_side_only_a_little():
    source = euler_degrees_to_matrix(np.array([40.0, 0.0, 0.0]))  # the portrait's own pose: yaw 40
    turns = np.array([-30.0, -10.0, 30.0])  # toward the camera (reveals the hidden side), a little, away
    rotations = np.stack([matrix_to_axis_angle(euler_degrees_to_matrix(np.array([t, 0, 0])) @ source) for t in turns])
    total = matrix_to_euler_degrees(euler_degrees_to_matrix(np.array([-30.0, 0, 0])) @ source)[0]
    assert total == pytest.approx(10.0, abs=1e-6)  # turning by -30 brings the yaw-40 face to 10: toward the camera
    bounds = GeometricConfig(max_turned=90).rotation_bounds(np.array([40.0, 0.0, 0.0]))
    clamped, changed = limit_rotation(_head(rotations), matrix_to_axis_angle(source), bounds)
    assert changed.tolist() == [True, False, False]
    relative = matrix_to_euler_degrees(_matrices(clamped.rotation) @ source.T)
    np.testing.assert_allclose(relative[:, 0], [-15.0, -10.0, 30.0], atol=1e-3)


def _matrices(axis_angles: np.ndarray) -> np.ndarray:
    from magicportrait.geometry.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(axis_angles.astype(np.float64))


def test_the_source_face_beyond_the_rendered_part_fades_into_the_backdrop_once_the_head_turns(tracker):
    """A 3/4 view's far eye and cheek edge, left to the 2D warp, showed as a ghost eye beside the turned face."""
    from dataclasses import replace as replaced

    from magicportrait.heads import MediaPipeHeadModel
    from magicportrait.pipelines.example import example_portrait
    from magicportrait.pipelines.geometric import GeometricGenerator, face_oval_mask
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.pipelines.stages import prepare_source

    source = prepare_source(example_portrait(), tracker, MediaPipeHeadModel(), GuideConfig(size=256,
                                                                                          show_progress=False))
    generator = GeometricGenerator(MediaPipeHeadModel(), source)
    oval = face_oval_mask(source.track.landmarks[0], (256, 256))
    assert 0.1 < oval.mean() < 0.5 and generator.beyond_face[~oval].max() <= 1.0
    # what the fade may touch: the outline's rim beyond the rendered part, never the rendered face's core
    assert generator.beyond_face[generator.source_face >= 1.0].max() == 0.0
    turned = euler_degrees_to_matrix(np.array([10.0, 0, 0])) @ generator.source_rotation
    head = replaced(source.head, rotation=np.stack([source.head.rotation[0],
                                                    matrix_to_axis_angle(turned)]).astype(np.float32))
    np.testing.assert_allclose(generator._turn_degrees(head), [0.0, 10.0], atol=1e-3)
    nothing = np.zeros((256, 256), bool)  # no rendered face covers anything: the backdrop shows where it fades
    still = generator._background(nothing, generator.source_points, turn=0.0)[0]
    faded = generator._background(nothing, generator.source_points, turn=10.0)[0]
    rim = generator.beyond_face > 0.5
    changed = np.abs(faded.astype(float) - still.astype(float)).max(axis=-1) > 2
    import cv2

    reach = cv2.dilate((generator.beyond_face > 0).astype(np.uint8), np.ones((11, 11), np.uint8))  # + the feather
    assert changed.any() and not changed[reach == 0].any()  # nothing else changes
    assert rim.any()
    backdrop = generator.backdrop[rim].astype(float)
    # on the rim (a few px wide on this frontal portrait, so the feathered weight stays well below 1) the result
    # moves toward the backdrop (measured: 17 grey levels from it instead of 21)
    assert np.abs(faded[rim] - backdrop).mean() < 0.85 * np.abs(still[rim] - backdrop).mean()
