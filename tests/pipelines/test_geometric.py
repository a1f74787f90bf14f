"""The instant geometric generator and ``animate``/``demo`` without weights, on the bundled example."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import numpy as np
import pytest

from magicportrait.alignment import limit_rotation
from magicportrait.cli.main import main
from magicportrait.geometry.rotations import (
    axis_angle_to_matrix,
    euler_degrees_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_degrees,
)
from magicportrait.heads import MediaPipeHeadModel
from magicportrait.io.video import iter_frames, probe_video
from magicportrait.pipelines.animate import AnimateConfig, GeometricPipeline
from magicportrait.pipelines.example import example_motion, example_portrait
from magicportrait.pipelines.geometric import GeometricConfig, GeometricGenerator, eye_openness, source_warnings
from magicportrait.pipelines.guide import GuideConfig
from magicportrait.pipelines.stages import Motion, align_motion, prepare_source
from magicportrait.types import HeadTrack, Track
from shared_paths import PARTIAL_MODEL, needs_partial_flame

SIZE = 256
NUM_FRAMES = 20  # the example loop in 20 frames: frame 5 has its widest head turn (yaw 18 degrees)
EXAMPLE_FRAMES = NUM_FRAMES  # the conftest's example fixture writes the bundled example this long


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


GUIDE = GuideConfig(size=SIZE, show_progress=False)


@pytest.fixture(scope="module")
def source(tracker):
    return prepare_source(example_portrait(), tracker, MediaPipeHeadModel(), GUIDE, "astronaut")


@pytest.fixture(scope="module")
def animated(example, tmp_path_factory):
    source, driving = example
    output = tmp_path_factory.mktemp("geometric") / "out"
    assert main(["animate", "-s", str(source), "-d", str(driving), "-o", str(output), "--size", str(SIZE),
                 "--smoothing", "0", "--no-show-progress"]) == 0  # unsmoothed: the example's loop is fast at 20 frames
    return output


def _rotated(head: HeadTrack, euler_degrees: np.ndarray) -> HeadTrack:
    """``head``'s first frame turned by each of ``euler_degrees`` `(T, 3)` (yaw, pitch, roll) in turn."""
    frames = head.select(np.zeros(len(euler_degrees), int))
    base = axis_angle_to_matrix(head.rotation[0].astype(np.float64))
    rotation = matrix_to_axis_angle(euler_degrees_to_matrix(euler_degrees) @ base).astype(np.float32)
    return replace(frames, rotation=rotation)


def test_unmoved_source_comes_back(source):
    generator = GeometricGenerator(MediaPipeHeadModel(), source)
    crop = generator.render(source.head)[0]
    face = np.isfinite(generator.texture.zbuffer)
    assert psnr(crop[face], source.crop[face]) >= 40
    assert psnr(crop, source.crop) >= 40


def test_the_open_geometry_is_re_rendered_whole_without_holes(source):
    """The face mesh of the open geometry is the face itself: every triangle is re-rendered (dropping those near
    its outline left holes beside the nose through which the old face showed), with or without parallax."""
    model = MediaPipeHeadModel()
    assert model.face_only
    for parallax in (True, False):
        generator = GeometricGenerator(model, source, GeometricConfig(parallax=parallax))
        assert generator.renderer.num_head_faces == len(model.faces)
        assert (generator.depth is not None) == parallax
        mask = generator.renderer.render(model.posed_vertices(source.head)).mask[0]
        assert not (np.isfinite(generator.texture.zbuffer) & ~mask).any()  # every pixel of the face drawn
        crop = generator.render(source.head)[0]
        assert psnr(crop, source.crop) >= 40


def test_unmoved_source_pastes_back_pixel_exactly(source):
    from magicportrait.compositing import PasteBack

    image = example_portrait()
    paste = PasteBack(image.shape[:2], source.crop_matrix, SIZE, mode="changed")
    np.testing.assert_array_equal(paste.paste(image, source.crop, source.crop), image)


