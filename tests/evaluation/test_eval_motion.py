"""Motion accuracy and stability metrics, the evaluation report, ``evaluate`` and the ``benchmark`` protocol."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from magicportrait.cli.main import main
from magicportrait.errors import InputError
from magicportrait.evaluation.motion import compare_heads, flicker, landmark_distance, landmark_jitter
from magicportrait.evaluation.suite import EvaluationConfig, EvaluationReport, Evaluator
from magicportrait.geometry.rotations import axis_angle_to_matrix, euler_degrees_to_matrix, matrix_to_axis_angle
from magicportrait.pipelines.evaluate import read_frames, run_benchmark
from magicportrait.types import HeadTrack, Track
from shared_paths import PARTIAL_MODEL, needs_partial_flame

MOTION = "apd,p_rmse,aed,e_rmse,jitter,flicker"
EXAMPLE_FRAMES = 12  # the conftest's example fixture writes the bundled example this long


def _head(num_frames: int = 6, seed: int = 0) -> HeadTrack:
    rng = np.random.default_rng(seed)
    rotation = matrix_to_axis_angle(euler_degrees_to_matrix(rng.uniform(-20, 20, (num_frames, 3))))
    return HeadTrack(model="mediapipe", identity=np.zeros(12, np.float32),
                     expression=rng.normal(size=(num_frames, 12)).astype(np.float32),
                     rotation=rotation.astype(np.float32), scale=np.ones(num_frames, np.float32),
                     translation=np.zeros((num_frames, 3), np.float32), image_size=(64, 64))


def _turned(head: HeadTrack, yaw_degrees: float) -> HeadTrack:
    """The same head turned further by ``yaw_degrees`` about its own (model) vertical axis in every frame."""
    rotation = axis_angle_to_matrix(head.rotation.astype(np.float64))
    extra = euler_degrees_to_matrix(np.array([yaw_degrees, 0.0, 0.0]))
    return replace(head, rotation=matrix_to_axis_angle(extra @ rotation).astype(np.float32))


def test_identical_tracks_have_no_motion_error():
    head = _head()
    comparison = compare_heads(head, head)
    assert comparison.apd == comparison.aed == comparison.p_rmse == comparison.e_rmse == 0.0


def test_pose_error_grows_with_injected_motion():
    head = _head(seed=1)
    base = np.zeros((6, 3))
    base[:, 0] = 0.0
    errors = [compare_heads(_turned(replace(head, rotation=np.zeros_like(head.rotation)), yaw),
                            replace(head, rotation=np.zeros_like(head.rotation))) for yaw in (5.0, 10.0)]
    assert errors[0].apd == pytest.approx(5.0 / 3, abs=1e-4)  # (5 + 0 + 0) / 3 degrees
    assert errors[0].p_rmse == pytest.approx(np.sqrt(25.0 / 3), abs=1e-4)
    assert errors[1].apd == pytest.approx(10.0 / 3, abs=1e-4) and errors[1].apd > errors[0].apd
    # relative pose: a constant extra turn is not motion
    turned = _turned(head, 7.0)
    assert compare_heads(turned, turned, pose="relative").apd == 0.0


def test_expression_error_is_the_mean_absolute_difference():
    head = _head()
    shifted = replace(head, expression=head.expression + np.float32(0.25))
    comparison = compare_heads(shifted, head)
    assert comparison.aed == pytest.approx(0.25, abs=1e-6) and comparison.e_rmse == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match="same head model"):
        compare_heads(replace(head, model="flame"), head)


def _track(landmarks: np.ndarray, size=(100, 100)) -> Track:
    return Track(landmarks=landmarks.astype(np.float32), boxes=np.zeros((len(landmarks), 3), np.float32),
                 detected=np.ones(len(landmarks), bool), fps=25.0, image_size=size)


def test_landmark_distance_and_jitter():
    rng = np.random.default_rng(0)
    points = rng.uniform(10, 90, (5, 478, 3))
    shifted = points.copy()
    shifted[..., :2] += np.array([3.0, 4.0])
    np.testing.assert_allclose(landmark_distance(_track(shifted), _track(points)), 5.0, atol=1e-4)
    half = points.copy()
    half[..., :2] /= 2  # the reference measured at half the size
    np.testing.assert_allclose(landmark_distance(_track(points), _track(half, (50, 50))), 0.0, atol=1e-4)

    steady = np.repeat(points[:1], 8, axis=0) + np.arange(8)[:, None, None] * np.array([1.5, -0.5, 0.0])
    assert np.abs(landmark_jitter(_track(steady))).max() < 1e-4  # moving steadily is not jitter
    shaking = np.repeat(points[:1], 8, axis=0)
    sign = np.where(np.arange(478) % 2 == 0, 1.0, -1.0)  # half the points one way, half the other: mean stays put
    shaking[1::2, :, 0] += sign
    jitter = landmark_jitter(_track(shaking))
    assert jitter[0] == jitter[-1] == 0.0
    np.testing.assert_allclose(jitter[1:-1], 2.0, atol=1e-4)


def test_flicker_is_the_mean_luminance_change():
    frames = np.full((4, 8, 8, 3), 100, np.uint8)
    frames[1::2] = 110
    np.testing.assert_allclose(flicker(frames), [0.0, 10.0, 10.0, 10.0], atol=1e-9)


def test_metric_names_are_checked():
    assert EvaluationConfig(metrics="APD, aed").selected() == ("apd", "aed")
    with pytest.raises(InputError, match="Unknown metric"):
        EvaluationConfig(metrics="apd,sharpness")


def test_report_layout_and_files(tmp_path):
    report = EvaluationReport(values={"aed": 0.5, "csim": 0.81234, "apd": 2.5},
                              per_frame={"pose_error": np.array([1.0, 2.0, 3.0])}, info={"frames": 3})
    table = report.markdown().splitlines()
    assert table[0] == "| CSIM ↑ | APD (deg) ↓ | AED ↓ |" and table[2] == "| 0.8123 | 2.5000 | 0.5000 |"
    files = report.save(tmp_path / "report")
    stored = json.loads(files["json"].read_text())
    assert stored["metrics"] == {"aed": 0.5, "csim": 0.81234, "apd": 2.5}
    assert stored["per_frame"]["pose_error"] == [1.0, 2.0, 3.0]
    assert (files["plots"] / "per_frame.png").is_file() and (files["plots"] / "pose_error.png").is_file()


def test_a_video_against_itself_has_no_motion_error(example):
    frames, fps = read_frames(example[1])
    from magicportrait.io.image import load_image

    evaluator = Evaluator(EvaluationConfig(metrics=MOTION, show_progress=False))
    same = evaluator.evaluate(frames, frames, load_image(example[0]), fps=fps)
    assert same.values["apd"] == 0.0 and same.values["aed"] == 0.0
    assert same.info["protocol"] == "cross-reenactment" and same.info["head_model"] == "mediapipe"
    reversed_motion = evaluator.evaluate(frames[::-1].copy(), frames, load_image(example[0]), fps=fps)
    assert reversed_motion.values["apd"] > 2.0 and reversed_motion.values["aed"] > 0.0


def test_read_frames_from_folders(example, tmp_path):
    from magicportrait.io.image import save_image

    frames, _ = read_frames(example[1], max_frames=3)
    for index, frame in enumerate(frames):
        save_image(tmp_path / f"frame_{index:03d}.png", frame)
    again, fps = read_frames(tmp_path)
    assert fps == 25.0 and np.array_equal(again, frames)
    with pytest.raises(InputError, match="no such file"):
        read_frames(tmp_path / "missing.mp4")


def test_evaluate_command(example, tmp_path, capsys):
    output = tmp_path / "report"
    assert main(["evaluate", "-p", str(example[1]), "-d", str(example[1]), "-s", str(example[0]), "-o", str(output),
                 "--metrics", MOTION, "--no-show-progress"]) == 0
    assert "APD (deg)" in capsys.readouterr().out
    assert json.loads((output / "metrics.json").read_text())["metrics"]["apd"] == 0.0


def test_benchmark_protocol_on_a_folder_of_clips(example, tmp_path):
    clips = tmp_path / "clips"
    (clips / "person_a").mkdir(parents=True)
    shutil.copy(example[1], clips / "person_a" / "clip1.mp4")
    shutil.copy(example[1], clips / "clip2.mp4")
    (clips / "notes.txt").write_text("not a clip")
    from magicportrait.alignment import AlignmentConfig
    from magicportrait.pipelines.animate import AnimateConfig
    from magicportrait.pipelines.guide import GuideConfig

    guide = GuideConfig(size=128, show_progress=False, alignment=AlignmentConfig(smoothing=0.0))  # a fast loop
    animate = AnimateConfig(write_grid=False, guide=guide)
    evaluation = EvaluationConfig(metrics=MOTION + ",psnr", show_progress=False, write_plots=False)
    summary = json.loads(run_benchmark(clips, tmp_path / "out", animate, evaluation).read_text())
    assert summary["clips"] == summary["evaluated"] == 2
    assert set(summary["per_clip"]) == {"clip2", "person_a__clip1"}
    assert summary["mean"]["apd"] < 3.0  # the clip reenacts its own first frame closely
    # the example turns its whole frame (background too) with the head; the reenactment keeps the background still
    assert 14 < summary["mean"]["psnr"] < 40
    table = (tmp_path / "out" / "summary.md").read_text()
    assert "| **mean** |" in table and "clip2" in table
    stamp = (tmp_path / "out" / "clip2" / "metrics" / "metrics.json").stat().st_mtime_ns
    run_benchmark(clips, tmp_path / "out", animate, evaluation)  # resumable: finished clips are not redone
    assert (tmp_path / "out" / "clip2" / "metrics" / "metrics.json").stat().st_mtime_ns == stamp


@needs_partial_flame
def test_motion_metrics_on_flame_parameters(example):
    """With a FLAME file the motion metrics use FLAME's fit (the shared partial model has no expression basis)."""
    from magicportrait.heads import HeadModelConfig
    from magicportrait.io.image import load_image

    frames, fps = read_frames(example[1])
    config = EvaluationConfig(metrics="apd,p_rmse,aed", head=HeadModelConfig(flame=str(PARTIAL_MODEL)),
                              show_progress=False)
    evaluator = Evaluator(config)
    same = evaluator.evaluate(frames, frames, load_image(example[0]), fps=fps)
    assert same.info["head_model"] == "flame" and same.values["apd"] == 0.0
    assert np.isnan(same.values["aed"])  # no expression parameters to compare, said as n/a, not 0
    assert "n/a" in same.markdown()
    moved = evaluator.evaluate(frames[::-1].copy(), frames, load_image(example[0]), fps=fps)
    assert moved.values["apd"] > 2.0


def test_flicker_in_the_face_region_is_not_diluted_by_the_background():
    frames = np.full((3, 100, 100, 3), 50, np.uint8)
    frames[1, 40:60, 40:60] = 80  # only the face (a 20 x 20 box) brightens by 30 grey levels
    boxes = np.tile([40, 40, 60, 60], (3, 1))
    np.testing.assert_allclose(flicker(frames, boxes), [0.0, 30.0, 30.0], atol=1e-9)
    np.testing.assert_allclose(flicker(frames), [0.0, 1.2, 1.2], atol=1e-9)  # the whole frame: 25x less
