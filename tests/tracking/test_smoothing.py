"""Tests of magicportrait.tracking.smoothing against closed-form values."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from magicportrait.tracking.smoothing import (
    continuous_quaternions,
    one_euro_filter,
    savgol_smooth,
    smooth,
    smooth_rotations,
)


def _quadratic(num_frames: int) -> np.ndarray:
    t = np.arange(num_frames, dtype=np.float64)
    return np.stack([3.0 - 0.5 * t + 0.02 * t**2, 1.5 * t - 0.1 * t**2], axis=1)


def _savgol_noise_gain(half_window: int) -> float:
    """Variance factor of white noise through an order-2 Savitzky-Golay filter of 2m+1 taps (closed form)."""
    m = half_window
    return 3.0 * (3 * m**2 + 3 * m - 1) / ((2 * m - 1) * (2 * m + 1) * (2 * m + 3))


def test_savgol_preserves_quadratic_exactly_including_the_ends():
    x = _quadratic(50)
    np.testing.assert_allclose(savgol_smooth(x, 11, order=2), x, atol=1e-9)


def test_savgol_reduces_white_noise_variance_by_the_closed_form_factor():
    noise = np.random.default_rng(0).normal(size=(20000, 2))
    smoothed = savgol_smooth(noise, 11, order=2)
    ratio = smoothed[100:-100].var() / noise[100:-100].var()
    assert ratio == pytest.approx(_savgol_noise_gain(5), rel=0.05)  # 0.2075


def test_savgol_shrinks_the_window_for_short_sequences():
    x = _quadratic(6)  # window 11 -> 5 frames: still an order-2 fit, so the quadratic survives
    np.testing.assert_allclose(savgol_smooth(x, 11), x, atol=1e-9)
    noisy = x + np.random.default_rng(1).normal(size=x.shape)
    assert not np.allclose(savgol_smooth(noisy, 11), noisy)  # it did smooth
    single = np.array([[1.0, 2.0]])
    np.testing.assert_array_equal(savgol_smooth(single, 11), single)


def test_savgol_does_not_modify_its_input_and_keeps_float32():
    x = np.random.default_rng(2).normal(size=(30, 3)).astype(np.float32)
    before = x.copy()
    out = savgol_smooth(x, 7)
    np.testing.assert_array_equal(x, before)
    assert out.dtype == np.float32


def test_one_euro_keeps_a_constant_constant():
    x = np.full((100, 4), 7.25)
    np.testing.assert_array_equal(one_euro_filter(x, fps=30.0, min_cutoff=1.0, beta=0.5), x)


def test_one_euro_with_zero_beta_reduces_noise_like_an_ema():
    fps, cutoff = 30.0, 1.0
    noise = np.random.default_rng(3).normal(size=(40000, 1))
    smoothed = one_euro_filter(noise, fps=fps, min_cutoff=cutoff, beta=0.0)
    alpha = 1.0 / (1.0 + fps / (2.0 * np.pi * cutoff))
    ratio = smoothed[1000:].var() / noise[1000:].var()
    assert ratio == pytest.approx(alpha / (2.0 - alpha), rel=0.05)  # EMA white-noise gain: ~0.096


def test_one_euro_is_causal_and_beta_reduces_lag():
    ramp = np.linspace(0.0, 300.0, 90)[:, None]  # 100 units/s at 30 fps
    changed = ramp.copy()
    changed[60:] = 0.0
    out = one_euro_filter(ramp, fps=30.0, min_cutoff=0.5)
    np.testing.assert_array_equal(out[:60], one_euro_filter(changed, fps=30.0, min_cutoff=0.5)[:60])
    lag_plain = ramp[-1, 0] - out[-1, 0]
    lag_fast = ramp[-1, 0] - one_euro_filter(ramp, fps=30.0, min_cutoff=0.5, beta=0.05)[-1, 0]
    assert lag_fast < 0.5 * lag_plain


@pytest.mark.parametrize("method", ["savgol", "one_euro", "none"])
def test_strength_zero_and_none_are_identity(method):
    x = np.random.default_rng(4).normal(size=(40, 2, 3))
    np.testing.assert_array_equal(smooth(x, method, 0.0, fps=25.0), x)
    np.testing.assert_array_equal(smooth(x, "none", 1.0, fps=25.0), x)


@pytest.mark.parametrize("method", ["savgol", "one_euro"])
def test_strength_increases_smoothing_monotonically(method):
    noise = np.random.default_rng(5).normal(size=(3000, 1))
    variances = [smooth(noise, method, s, fps=30.0)[100:-100].var() for s in (0.0, 0.25, 0.5, 1.0)]
    assert variances[0] == pytest.approx(noise[100:-100].var())
    assert np.all(np.diff(variances) < 0)


def test_strength_mapping_of_savgol_matches_the_documented_window():
    noise = np.random.default_rng(6).normal(size=(20000, 1))
    # strength 0.5 at 30 fps -> half window round(0.5 * 0.5 s * 30) = 8 -> 17 taps
    ratio = smooth(noise, "savgol", 0.5, fps=30.0)[100:-100].var() / noise[100:-100].var()
    assert ratio == pytest.approx(_savgol_noise_gain(8), rel=0.05)


def test_smooth_rejects_bad_arguments():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="strength"):
        smooth(x, "savgol", 1.5, fps=30.0)
    with pytest.raises(ValueError, match="method"):
        smooth(x, "gaussian", 0.5, fps=30.0)
    with pytest.raises(ValueError, match="fps"):
        smooth(x, "one_euro", 0.5, fps=0.0)


def _angle_errors_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees((Rotation.from_rotvec(a).inv() * Rotation.from_rotvec(b)).magnitude())


def test_rotation_smoothing_crosses_the_axis_angle_pi_boundary_without_jumps():
    num_frames = 60
    axis = np.array([0.2, 0.9, 0.3]) / np.linalg.norm([0.2, 0.9, 0.3])
    angles = np.radians(np.linspace(160.0, 200.0, num_frames))  # crosses 180 degrees mid-way
    truth = Rotation.from_rotvec(angles[:, None] * axis)
    jitter = Rotation.from_rotvec(np.random.default_rng(7).normal(scale=np.radians(0.5), size=(num_frames, 3)))
    noisy = (jitter * truth).as_rotvec()
    assert np.abs(np.diff(noisy, axis=0)).max() > 3.0  # the axis-angle input really jumps (sign flip at pi)

    smoothed = smooth_rotations(noisy, "savgol", 0.5, fps=30.0)
    errors = _angle_errors_deg(smoothed, truth.as_rotvec())
    assert errors.max() < 1.5  # noise is 0.5 deg per axis; the edges of the window are noisiest
    assert errors.mean() < 0.5 * _angle_errors_deg(noisy, truth.as_rotvec()).mean()
    naive = smooth(noisy, "savgol", 0.5, fps=30.0)  # what filtering axis-angle components would do
    assert _angle_errors_deg(naive, truth.as_rotvec()).max() > 30.0


def test_rotation_smoothing_of_joint_arrays_and_identity_strength():
    rotvecs = np.random.default_rng(8).normal(scale=0.3, size=(20, 3, 3)).astype(np.float32)
    out = smooth_rotations(rotvecs, "one_euro", 0.0, fps=25.0)
    assert out.shape == rotvecs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, rotvecs, atol=1e-5)


def test_continuous_quaternions_removes_sign_flips():
    quats = Rotation.from_rotvec(np.linspace([0, 0, 3.0], [0, 0, 3.3], 20)).as_quat()
    quats[::2] *= -1.0
    fixed = continuous_quaternions(quats)
    assert (np.sum(fixed[1:] * fixed[:-1], axis=1) > 0).all()
    np.testing.assert_allclose(np.abs(fixed), np.abs(quats))