def test_turned_head_turns_the_rendered_face(source, tracker):
    """Render known yaws, track the result with MediaPipe and refit: the tracked turn matches."""
    model = MediaPipeHeadModel()
    yaws = np.array([0.0, -15.0, 15.0])
    frames = GeometricGenerator(model, source).render(_rotated(source.head, np.stack([yaws, 0 * yaws, 0 * yaws], 1)))
    fitted = model.fit(tracker.track_frames(frames, fps=25.0))
    relative = axis_angle_to_matrix(fitted.rotation) @ axis_angle_to_matrix(fitted.rotation[0]).T
    measured = matrix_to_euler_degrees(relative)[:, 0]
    assert np.abs(measured - yaws).max() < 5.0, measured


def test_extreme_driving_pose_is_clamped_and_never_black(source, caplog):
    rotations = np.array([[0, 0, 0], [80, 0, 0], [-90, 50, 0], [0, 0, 170]], float)
    clamped, changed = limit_rotation(_rotated(source.head, rotations), source.head.rotation[0], (45, 30, 45))
    assert changed.tolist() == [False, True, True, True]
    relative = axis_angle_to_matrix(clamped.rotation) @ axis_angle_to_matrix(source.head.rotation[0]).T
    euler = matrix_to_euler_degrees(relative)
    assert np.abs(euler).max(axis=0) == pytest.approx([45, 30, 45], abs=1e-3)
    frames = GeometricGenerator(MediaPipeHeadModel(), source).render(clamped)
    assert frames.reshape(len(frames), -1).mean(1).min() > 40  # not black
    assert all(psnr(frame, source.crop) > 12 for frame in frames)  # still the portrait, not noise

    driving = _driving_track(source, rotations)
    head_model = MediaPipeHeadModel()
    motion = Motion(align_motion(head_model, source, driving, GUIDE), driving, 25.0)
    with caplog.at_level(logging.WARNING):
        aligned = GeometricPipeline(AnimateConfig(guide=GUIDE), head_model).limit_motion(source, motion).aligned
    assert "clamped" in caplog.text and "3 of 4 frames" in caplog.text
    assert aligned.num_frames == 4


def _driving_track(source, euler_degrees: np.ndarray) -> Track:
    """The source's landmarks turned rigidly about their centre (a driving video with those head poses)."""
    landmarks = source.track.landmarks[0].astype(np.float64)
    centre = landmarks.mean(0)
    turned = np.einsum("tij,nj->tni", euler_degrees_to_matrix(euler_degrees), landmarks - centre) + centre
    num = len(euler_degrees)
    return Track(landmarks=turned.astype(np.float32), boxes=np.repeat(source.track.boxes, num, 0),
                 detected=np.ones(num, bool), fps=25.0, image_size=source.track.image_size)


def test_closed_eyes_and_turned_face_are_reported(source):
    assert min(eye_openness(source.track.landmarks[0]).values()) > 0.15
    assert source_warnings(source) == []
    closed = source.track.landmarks.copy()
    for upper, lower in ((159, 145), (386, 374)):
        closed[0, lower] = closed[0, upper]
    turned = _rotated(source.head, np.array([[70.0, 0.0, 0.0]]))
    messages = source_warnings(type(source)(crop=source.crop, crop_matrix=source.crop_matrix,
                                            track=Track(landmarks=closed, boxes=source.track.boxes,
                                                        detected=source.track.detected, fps=0.0,
                                                        image_size=source.track.image_size), head=turned))
    assert len(messages) == 2 and "eyes look closed" in messages[1]
    assert re.search(r"turned (69|70|71|72) degrees", messages[0])  # 70 on top of the portrait's own slight turn


def test_a_three_quarter_view_portrait_is_reported(source):
    assert source_warnings(replace(source, head=_rotated(source.head, np.array([[20.0, 0.0, 0.0]])))) == []
    messages = source_warnings(replace(source, head=_rotated(source.head, np.array([[35.0, 0.0, 0.0]]))))
    assert len(messages) == 1 and re.search(r"turned 3[4-7] degrees", messages[0]) and "side it hides" in messages[0]


def test_a_head_model_without_expressions_is_reported(source):
    """The partial FLAME file has no expression basis: the lips and brows cannot follow, and the user is told."""
    assert source_warnings(source) == []
    rigid = replace(source, head=replace(source.head, model="flame", expression=np.zeros((1, 0), np.float32)))
    messages = source_warnings(rigid)
    assert len(messages) == 1 and "no expression basis" in messages[0] and "lips and brows" in messages[0]


