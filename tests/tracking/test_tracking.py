"""Tests of the face tracking stage on skimage's astronaut portrait (512x512, face at about x 160-290, y 40-210)."""

import sys

import cv2
import numpy as np
import pytest
from skimage import data

from magicportrait.errors import DependencyError, InputError, NoFaceError
from magicportrait.tracking import (
    FaceSelector,
    FaceTracker,
    TrackerConfig,
    crop_image,
    crop_matrix,
    interpolate_missing,
    invert_affine,
    landmark_bboxes,
    smooth_boxes,
    square_boxes_from_landmarks,
    transform_points,
)
from magicportrait.types import Track

NOSE_TIP = np.array([223.4, 130.0])  # landmark 1 on the astronaut, measured once with MediaPipe 0.10.21
FACE_REGION = (160, 40, 290, 210)  # x0, y0, x1, y1 of the astronaut's face (generous)
HEAD_CROP = (slice(0, 280), slice(110, 350))  # rows, columns of the astronaut holding her head (280x240)
GREY = 110


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def reference(tracker, astronaut) -> np.ndarray:
    """Landmarks of the plain astronaut image, (478, 3)."""
    return tracker.track_image(astronaut).landmarks[0]


def _canvas(height: int, width: int, heads: list[tuple[int, int, float]], astronaut: np.ndarray) -> np.ndarray:
    """A grey canvas with the astronaut's head pasted at (x, y) scaled by s, for each (x, y, s)."""
    canvas = np.full((height, width, 3), GREY, np.uint8)
    for x, y, scale in heads:
        head = cv2.resize(astronaut[HEAD_CROP], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas[y:y + head.shape[0], x:x + head.shape[1]] = head
    return canvas


def _inside(landmarks: np.ndarray, region: tuple[float, float, float, float]) -> bool:
    x0, y0, x1, y1 = region
    xy = landmarks[..., :2]
    return bool(((xy[..., 0] >= x0) & (xy[..., 0] <= x1) & (xy[..., 1] >= y0) & (xy[..., 1] <= y1)).all())


# ------------------------------------------------------------------------------------------- single image


def test_astronaut_image_landmarks(tracker, astronaut):
    track = tracker.track_image(astronaut, source="astronaut")
    assert track.landmarks.shape == (1, 478, 3) and track.landmarks.dtype == np.float32
    assert track.num_frames == 1 and track.fps == 0.0 and track.image_size == (512, 512)
    assert track.detected.tolist() == [True] and track.num_faces.tolist() == [1]
    assert _inside(track.landmarks, FACE_REGION)
    assert np.linalg.norm(track.landmarks[0, 1, :2] - NOSE_TIP) < 3.0
    # 33 is the subject's right eye outer corner: on the image's left; 263 (her left eye) on the right.
    right_eye, left_eye = track.landmarks[0, 33], track.landmarks[0, 263]
    assert right_eye[0] < NOSE_TIP[0] - 15 < NOSE_TIP[0] + 15 < left_eye[0]
    assert abs(right_eye[1] - left_eye[1]) < 10 and right_eye[1] < NOSE_TIP[1]


def test_no_face_raises(tracker):
    grey = np.full((256, 256, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for image in (grey, noise):
        with pytest.raises(NoFaceError, match="noface.png.*too small.*60 degrees"):
            tracker.track_image(image, source="noface.png")
    with pytest.raises(NoFaceError, match="clip.mp4"):
        tracker.track_frames([grey] * 3, fps=25.0, source="clip.mp4")


def test_tiny_image_error_mentions_its_size(tracker, astronaut):
    tiny = cv2.resize(astronaut, (64, 64), interpolation=cv2.INTER_AREA)  # the face is ~13 px across
    with pytest.raises(NoFaceError, match=r"64x64 px.*only 1\d px across"):
        tracker.track_image(tiny)


@pytest.mark.parametrize("scale, fallback", [(4.0, False), (2.0, True)])  # found by Face Mesh / by the rescue
def test_large_frame_is_tracked_at_working_size_in_full_resolution_pixels(astronaut, reference, scale, fallback):
    big = np.full((3000, 3000, 3), 90, np.uint8)
    offset = np.array([200.0, 100.0])
    pasted = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)[:2900, :2800]
    big[100:100 + pasted.shape[0], 200:200 + pasted.shape[1]] = pasted
    config = TrackerConfig(show_progress=False, max_working_size=1280, detection_fallback=fallback)
    with FaceTracker(config) as face_tracker:
        working_sizes = []
        working_frame = face_tracker._working_frame
        face_tracker._working_frame = lambda frame: working_sizes.append(frame.shape) or working_frame(frame)
        track = face_tracker.track_frames([big, big], fps=30.0)
        assert working_frame(big).shape == (1280, 1280, 3) and working_sizes[0] == big.shape
    assert track.image_size == (3000, 3000) and track.detected.all()
    expected = reference[:, :2] * scale + offset  # resizing by s maps image-space x to s * x exactly
    error = np.linalg.norm(track.landmarks[:, :, :2] - expected, axis=-1).mean()
    assert error / scale < 2.0  # within 2 px of the astronaut's own 512 px scale


def test_detection_fallback_finds_a_small_face(astronaut, reference):
    # A 102 px face in a 1280 px frame: Face Mesh's short-range detector misses it, the full-range one does not.
    canvas = np.full((1280, 1280, 3), 100, np.uint8)
    canvas[300:710, 500:910] = cv2.resize(astronaut, (410, 410), interpolation=cv2.INTER_AREA)
    scale = 410 / 512
    with FaceTracker(TrackerConfig(show_progress=False, detection_fallback=False)) as face_tracker:
        with pytest.raises(NoFaceError):
            face_tracker.track_image(canvas)
    with FaceTracker(TrackerConfig(show_progress=False)) as face_tracker:
        track = face_tracker.track_image(canvas)
    expected = reference[:, :2] * scale + np.array([500.0, 300.0])
    assert np.linalg.norm(track.landmarks[0, :, :2] - expected, axis=-1).mean() < 3.0


# ----------------------------------------------------------------------------------------------- videos


def test_translation_equivariance(tracker, astronaut):
    offsets = np.array([(7 * i, 5 * i) for i in range(10)])
    frames = []
    for dx, dy in offsets:
        frame = np.full((600, 640, 3), GREY, np.uint8)
        frame[dy:dy + 512, dx:dx + 512] = astronaut
        frames.append(frame)
    track = tracker.track_frames(iter(frames), fps=25.0, num_frames=10)
    assert track.detected.all() and track.image_size == (600, 640)
    unshifted = track.landmarks[:, :, :2] - offsets[:, None, :]
    errors = np.linalg.norm(unshifted - unshifted[0], axis=-1).mean(axis=1)
    assert errors.max() < 1.5


def test_rotation_equivariance(tracker, astronaut):
    center = (225.0, 125.0)
    angles = np.arange(10) * 3.0  # degrees, counter-clockwise on screen
    matrices = [cv2.getRotationMatrix2D(center, angle, 1.0) for angle in angles]
    frames = [cv2.warpAffine(astronaut, m, (512, 512), borderValue=(GREY, GREY, GREY)) for m in matrices]
    track = tracker.track_frames(frames, fps=25.0)
    for m, landmarks in zip(matrices, track.landmarks, strict=True):
        expected = transform_points(track.landmarks[0, :, :2], m)
        assert np.linalg.norm(landmarks[:, :2] - expected, axis=-1).mean() < 3.0
    # A real rotation: the eye line turns by the applied angle.
    eye_line = track.landmarks[-1, 263, :2] - track.landmarks[-1, 33, :2]
    eye_line_0 = track.landmarks[0, 263, :2] - track.landmarks[0, 33, :2]
    turned = np.degrees(np.arctan2(eye_line_0[1], eye_line_0[0]) - np.arctan2(eye_line[1], eye_line[0]))
    assert turned == pytest.approx(27.0, abs=2.0)


def test_lost_face_frames_are_interpolated(tracker, astronaut, caplog):
    frames = [_canvas(360, 400, [(60 + 4 * i, 40, 1.0)], astronaut) for i in range(12)]
    for i in range(4, 8):
        frames[i] = np.full_like(frames[i], 128)
    with caplog.at_level("WARNING"):
        track = tracker.track_frames(frames, fps=25.0, source="gap.mp4")
    assert track.detected.tolist() == [i not in range(4, 8) for i in range(12)]
    assert track.missing_frames.tolist() == [4, 5, 6, 7]
    assert track.num_faces[4:8].tolist() == [0, 0, 0, 0]
    start, end = track.landmarks[3].astype(np.float64), track.landmarks[8].astype(np.float64)
    for i in range(4, 8):
        np.testing.assert_allclose(track.landmarks[i], start + (i - 3) / 5 * (end - start), atol=1e-3)
    assert "gap.mp4" in caplog.text and "(4-7)" in caplog.text


def test_two_faces_the_most_prominent_is_picked(tracker, astronaut):
    for big_x, small_x in ((10, 390), (310, 10)):  # the big face on the left, then on the right
        canvas = _canvas(320, 560, [(big_x, 20, 1.0), (small_x, 40, 0.7)], astronaut)
        track = tracker.track_image(canvas)
        assert track.num_faces.tolist() == [2]
        assert _inside(track.landmarks, (big_x, 20, big_x + 240, 300))


def test_identity_is_kept_when_another_face_grows_larger(tracker, astronaut):
    # The tracked face stays at the left; the right one grows from 0.5x to 1.4x (larger than the first).
    frames = [_canvas(480, 800, [(20, 60, 1.0), (420, 20, 0.5 + 0.1 * i)], astronaut) for i in range(10)]
    track = tracker.track_frames(frames, fps=25.0)
    assert track.detected.all() and track.num_faces[-1] == 2
    assert _inside(track.landmarks, (20, 60, 260, 340))
    # Without the identity rule the last frame alone picks the other (now larger) face.
    assert landmark_bboxes(tracker.track_image(frames[-1]).landmarks[0])[0] > 420


def test_selector_treats_a_distant_face_as_missing_until_relock():
    selector = FaceSelector((480, 640), relock_after=3)
    tracked, other = np.array([100, 100, 220, 240]), np.array([450, 60, 530, 150])
    assert selector.pick([other, tracked]) == 1  # lock: the most prominent face
    selector.update(tracked)
    moved, other = tracked + 8, np.array([380, 40, 620, 320])  # the other face is now much larger
    assert selector.pick([other, moved]) == 1  # identity: the overlapping face, not the larger one
    selector.update(moved)
    for _ in range(3):
        assert selector.pick([other]) is None  # the tracked face is gone: missing, no jump
        selector.update(None)
    assert selector.pick([other]) == 0  # after relock_after missing frames: lock onto the other face


def test_selector_ignores_faces_below_the_minimum_size():
    selector = FaceSelector((480, 640), relock_after=3, min_size=32)
    assert selector.pick([np.array([10, 10, 30, 35])]) is None
    assert selector.largest_too_small == 25


def test_frames_must_be_valid(tracker, astronaut):
    with pytest.raises(InputError, match="no frames"):
        tracker.track_frames([], fps=25.0)
    with pytest.raises(InputError, match="frame 1"):
        tracker.track_frames([astronaut, astronaut[:256]], fps=25.0)
    with pytest.raises(InputError, match="uint8"):
        tracker.track_frames([astronaut.astype(np.float32)], fps=25.0)
    with pytest.raises(InputError, match="frame rate"):
        tracker.track_frames([astronaut], fps=0.0)


def test_missing_mediapipe_raises_dependency_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)  # makes the import fail
    with pytest.raises(DependencyError, match=r"pip install --no-deps mediapipe==0\.10\.21"):
        FaceTracker()


def test_track_save_load_round_trip(tracker, astronaut, tmp_path):
    frames = [_canvas(360, 400, [(60 + 4 * i, 40, 1.0)], astronaut) for i in range(3)]
    track = tracker.track_frames(frames, fps=24.0, source="clip.mp4")
    loaded = Track.load(track.save(tmp_path / "track.npz"))
    for name in ("landmarks", "boxes", "detected", "num_faces"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(track, name))
    assert (loaded.fps, loaded.image_size, loaded.source) == (24.0, (360, 400), "clip.mp4")


# ------------------------------------------------------------------------------------------------ boxes


def test_square_box_known_values():
    landmarks = np.zeros((1, 478, 3), np.float32)
    landmarks[0, :, 0] = np.linspace(100, 200, 478)
    landmarks[0, :, 1] = np.linspace(50, 170, 478)
    box = square_boxes_from_landmarks(landmarks, scale=2.0, shift_up=0.1)[0]
    np.testing.assert_allclose(box, [150.0, 110.0 - 12.0, 240.0], atol=1e-4)


def test_boxes_are_square_and_contain_the_landmarks(tracker, astronaut):
    frames = [_canvas(360, 400, [(60 + 4 * i, 40, 1.0)], astronaut) for i in range(5)]
    track = tracker.track_frames(frames, fps=25.0)
    assert track.boxes.shape == (5, 3) and track.boxes.dtype == np.float32
    half = track.boxes[:, 2:3] / 2
    low, high = track.boxes[:, None, :2] - half[:, None], track.boxes[:, None, :2] + half[:, None]
    assert ((track.landmarks[:, :, :2] > low) & (track.landmarks[:, :, :2] < high)).all()
    assert np.diff(track.boxes[:, 0]).min() > 2.0  # the box follows the face (4 px per frame)


def test_box_smoothing_reduces_jitter_and_keeps_linear_motion():
    t = np.arange(120, dtype=np.float64)
    truth = np.column_stack([200 + 1.5 * t, 150 + 0.5 * t, np.full_like(t, 180.0)])
    np.testing.assert_allclose(smooth_boxes(truth, fps=30.0, strength=0.5), truth, rtol=1e-5)
    jittered = truth + np.random.default_rng(0).normal(scale=[3.0, 3.0, 4.0], size=truth.shape)
    smoothed = smooth_boxes(jittered, fps=30.0, strength=0.5)
    jitter_before = np.diff(jittered - truth, axis=0).std(axis=0)
    jitter_after = np.diff(smoothed - truth, axis=0).std(axis=0)
    assert (jitter_after < 0.2 * jitter_before).all()
    np.testing.assert_array_equal(smooth_boxes(jittered, fps=30.0, strength=0.0), jittered.astype(np.float32))


def test_crop_matrix_crops_and_inverts_exactly():
    image = np.zeros((100, 120, 3), np.uint8)
    image[40, 70] = 255  # one bright pixel, centre at image-space (70.5, 40.5)
    box = np.array([60.0, 50.0, 40.0])
    matrix = crop_matrix(box, 80)  # 2x zoom
    crop = crop_image(image, box, 80, interpolation=cv2.INTER_NEAREST)
    spot = transform_points(np.array([70.5, 40.5]), matrix)
    np.testing.assert_allclose(spot, [2 * (70.5 - 40.0), 2 * (40.5 - 30.0)])  # (61, 21)
    rows, cols = np.nonzero(crop[..., 0])
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (20, 22, 60, 62)  # a 2x2 block around it
    back = invert_affine(matrix)
    np.testing.assert_allclose(back @ np.vstack([matrix, [0, 0, 1]]), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    points = np.random.default_rng(0).uniform(0, 100, (50, 3))
    np.testing.assert_allclose(transform_points(transform_points(points, matrix), back), points, atol=1e-9)
    restored = cv2.warpAffine(crop, back, (120, 100), flags=cv2.INTER_NEAREST)
    assert restored[40, 70, 0] == 255 and restored[..., 0].sum() == 255


def test_interpolate_missing_holds_the_ends():
    values = np.array([0.0, 0.0, 2.0, 0.0, 6.0, 0.0])[:, None]
    detected = np.array([False, False, True, False, True, False])
    np.testing.assert_allclose(interpolate_missing(values, detected)[:, 0], [2, 2, 2, 4, 6, 6])
