"""Closed loop for FLAME through the real tracker: the bundled example (the astronaut portrait re-rendered with a
known head turn, nod, tilt, jaw opening and brow raise) is written as a video, tracked with MediaPipe, mapped into
the guide pipeline's 512x512 face crop and fitted with the shared partial FLAME model (60 identity components, no
expression basis).

The example's truth lives on MediaPipe's own mesh, not on FLAME, so the fit cannot match it exactly: the bounds
below are the measured values plus a margin, and they say what the partial model achieves (the 1.5 px target of
the issue is not met in this crop; see docs/benchmarks.md). Rotations are compared relative to frame 0, so the two
models' different rest frames cancel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_euler_degrees
from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel
from magicportrait.heads.mediapipe_topology import IRIS_POINTS, landmark_groups
from magicportrait.io.image import load_image
from magicportrait.io.video import iter_frames
from magicportrait.pipelines.example import (
    EXAMPLE_FPS,
    EXAMPLE_NUM_FRAMES,
    example_head_track,
    example_motion,
    write_example,
)
from magicportrait.tracking import FaceTracker, TrackerConfig
from magicportrait.tracking.boxes import crop_matrix, crop_track
from magicportrait.types import HeadTrack, Track
from shared_paths import PARTIAL_MODEL, needs_partial_flame

CROP_SIZE = 512
NUM_FRAMES = EXAMPLE_NUM_FRAMES  # 50: yaw up to 18 degrees, pitch up to 8, roll up to 3

pytestmark = needs_partial_flame


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> dict:
    """The example's driving video tracked, and the renderer's exact landmarks, both in the guide's 512 crop."""
    source_path, driving_path = write_example(tmp_path_factory.mktemp("flame_closed_loop"), num_frames=NUM_FRAMES)
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        source = tracker.track_image(load_image(source_path))
        tracked = tracker.track_frames(iter_frames(driving_path), fps=EXAMPLE_FPS)
    mediapipe = MediaPipeHeadModel()
    motion = example_motion(NUM_FRAMES)
    rendered = mediapipe.posed_vertices(example_head_track(mediapipe.fit(source), motion)).astype(np.float32)
    rendered_track = Track(landmarks=rendered, boxes=tracked.boxes, detected=np.ones(NUM_FRAMES, bool),
                           fps=EXAMPLE_FPS, image_size=tracked.image_size)
    matrix = crop_matrix(source.boxes[0], CROP_SIZE)  # what the guide pipeline does to the portrait
    return {"tracked": crop_track(tracked, matrix, CROP_SIZE), "motion": motion,
            "rendered": crop_track(rendered_track, matrix, CROP_SIZE)}


@pytest.fixture(scope="module")
def model():
    from magicportrait.heads.flame_head import FlameHeadModel

    torch.set_num_threads(2)
    return FlameHeadModel.from_file(PARTIAL_MODEL)


@pytest.fixture(scope="module")
def head(model, example) -> HeadTrack:
    return model.fit(example["tracked"])


def reprojection_errors(model, head: HeadTrack, track: Track) -> np.ndarray:
    """`(T, 478)` 2D distances (px) between the fitted FLAME landmarks and the track's."""
    fitted = model.landmarks(model.posed_vertices(head).astype(np.float64))
    return np.linalg.norm(fitted[..., :2] - track.landmarks[..., :2], axis=-1)


def relative_rotation_errors(head: HeadTrack, relative_truth: np.ndarray) -> np.ndarray:
    """Per-frame angle (deg) between the fitted rotation relative to frame 0 and the known relative rotation."""
    from magicportrait.heads.flame_head import rotation_error_degrees

    matrices = axis_angle_to_matrix(head.rotation.astype(np.float64))
    relative = matrix_to_axis_angle(matrices @ matrices[0].T)
    return rotation_error_degrees(relative, matrix_to_axis_angle(relative_truth))


def test_example_is_tracked_in_the_512_face_crop(example):
    tracked = example["tracked"]
    assert tracked.detected.all()
    assert tracked.image_size == (CROP_SIZE, CROP_SIZE)
    width = np.ptp(tracked.landmarks[:, :, 0], axis=1)
    assert 190 < width.min() and width.max() < 250  # measured 217-228 px: the face fills ~43% of the crop width


def test_reprojection_error_per_landmark_group(model, head, example):
    errors = reprojection_errors(model, head, example["tracked"])
    oval = np.zeros(errors.shape[1], bool)
    oval[landmark_groups()["face_oval"]] = True
    # Measured (px at the 512 crop; / 2.41 for the 512x512 example frame): 3.24 all 478, 3.15 non-oval, 4.39 oval,
    # 1.44 iris. Mostly a constant shape mismatch (no expression basis: the portrait smiles with the teeth showing)
    # and the embedding's own spread (~3.1 px at this face size), not tracking noise.
    assert errors.mean() < 3.6
    assert errors[:, ~oval].mean() < 3.5
    assert errors[:, list(IRIS_POINTS)].mean() < 1.8
    assert errors[:, oval].mean() < 4.9
    np.testing.assert_allclose(head.residual, errors.mean(axis=1), atol=0.05)


def test_relative_rotation_follows_the_known_motion(head, example):
    motion = example["motion"]
    errors = relative_rotation_errors(head, motion.relative_rotation)
    # Measured: 4.2 deg mean, 6.6 max. MediaPipe's landmarks lean toward a frontal face (on the renderer's exact
    # landmarks the error is 0.8 deg, below), so yaw and pitch come out smaller than they are.
    assert errors.mean() < 4.8
    assert errors.max() < 7.5
    matrices = axis_angle_to_matrix(head.rotation.astype(np.float64))
    yaw = matrix_to_euler_degrees(matrices @ matrices[0].T)[:, 0]
    assert np.corrcoef(yaw, motion.euler_degrees[:, 0])[0, 1] > 0.98
    assert 0.55 < np.abs(yaw).max() / np.abs(motion.euler_degrees[:, 0]).max() < 1.05  # measured 0.79


def test_fit_of_the_rendered_landmarks_isolates_the_fitter(model, example):
    # The renderer's exact landmarks (no tracker): what is left is the fitter and the model mismatch. (With 100
    # identity iterations instead of 300 this was 2.4 deg mean: the identity stage had not converged.)
    rendered = example["rendered"]
    head = model.fit(rendered)
    errors = relative_rotation_errors(head, example["motion"].relative_rotation)
    assert errors.mean() < 1.3 and errors.max() < 1.8  # measured 0.79 mean, 1.13 max
    assert reprojection_errors(model, head, rendered).mean() < 3.6  # measured 3.24


def test_jaw_opens_with_the_known_jaw(head, example):
    jaw = np.degrees(head.joint_rotations[:, 1, 0])
    true_jaw = example["motion"].jaw_open_degrees
    # Measured: correlation 0.80; 3.3 deg open, 0.0 closed. The angles are not comparable: the example turns the
    # lower face about its own hinge (14 deg drops the chin ~17 px here), which FLAME's jaw joint matches with ~7 deg
    # on the renderer's landmarks; MediaPipe reports ~65% of that chin drop, and without an expression basis the
    # fit cannot part the lips further than the jaw does.
    assert np.corrcoef(jaw, true_jaw)[0, 1] > 0.7
    assert jaw[true_jaw > 10].mean() > jaw[true_jaw < 0.5].mean() + 2.0