def test_closed_eyes_of_the_portrait_are_held_closed(source):
    """The driving eye opening is not applied to a portrait whose eyes are closed: its eyelids keep their shape."""
    from magicportrait.pipelines.geometric_face import eye_hold_weights, hold_eyes

    model = MediaPipeHeadModel()
    weights = eye_hold_weights(model, source)
    assert weights[[33, 133, 159, 145, 263, 362, 386, 374]].min() == 1.0
    assert weights[[1, 13, 14, 61, 291, 152]].max() == 0.0  # nose tip, lips, chin
    driving = _rotated(source.head, np.array([[10.0, 0.0, 0.0]]))
    expression = driving.expression.reshape(1, -1, 3).copy()
    expression[0, [145, 374], 1] += 2.0  # the lower lids drop 2 cm: the eyes open wide
    expression[0, [14], 1] += 1.0  # and the jaw drops
    driving = replace(driving, expression=expression.reshape(1, -1))
    vertices = model.posed_vertices(driving)
    held = hold_eyes(model, driving, source, vertices, weights)
    still = model.posed_vertices(replace(driving, expression=source.head.expression[:1]))
    np.testing.assert_allclose(held[0, [145, 374, 159, 386]], still[0, [145, 374, 159, 386]], atol=1e-3)
    np.testing.assert_allclose(held[0, 14], vertices[0, 14], atol=1e-4)  # the mouth still follows
    assert np.abs(vertices[0, 145] - still[0, 145]).max() > 10  # (the opening was there to undo)


def test_occluded_mouth_in_the_source_stays_sane(tracker):
    portrait = example_portrait().copy()
    portrait[150:185, 190:260] = (90, 90, 90)  # a grey bar over the mouth (found by the tracker all the same)
    occluded = prepare_source(portrait, tracker, MediaPipeHeadModel(), GUIDE, "occluded")
    frames = GeometricGenerator(MediaPipeHeadModel(), occluded).render(
        _rotated(occluded.head, np.array([[0, 0, 0], [20, 5, 0]], float)))
    assert np.isfinite(frames).all() and frames.reshape(2, -1).mean(1).min() > 40


def test_animate_without_weights_uses_the_geometric_generator(animated, example):
    result = probe_video(animated / "result.mp4")
    assert (result.num_frames, result.fps, result.width, result.height) == (NUM_FRAMES, 25.0, 512, 512)
    assert result.has_audio and probe_video(example[1]).has_audio
    crop = probe_video(animated / "result_crop.mp4")
    assert (crop.num_frames, crop.width, crop.height) == (NUM_FRAMES, SIZE, SIZE)
    grid = probe_video(animated / "grid.mp4")
    assert (grid.num_frames, grid.width, grid.height) == (NUM_FRAMES, 6 * SIZE, SIZE)
    for name in ("source.png", "track.npz", "source_track.npz", "aligned_head.npz"):
        assert (animated / name).is_file()


def _tracked_yaw(path, tracker) -> np.ndarray:
    """Head yaw of every frame of a video relative to its first, through MediaPipe and the head fit (degrees)."""
    fitted = MediaPipeHeadModel().fit(tracker.track_frames(list(iter_frames(path)), fps=25.0))
    relative = axis_angle_to_matrix(fitted.rotation) @ axis_angle_to_matrix(fitted.rotation[0]).T
    return matrix_to_euler_degrees(relative)[:, 0]


def test_animated_result_follows_the_driving_turn(animated, example, tracker):
    """Tracked again, the result turns as the driving video does (as the same tracker sees both)."""
    driving, result = _tracked_yaw(example[1], tracker), _tracked_yaw(animated / "result.mp4", tracker)
    assert np.abs(driving).max() > 12 and np.abs(result - driving).mean() < 3.0, (driving, result)
    assert np.abs(result - example_motion(NUM_FRAMES).euler_degrees[:, 0]).mean() < 4.0


