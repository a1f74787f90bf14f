"""The artefact score on a real face: an inserted glitch frame and a pasted mirrored eye are flagged, a clean
smoothly moving video is not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magicportrait.evaluation.artefacts import artefact_score
from magicportrait.heads.mediapipe_topology import RIGHT_EYE_LOOP
from magicportrait.io.image import load_image

NUM_FRAMES = 16
GLITCH, DUPLICATES = 5, (10, 11, 12)


@pytest.fixture(scope="module")
def moving(example, tracker):
    """The example portrait moved smoothly (a real face, no artefact by construction) and its tracked landmarks."""
    portrait = load_image(example[0])
    height, width = portrait.shape[:2]
    frames = []
    for t in range(NUM_FRAMES):
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 4 * np.sin(t / 3), 1 + 0.03 * np.sin(t / 4))
        matrix[:, 2] += (1.5 * t, 0.5 * t)
        frames.append(cv2.warpAffine(portrait, matrix, (width, height), borderMode=cv2.BORDER_REFLECT))
    frames = np.stack(frames)
    source_landmarks = tracker.track_image(portrait).landmarks[0]
    return portrait, source_landmarks, frames, tracker.track_frames(frames, fps=25.0).landmarks


def test_a_clean_smooth_video_flags_nothing(moving):
    portrait, source_landmarks, frames, landmarks = moving
    report = artefact_score(frames, landmarks, portrait, source_landmarks)
    assert report.flagged_frames == [] and report.artefact_frames == 0.0
    assert report.duplication.max() < 0.2  # the threshold is 0.4
    assert not report.temporal_outlier.any()  # the portrait moves by up to 16 grey levels against the mean, smoothly


def test_an_inserted_glitch_frame_is_flagged(moving):
    portrait, source_landmarks, frames, landmarks = moving
    glitched = frames.copy()
    glitched[GLITCH] = frames[GLITCH + 6]  # a frame from elsewhere in the sequence: the face jumps and back
    report = artefact_score(glitched, landmarks, portrait, source_landmarks)
    assert np.flatnonzero(report.temporal_outlier).tolist() == [GLITCH]  # its neighbours are not flagged
    assert report.temporal_change[GLITCH] > 1.5 * report.temporal_change[GLITCH + 1]  # measured 56 vs 32


def _paste_mirrored_eye(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` with its right eye (and brow) mirrored and pasted onto the cheek below it: a second
    eye, as a bad mirror fill paints one."""
    eye = points[list(RIGHT_EYE_LOOP), :2]
    (x0, y0), (x1, y1) = eye.min(axis=0), eye.max(axis=0)
    pad_x, pad_y = 0.25 * (x1 - x0), 1.0 * (y1 - y0)
    x0, x1, y0, y1 = int(x0 - pad_x), int(x1 + pad_x), int(y0 - 1.5 * pad_y), int(y1 + pad_y)
    patch = frame[y0:y1, x0:x1][:, ::-1]
    out = frame.copy()
    shift = int(1.1 * (y1 - y0))
    out[y0 + shift:y1 + shift, x0:x1] = patch
    return out


def test_a_pasted_mirrored_eye_is_flagged(moving):
    portrait, source_landmarks, frames, landmarks = moving
    doubled = frames.copy()
    for index in DUPLICATES:
        doubled[index] = _paste_mirrored_eye(frames[index], landmarks[index])
    report = artefact_score(doubled, landmarks, portrait, source_landmarks)
    assert np.flatnonzero(report.duplicated).tolist() == list(DUPLICATES)
    assert report.duplication[list(DUPLICATES)].min() > 0.6
    assert report.flagged_frames == list(DUPLICATES) and report.artefact_frames == pytest.approx(3 / NUM_FRAMES)


def _turned_canonical_face(yaw_degrees: float) -> np.ndarray:
    """The canonical face mesh turned about its vertical axis and seen orthographically: `(478, 3)` image
    landmarks, z smaller = nearer (as Face Mesh gives them)."""
    from magicportrait.heads.mediapipe_mesh import load_canonical_face

    points = load_canonical_face()[0].astype(np.float64) * 12.0
    angle = np.deg2rad(yaw_degrees)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    turned = points @ rotation.T
    return turned + np.array([256.0, 256.0, 0.0])


def test_the_part_of_the_face_a_turned_nose_hides_is_not_compared():
    """Turned 35 degrees, the nose covers a strip of the far cheek beside it, which faces the camera all the same:
    that strip (and nothing on the near side) is left out of the comparison; a frontal face hides nothing."""
    from magicportrait.evaluation.artefacts import FrontalWarp

    warp = FrontalWarp(128)
    np.testing.assert_array_equal(warp.visible(_turned_canonical_face(0.0)), warp.inside)
    np.testing.assert_array_equal(warp.visible(_turned_canonical_face(35.0)[:, :2]), warp.inside)  # no depth: all
    far_sides = []
    for yaw in (35.0, -35.0):
        landmarks = _turned_canonical_face(yaw)
        hidden = warp.inside & warp.facing(landmarks) & ~warp.visible(landmarks)  # faces the camera, yet covered
        _, columns = np.nonzero(hidden)
        assert 30 < len(columns) < 0.1 * warp.inside.sum()
        far_sides.append((columns < warp.size / 2).mean())  # the layout's nose line is its middle column
    assert far_sides[0] > 0.95 and far_sides[1] < 0.05  # always beside the nose on the far side, mirrored
