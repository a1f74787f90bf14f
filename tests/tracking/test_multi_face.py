"""Choosing one of several faces in the source portrait: FaceTracker.find_faces, track_image(face_index), --face N.

The image: the bundled portrait (512 px, face about 130 px across) on the left half of a 1100x600 canvas and a
mirrored copy scaled 0.8x on the right half. Both faces are too small for Face Mesh's own short-range detector
at this size, so this also covers finding several faces through the detector-crop rescue.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from magicportrait.errors import InputError, NoFaceError
from magicportrait.heads import MediaPipeHeadModel
from magicportrait.pipelines.example import example_portrait
from magicportrait.pipelines.guide import GuideConfig
from magicportrait.pipelines.stages import prepare_source
from magicportrait.tracking import landmark_bboxes, transform_points

WIDTH, HEIGHT, HALF = 1100, 600, 550
LEFT_AT, RIGHT_AT, RIGHT_SCALE = (20, 44), (620, 95), 0.8  # top-left corners (x, y) of the two portraits
NOSE_TIP = np.array([223.4, 130.0])  # landmark 1 in the 512 px portrait (see tests/test_tracking.py)


@pytest.fixture(scope="module")
def two_faces() -> np.ndarray:
    portrait = example_portrait()
    canvas = np.full((HEIGHT, WIDTH, 3), 110, np.uint8)
    x, y = LEFT_AT
    canvas[y:y + 512, x:x + 512] = portrait
    side = round(512 * RIGHT_SCALE)
    mirrored = cv2.resize(portrait[:, ::-1], (side, side), interpolation=cv2.INTER_AREA)
    x, y = RIGHT_AT
    canvas[y:y + side, x:x + side] = mirrored
    return canvas


def _expected_noses() -> tuple[np.ndarray, np.ndarray]:
    """Where the nose tip of the left and of the right (mirrored, scaled) face lies on the canvas."""
    left = NOSE_TIP + LEFT_AT
    # Mirroring maps x to 511 - x (pixel centres); resizing by s maps image-space x + 0.5 to s * (x + 0.5).
    mirrored = np.array([511.0 - NOSE_TIP[0], NOSE_TIP[1]])
    right = (mirrored + 0.5) * RIGHT_SCALE - 0.5 + RIGHT_AT
    return left, right


def _center_x(landmarks: np.ndarray) -> float:
    box = landmark_bboxes(landmarks)
    return float(box[0] + box[2]) / 2.0


def test_find_faces_finds_both_left_to_right(tracker, two_faces):
    faces = tracker.find_faces(two_faces, source="two.png")
    assert len(faces) == 2 and all(f.shape == (478, 3) and f.dtype == np.float32 for f in faces)
    centers = [_center_x(f) for f in faces]
    assert 0 < centers[0] < HALF < centers[1] < WIDTH
    left_nose, right_nose = _expected_noses()
    assert np.linalg.norm(faces[0][1, :2] - left_nose) < 4.0
    assert np.linalg.norm(faces[1][1, :2] - right_nose) < 4.0
    sizes = [np.ptp(f[:, 0]) for f in faces]
    assert sizes[1] / sizes[0] == pytest.approx(RIGHT_SCALE, abs=0.05)


def test_face_index_picks_that_face(tracker, two_faces):
    left_nose, right_nose = _expected_noses()
    right = tracker.track_image(two_faces, face_index=1)
    assert right.num_faces.tolist() == [2] and right.detected.tolist() == [True]
    assert HALF < _center_x(right.landmarks[0]) < WIDTH
    assert np.linalg.norm(right.landmarks[0, 1, :2] - right_nose) < 4.0
    left = tracker.track_image(two_faces, face_index=0)
    assert left.num_faces.tolist() == [2] and 0 < _center_x(left.landmarks[0]) < HALF
    assert np.linalg.norm(left.landmarks[0, 1, :2] - left_nose) < 4.0


def test_default_picks_the_larger_face_and_names_its_number(tracker, two_faces):
    track = tracker.track_image(two_faces)
    assert track.num_faces.tolist() == [2]
    assert np.linalg.norm(track.landmarks[0, 1, :2] - _expected_noses()[0]) < 4.0
    assert tracker.face_number(two_faces, track.landmarks[0]) == 0
    right = tracker.find_faces(two_faces)[1]
    assert tracker.face_number(two_faces, right) == 1
    assert tracker.face_number(two_faces, right + np.array([0.0, 300.0, 0.0], np.float32)) is None  # no such face


def test_bad_face_index_is_an_input_error(tracker, two_faces):
    with pytest.raises(InputError, match=r"two\.png: found 2 faces \(numbered 0\.\.1 from left to right\)"):
        tracker.track_image(two_faces, source="two.png", face_index=2)
    with pytest.raises(InputError, match="negative"):
        tracker.track_image(two_faces, face_index=-1)
    one_face = example_portrait()
    with pytest.raises(InputError, match=r"found 1 face \(numbered 0\.\.0"):
        tracker.track_image(one_face, face_index=1)
    with pytest.raises(NoFaceError, match="grey.png"):
        tracker.track_image(np.full((300, 300, 3), 128, np.uint8), source="grey.png", face_index=0)


@pytest.mark.parametrize("face, expected_number", [(1, 1), (None, 0)])
def test_prepare_source_crops_the_chosen_face(tracker, two_faces, caplog, face, expected_number):
    config = GuideConfig(size=256, face=face, show_progress=False)
    with caplog.at_level(logging.INFO, logger="magicportrait.pipelines.stages"):
        source = prepare_source(two_faces, tracker, MediaPipeHeadModel(), config, source_name="two.png")
    chosen = tracker.find_faces(two_faces)[expected_number]
    box = landmark_bboxes(chosen)
    center = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    # The crop box is centred a little above the landmark box centre (square_boxes_from_landmarks' shift_up).
    in_crop = transform_points(center, source.crop_matrix)
    assert abs(in_crop[0] - 128.0) < 8.0 and 128.0 < in_crop[1] < 128.0 + 0.2 * 256
    nose = transform_points(_expected_noses()[expected_number], source.crop_matrix)
    np.testing.assert_allclose(source.track.landmarks[0, 1, :2], nose, atol=4.0)
    assert f"2 faces found in two.png; using face {expected_number} (numbered from the left" in caplog.text
