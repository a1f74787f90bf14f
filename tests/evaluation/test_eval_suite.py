"""Every metric through ``Evaluator`` / ``magicportrait evaluate`` on a real (example) video."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from magicportrait.cli.main import main
from magicportrait.evaluation.suite import ALL_METRICS, EvaluationConfig, Evaluator
from magicportrait.io.image import load_image
from magicportrait.pipelines.evaluate import read_frames

NUM_FRAMES = 32  # two 16-frame I3D clips: the fewest FVD can use
EXAMPLE_FRAMES = NUM_FRAMES  # the conftest's example fixture writes the bundled example this long


@pytest.fixture(scope="module")
def evaluated(example, tmp_path_factory):
    """A video evaluated against itself as driving video and ground truth, through the command line."""
    output = tmp_path_factory.mktemp("report")
    assert main(["evaluate", "-p", str(example[1]), "-d", str(example[1]), "-s", str(example[0]), "--gt",
                 str(example[1]), "-o", str(output), "--no-show-progress"]) == 0
    return json.loads((output / "metrics.json").read_text()), output


def test_every_metric_of_a_perfect_result(evaluated):
    report, output = evaluated
    metrics = report["metrics"]
    assert set(metrics) == set(ALL_METRICS)
    assert metrics["lpips"] == 0.0 and metrics["ssim"] == pytest.approx(1.0) and metrics["psnr"] > 1e300  # inf
    assert metrics["lmd"] == 0.0 and metrics["apd"] == 0.0 and metrics["aed"] == 0.0
    assert abs(metrics["fid"]) < 1e-3 and abs(metrics["fvd"]) < 1e-3 and abs(metrics["kid"]) < 0.05
    assert metrics["csim"] > 0.9  # the example is the portrait itself, turning
    assert report["info"]["protocol"] == "self-reenactment" and report["info"]["frames"] == NUM_FRAMES
    assert (output / "metrics.md").read_text().startswith("| CSIM ↑ | LPIPS ↓ | FID ↓ | FVD ↓ | APD (deg) ↓ |")
    for curve in ("csim", "lpips", "psnr", "ssim", "pose_error", "jitter"):
        assert (output / "plots" / f"{curve}.png").is_file()


def test_a_degraded_result_scores_worse(example):
    frames, fps = read_frames(example[1])
    blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), 3) for frame in frames])
    config = EvaluationConfig(metrics="lpips,psnr,ssim,fid,fvd,flicker", show_progress=False)
    report = Evaluator(config).evaluate(blurred, frames, load_image(example[0]), frames, fps=fps)
    values = report.values
    assert values["lpips"] > 0.1 and 20 < values["psnr"] < 40 and values["ssim"] < 0.95
    assert values["fid"] > 1.0 and values["fvd"] > 1.0 and math.isfinite(values["flicker"])


def test_short_videos_skip_fvd_and_say_so(example, caplog):
    frames, fps = read_frames(example[1], max_frames=8)
    report = Evaluator(EvaluationConfig(metrics="fvd,flicker", show_progress=False)).evaluate(
        frames, frames, load_image(example[0]), fps=fps)
    assert "fvd" not in report.values and report.info["skipped"] == ["fvd"]
    assert "FVD needs at least 32 frames" in caplog.text
