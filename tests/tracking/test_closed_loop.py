"""Closed loop: render a known motion of the bundled portrait, track it, and compare with the truth."""

import numpy as np
import pytest

from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_euler_degrees, rotation_angle_degrees
from magicportrait.heads import MediaPipeHeadModel
from magicportrait.pipelines.example import (
    example_head_track,
    example_motion,
    example_portrait,
    render_example_frames,
)
from magicportrait.tracking import FaceTracker, TrackerConfig


@pytest.fixture(scope="module")
def closed_loop():
    portrait = example_portrait()
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        source_track = tracker.track_image(portrait)
    model = MediaPipeHeadModel(neutral="first")
    source = model.fit(source_track)
    motion = example_motion()
    truth = example_head_track(source, motion)
    frames = list(render_example_frames(portrait, source_track.landmarks[0], truth, model))
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        track = tracker.track_frames(frames, fps=25.0)
    return model, motion, truth, track, model.fit(track), frames, portrait


def test_first_frame_reproduces_the_portrait(closed_loop):
    *_, frames, portrait = closed_loop
    mse = np.mean((frames[0].astype(float) - portrait) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # no video coding here, only texture resampling


def test_recovered_rotation_matches_the_known_motion(closed_loop):
    _, motion, _, track, head, *_ = closed_loop
    assert track.detected.all()
    rotation = axis_angle_to_matrix(head.rotation)
    relative = rotation @ rotation[0].T
    error = rotation_angle_degrees(relative, motion.relative_rotation)
    # Measured: mean 2.8, max 5.8 degrees for yaw up to 18, pitch up to 8 degrees.
    assert error.mean() < 4.0
    assert error.max() < 8.0
    yaw = matrix_to_euler_degrees(relative)[:, 0]
    true_yaw = motion.euler_degrees[:, 0]
    assert np.corrcoef(yaw, true_yaw)[0, 1] > 0.98
    assert 0.8 < np.abs(yaw).max() / np.abs(true_yaw).max() < 1.1


def test_tracked_landmarks_match_the_rendered_truth(closed_loop):
    model, _, truth, track, *_ = closed_loop
    expected = model.posed_vertices(truth)[:, :468, :2]
    distance = np.linalg.norm(track.landmarks[:, :468, :2] - expected, axis=-1)
    # Measured: 1.26 px mean, worst frame 1.8 px mean, on a face ~150 px wide.
    assert distance.mean() < 2.0
    assert distance.mean(axis=1).max() < 3.0


def test_jaw_opening_is_tracked(closed_loop):
    model, _, truth, track, *_ = closed_loop
    expected = model.posed_vertices(truth)
    gap = np.linalg.norm(track.landmarks[:, 14, :2] - track.landmarks[:, 13, :2], axis=-1)
    true_gap = np.linalg.norm(expected[:, 14, :2] - expected[:, 13, :2], axis=-1)
    assert true_gap.max() > 2 * true_gap.min()  # the example really opens the mouth
    assert np.corrcoef(gap, true_gap)[0, 1] > 0.95
    assert np.abs(gap - true_gap).max() < 2.5