def test_static_driving_gives_back_the_source(example, tmp_path):
    """Driving = the portrait itself, still: the pasted result is the portrait (PSNR >= 30 dB on the face)."""
    from magicportrait.io.video import write_video

    portrait = example_portrait()
    driving = write_video(tmp_path / "still.mp4", [portrait] * 6, fps=25.0)
    config = AnimateConfig(write_grid=False, guide=GuideConfig(size=SIZE, show_progress=False))
    result = GeometricPipeline(config).run(example[0], driving, tmp_path / "out")
    assert result.backend == "geometric" and result.num_frames == 6
    frames = np.stack(list(iter_frames(result.files["result"])))
    face = np.zeros(portrait.shape[:2], bool)
    face[70:200, 160:290] = True
    assert min(psnr(frame[face], portrait[face]) for frame in frames) >= 30


def test_demo_command(tmp_path, capsys):
    output = tmp_path / "demo"
    assert main(["demo", "-o", str(output), "--size", str(SIZE), "--max-frames", "6", "--no-show-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Generator: geometric" in printed
    result, grid = probe_video(output / "result.mp4"), probe_video(output / "grid.mp4")
    assert result.num_frames == grid.num_frames == 6 and result.has_audio


def test_geometric_options_are_checked():
    from magicportrait.errors import InputError

    with pytest.raises(InputError, match="--geometric-warp-inner"):
        GeometricConfig(warp_inner=3.0, warp_outer=2.0)
    with pytest.raises(InputError, match="feather"):
        GeometricConfig(feather=0.5)


@needs_partial_flame
@pytest.mark.parametrize("camera", ["orthographic", "perspective"])
def test_flame_head_reenacts_too(camera, tracker):
    """With FLAME (the shared partial model), only the face part of the head is re-rendered; the rest is warped."""
    from magicportrait.heads import HeadModelConfig, head_model_from_config
    from magicportrait.heads.flame_head import FlameFitConfig

    head = HeadModelConfig(flame=str(PARTIAL_MODEL), fit=FlameFitConfig(camera=camera))
    flame_model = head_model_from_config(head)
    config = GuideConfig(size=SIZE, show_progress=False, head=head)
    flame_source = prepare_source(example_portrait(), tracker, flame_model, config, "astronaut")
    generator = GeometricGenerator(flame_model, flame_source)
    assert len(generator.renderer.faces) < len(flame_model.faces)  # scalp, ears and neck are warped
    assert psnr(generator.render(flame_source.head)[0], flame_source.crop) >= 40
    frames = generator.render(_rotated(flame_source.head, np.array([[15.0, 0, 0], [-15.0, 5.0, 0]])))
    # moved (the whole head with its hair, rigidly), still the portrait
    assert all(16 < psnr(frame, flame_source.crop) < 40 for frame in frames)


def test_large_source_is_scaled_down_for_the_pasted_video():
    from magicportrait.pipelines.outputs import output_frame
    from magicportrait.tracking.boxes import crop_matrix, transform_points

    image = np.zeros((3000, 4000, 3), np.uint8)
    matrix = crop_matrix(np.array([2100.0, 1400.0, 900.0]), 512)
    small, small_matrix = output_frame(image, matrix, 1920)
    assert small.shape == (1440, 1920, 3)
    points = np.array([[2100.0, 1400.0], [1700.0, 1000.0], [2500.0, 1850.0]])  # image-space (continuous) points
    in_small = points * np.array([1920 / 4000, 1440 / 3000])
    np.testing.assert_allclose(transform_points(in_small, small_matrix), transform_points(points, matrix), atol=1e-6)
    unchanged, same = output_frame(image[:1000, :1500], matrix, 1920)
    assert unchanged.shape == (1000, 1500, 3) and np.array_equal(same, matrix)


def test_bad_inputs_give_one_clear_error_and_no_output(example, tmp_path, capsys):
    from magicportrait.io.image import save_image

    blank = tmp_path / "blank.png"
    save_image(blank, np.full((256, 256, 3), 128, np.uint8))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    for source, driving in ((blank, example[1]), (example[0], broken)):
        output = tmp_path / f"out_{source.stem}_{driving.stem}"
        assert main(["animate", "-s", str(source), "-d", str(driving), "-o", str(output), "--size", str(SIZE),
                     "--no-show-progress"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error:") and "Traceback" not in error
        assert not output.exists() or not any(output.iterdir())  # nothing half-written
