"""Motion transfer: per-channel correlation of the result's motion with the driving video's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from magicportrait.evaluation.transfer import CHANNELS, motion_transfer, mouth_opening, pearson


def _signals(phase: np.ndarray, amplitude: float = 1.0) -> dict[str, np.ndarray]:
    return {"yaw": 15 * amplitude * np.sin(phase), "pitch": 8 * amplitude * np.cos(phase),
            "roll": 0.1 * np.sin(3 * phase),  # below the 1-degree threshold: not motion to transfer
            "mouth": 0.2 * amplitude * np.sin(phase / 2) ** 2}


def test_pearson_of_known_series():
    t = np.arange(10.0)
    assert pearson(t, 2 * t + 5) == pytest.approx(1.0, abs=1e-12)
    assert pearson(t, -t) == pytest.approx(-1.0, abs=1e-12)
    assert pearson(np.full(10, 3.0), t) == 0.0  # a constant series: 0, not NaN


def test_motion_transfer_of_a_faithful_a_frozen_and_a_reversed_result():
    phase = np.linspace(0, 2 * np.pi, 40)
    driving = _signals(phase)
    faithful = motion_transfer(_signals(phase, amplitude=0.5), driving)  # half the gain, in step: still 1
    assert faithful.used == ("yaw", "pitch", "mouth") and math.isnan(faithful.correlation["roll"])
    assert faithful.mean == pytest.approx(1.0, abs=1e-9)
    frozen = motion_transfer({name: np.full(40, 2.0) for name in CHANNELS}, driving)
    assert frozen.mean == 0.0 and frozen.correlation["yaw"] == 0.0
    backwards = motion_transfer({k: v[::-1] for k, v in driving.items()}, driving)
    assert backwards.correlation["yaw"] == pytest.approx(-1.0, abs=1e-9)  # sin(2pi - x) = -sin(x)
    still = motion_transfer(driving, {name: np.zeros(40) for name in CHANNELS})
    assert still.used == () and math.isnan(still.mean)  # the driving video moves nothing


def test_mouth_opening_is_the_inner_lip_gap_over_the_eye_distance():
    landmarks = np.zeros((2, 478, 3))
    landmarks[:, 33, 0], landmarks[:, 263, 0] = 0.0, 100.0  # eye corners 100 px apart
    for lower in (14, 87, 317):
        landmarks[1, lower, 1] = 30.0  # frame 1: lips 30 px apart
    np.testing.assert_allclose(mouth_opening(landmarks), [0.0, 0.3], atol=1e-12)


def test_a_result_moving_a_twentieth_as_much_is_still():
    phase = np.linspace(0, 2 * np.pi, 40)
    driving = _signals(phase)
    wobble = motion_transfer(_signals(phase, amplitude=0.05), driving)  # in step, but tracker-noise sized
    assert wobble.correlation["yaw"] == 0.0 and wobble.mean == 0.0
