"""PSNR and SSIM: known values, a direct implementation of Wang et al.'s formula, and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
from skimage.metrics import structural_similarity

from magicportrait.errors import InputError
from magicportrait.evaluation.image_quality import psnr, psnr_frames, ssim, ssim_frames

PSNR_OFFSET_10 = 10 * math.log10(255 ** 2 / 10 ** 2)  # 28.1308... dB


def textured(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(60, 196, (height, width, 3), dtype=np.uint8)


def direct_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> float:
    """Wang et al. 2004 written out: every 11x11 window fully inside, Gaussian weights (sigma 1.5), per channel."""
    offsets = np.arange(-5, 6)
    gauss = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5 ** 2))
    weights = gauss / gauss.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for channel in range(a.shape[2]):
        x, y = a[..., channel].astype(np.float64), b[..., channel].astype(np.float64)
        for i in range(5, a.shape[0] - 5):
            for j in range(5, a.shape[1] - 5):
                wx, wy = x[i - 5:i + 6, j - 5:j + 6], y[i - 5:i + 6, j - 5:j + 6]
                mx, my = (weights * wx).sum(), (weights * wy).sum()
                vx, vy = (weights * (wx - mx) ** 2).sum(), (weights * (wy - my) ** 2).sum()
                cxy = (weights * (wx - mx) * (wy - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_psnr_known_values():
    a = textured(32, 40, 0)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 10) == pytest.approx(PSNR_OFFSET_10, abs=1e-12)
    assert round(psnr(a, a + 10), 2) == 28.13
    assert psnr(a - 20, a) == pytest.approx(10 * math.log10(255 ** 2 / 400), abs=1e-12)
    unit = a.astype(np.float64) / 255
    assert psnr(unit, unit + 0.1, data_range=1.0) == pytest.approx(20.0, abs=1e-9)


def test_psnr_mask_and_frames():
    a = textured(32, 40, 1)
    b = a + 50
    mask = np.zeros((32, 40), dtype=bool)
    mask[8:20, 10:30] = True
    b[mask] = a[mask] + 10
    assert psnr(a, b, mask=mask) == pytest.approx(PSNR_OFFSET_10, abs=1e-12)
    assert psnr(a, b) < 20
    frames_a = np.stack([a, a, a])
    frames_b = np.stack([a, a + 10, a - 20])
    expected = [math.inf, PSNR_OFFSET_10, 10 * math.log10(255 ** 2 / 400)]
    np.testing.assert_allclose(psnr_frames(frames_a, frames_b), expected, atol=1e-12)
    masks = np.stack([mask, mask, np.zeros_like(mask)])
    np.testing.assert_allclose(psnr_frames(frames_a, np.stack([b, b, b]), mask=masks),
                               [PSNR_OFFSET_10, PSNR_OFFSET_10, np.nan], atol=1e-12)
    with pytest.raises(InputError, match="selects no pixel"):
        psnr(a, b, mask=np.zeros_like(mask))
    with pytest.raises(InputError, match="spatial shape"):
        psnr(a, b, mask=mask[:10])
    with pytest.raises(InputError, match="same shape"):
        psnr(a, b[:10])


def test_ssim_matches_the_formula_written_out():
    a = textured(24, 21, 2)
    b = np.clip(a.astype(np.int16) + np.random.default_rng(3).integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    expected = direct_ssim(a, b)
    assert 0.2 < expected < 0.95  # a non-trivial pair
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert ssim(b, a) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_scikit_image_on_a_real_photo():
    a = skimage.data.astronaut()[100:292, 150:406]
    b = np.clip(a.astype(np.int16) + np.random.default_rng(4).integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    b[50:90, 60:140] = 128
    expected = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     channel_axis=-1, data_range=255)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert ssim(a, a) == 1.0


def test_ssim_frames_and_bad_input():
    a, b = textured(16, 16, 5), textured(16, 16, 6)
    values = ssim_frames(np.stack([a, a]), [a, b])
    assert values[0] == 1.0
    assert values[1] == pytest.approx(direct_ssim(a, b), abs=1e-12)
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(a[:8], b[:8])
    with pytest.raises(InputError, match="pairwise"):
        ssim_frames([a, a], [a])
