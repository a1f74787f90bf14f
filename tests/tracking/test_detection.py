"""Every face found: tilted heads (the detector on rotated copies, Face Mesh on upright crops), --face-box for a face
given by hand, and `magicportrait faces`.

The group picture: the bundled portrait tilted by +40 degrees on the left, the same portrait mirrored and tilted by
-35 degrees in the middle, and an upright copy at 0.6x on the right, on a grey canvas. Before the rotated detection
the two tilted faces were not found at all (Face Mesh and the full-range detector both miss a head tilted that much).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magicportrait.cli.main import main
from magicportrait.errors import InputError, NoFaceError
from magicportrait.pipelines.example import example_portrait
from magicportrait.pipelines.faces import draw_faces, find_portrait_faces
from magicportrait.tracking import crop_matrix, landmark_bboxes, transform_points
from magicportrait.tracking.boxes import parse_face_box
from magicportrait.tracking.detection import FaceDetection, rotation_canvas, upright_crop_matrix

NOSE_TIP = np.array([223.4, 130.0])  # landmark 1 in the 512 px portrait (see tests/tracking/test_tracking.py)
FACE_CENTRE = np.array([225.0, 120.0])  # about the middle of its face, for placing the copies
WIDTH, HEIGHT = 1500, 700
PLACEMENTS = ((+40.0, 1.0, False, (260, 330)), (-35.0, 1.0, True, (760, 330)), (0.0, 0.6, False, (1240, 300)))


def _placed(portrait: np.ndarray, degrees: float, scale: float, at: tuple[int, int]) -> np.ndarray:
    """The (2, 3) map of portrait pixels onto the canvas: rotate about the face centre, scale, move it to ``at``."""
    matrix = cv2.getRotationMatrix2D(tuple(FACE_CENTRE), degrees, scale)
    matrix[:, 2] += np.asarray(at, float) - FACE_CENTRE
    return matrix


@pytest.fixture(scope="module")
def group() -> tuple[np.ndarray, list[np.ndarray]]:
    """The canvas and where each copy's nose tip lies on it (left to right)."""
    canvas = np.full((HEIGHT, WIDTH, 3), 118, np.uint8)
    noses = []
    for degrees, scale, mirrored, at in PLACEMENTS:
        portrait = example_portrait()[:, ::-1] if mirrored else example_portrait()
        nose = np.array([511.0 - NOSE_TIP[0], NOSE_TIP[1]]) if mirrored else NOSE_TIP
        matrix = _placed(portrait, degrees, scale, at)
        mask = np.zeros((512, 512), np.uint8)
        cv2.circle(mask, tuple(FACE_CENTRE.astype(int)), 200, 255, -1)  # a round cut-out: no straight photo edges
        layer = cv2.warpAffine(portrait, matrix, (WIDTH, HEIGHT))
        alpha = cv2.warpAffine(mask, matrix, (WIDTH, HEIGHT))[..., None] / 255.0
        canvas = (canvas * (1 - alpha) + layer * alpha).astype(np.uint8)
        noses.append(transform_points(nose, matrix))
    return canvas, noses


def test_tilted_and_small_faces_are_all_found_left_to_right(tracker, group):
    canvas, noses = group
    faces = tracker.find_faces(canvas, source="group.png")
    assert len(faces) == 3
    for face, nose in zip(faces, noses, strict=True):
        assert np.linalg.norm(face[1, :2] - nose) < 8.0  # the nose tip where the copy put it
    eye_lines = [np.degrees(np.arctan2(*(f[263, 1::-1] - f[33, 1::-1]))) for f in faces]
    np.testing.assert_allclose(eye_lines, [-40.0, 35.0, 0.0], atol=6.0)  # the tilt is measured, not undone


def test_no_faces_in_a_textured_image(tracker):
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8), (900, 600), interpolation=cv2.INTER_CUBIC)
    stripes = np.where((np.arange(900) // 40 % 2 == 0)[None, :, None], texture, 255 - texture).astype(np.uint8)
    assert tracker.find_faces(stripes) == []


def test_upright_crop_levels_the_eyes_and_matches_crop_matrix_without_tilt():
    center, side = np.array([300.0, 200.0]), 180.0
    np.testing.assert_allclose(upright_crop_matrix(center, side, 0.0, 256),
                               crop_matrix(np.array([*center, side]), 256), atol=1e-12)
    eyes = np.array([[260.0, 180.0], [260.0 + 80 * np.cos(0.5), 180.0 + 80 * np.sin(0.5)]])
    detection = FaceDetection(box=np.array([210.0, 110.0, 390.0, 290.0]), eyes=eyes, score=0.9)
    assert detection.roll_degrees == pytest.approx(np.degrees(0.5))
    level = transform_points(eyes, upright_crop_matrix(center, side, detection.roll_degrees, 256))
    assert level[0, 1] == pytest.approx(level[1, 1], abs=1e-9)
    assert level[1, 0] - level[0, 0] == pytest.approx(80 * 256 / side)
    matrix, (width, height) = rotation_canvas((100, 200), 90.0)
    assert (width, height) == (100, 200)
    corners = transform_points(np.array([[0.0, 0.0], [200.0, 100.0]]), matrix)
    np.testing.assert_allclose(np.sort(corners, axis=0), [[0.0, 0.0], [100.0, 200.0]], atol=1e-9)


def test_face_box_takes_the_face_inside_it(tracker, group):
    canvas, noses = group
    faces = tracker.find_faces(canvas)
    x0, y0, x1, y1 = landmark_bboxes(faces[1])
    track = tracker.track_image(canvas, face_box=(x0 - 10, y0 - 10, x1 - x0 + 20, y1 - y0 + 20))
    assert track.num_faces.tolist() == [1]
    assert np.linalg.norm(track.landmarks[0, 1, :2] - noses[1]) < 8.0
    with pytest.raises(NoFaceError, match="no face found inside --face-box 20,20,150,150"):
        tracker.track_image(canvas, face_box=(20, 20, 150, 150))
    with pytest.raises(InputError, match="lies outside"):
        tracker.track_image(canvas, face_box=(2000, 10, 50, 50))


@pytest.mark.parametrize("text, message", [("1,2,3", "four numbers"), ("a,b,c,d", "four numbers"),
                                           ("10,10,0,20", "must be positive"), ("10,10,nan,20", "finite")])
def test_bad_face_box_is_an_input_error(text, message):
    with pytest.raises(InputError, match=message):
        parse_face_box(text)
    assert parse_face_box(" 10, 20,30.5,40") == (10.0, 20.0, 30.5, 40.0)


def test_faces_command_writes_the_numbered_picture(tmp_path, capsys, group):
    canvas, _ = group
    image = tmp_path / "group.png"
    cv2.imwrite(str(image), canvas[..., ::-1])
    out = tmp_path / "faces.png"
    assert main(["faces", str(image), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Found 3 faces in {image}" in printed and printed.count("--face-box ") == 3
    drawn = cv2.imread(str(out))[..., ::-1]
    found = find_portrait_faces(canvas)
    np.testing.assert_array_equal(drawn, draw_faces(canvas, found))  # PNG: what was drawn, exactly
    x, y, w, h = found[2].box
    assert tuple(drawn[y + h // 2, x]) == (41, 182, 246)  # face 2's box edge, in its colour
    assert f"--face 2   --face-box {x},{y},{w},{h}" in printed


def test_faces_command_refuses_faceless_images_and_non_image_outputs(tmp_path, capsys):
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((300, 300, 3), 128, np.uint8))
    assert main(["faces", str(grey), "-o", str(tmp_path / "faces.png")]) == 2
    assert "error: No face found in" in capsys.readouterr().err and not (tmp_path / "faces.png").exists()
    assert main(["faces", str(grey), "-o", str(tmp_path / "faces.txt")]) == 2
    assert "give an image file name" in capsys.readouterr().err


def test_guide_face_box_crops_that_face(tracker, group):
    from magicportrait.heads import MediaPipeHeadModel
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.pipelines.stages import prepare_source

    canvas, noses = group
    x0, y0, x1, y1 = landmark_bboxes(tracker.find_faces(canvas)[2])
    config = GuideConfig(size=256, face_box=f"{x0:.0f},{y0:.0f},{x1 - x0:.0f},{y1 - y0:.0f}", show_progress=False)
    source = prepare_source(canvas, tracker, MediaPipeHeadModel(), config)
    nose = transform_points(noses[2], source.crop_matrix)
    assert abs(nose[0] - 128.0) < 20.0  # the small right-hand face is the one cropped
    np.testing.assert_allclose(source.track.landmarks[0, 1, :2], nose, atol=6.0)
    with pytest.raises(InputError, match="--face and --face-box both choose the face"):
        GuideConfig(face=0, face_box="1,2,3,4")
    with pytest.raises(InputError, match="--face-box takes four numbers"):
        GuideConfig(face_box="1,2")


def test_a_fit_far_from_the_detector_box_is_measured_again():
    from magicportrait.tracking.detection import fitted_badly

    square = np.array([[x, y, 0.0] for x in (0.0, 100.0) for y in (0.0, 100.0)] * 2, np.float32)
    good = FaceDetection(box=np.array([5.0, 5.0, 95.0, 95.0]), eyes=np.array([[30.0, 40], [70.0, 40]]), score=0.9)
    assert not fitted_badly(square, good)  # landmark box 1.1x the detector's: a normal fit
    small = FaceDetection(box=np.array([30.0, 30.0, 90.0, 90.0]), eyes=good.eyes, score=0.9)
    assert fitted_badly(square, small)  # 1.67x: the mesh reached over something beside the face
    assert fitted_badly(square * 0.5, good)  # 0.56x: it fitted a part of the face
