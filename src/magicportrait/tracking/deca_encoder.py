"""DECA's coarse encoder (``E_flame``, and ``E_detail``), loaded from the official ``deca_model.tar``, and DECA's face
crop, as the official code computes them (checked against vectors made by the official DECA).

The encoder is a ResNet-50 (torchvision layout), a 7x7 average pool (a global mean at the 224x224 input it is made
for) and an MLP 2048 -> 1024 -> 236; the 236 numbers split into FLAME shape (100), albedo texture (50), expression
(50), pose (global rotation and jaw, axis-angle, 3 + 3), orthographic camera (scale, tx, ty) and spherical-harmonics
light (9 x 3). Its input is RGB in [0, 1], not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magicportrait.errors import CheckpointError
from magicportrait.tracking.resnet import ResNet50

CODE_SIZES = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
"""DECA's ``decompose_code`` split of the 236 outputs, in order (its default config)."""
INPUT_SIZE = 224
DETAIL_SIZE = 128
CROP_SCALE = 1.25
"""DECA's ``TestData`` scale; the MagicPortrait preprocessing uses 1.3."""


@dataclass(frozen=True)
class DecaCodes:
    """One image's (or a batch's) DECA codes; ``light`` is `(B, 9, 3)`, the others `(B, n)`."""

    shape: torch.Tensor
    tex: torch.Tensor
    exp: torch.Tensor
    pose: torch.Tensor
    cam: torch.Tensor
    light: torch.Tensor

    @classmethod
    def from_parameters(cls, parameters: torch.Tensor) -> DecaCodes:
        """Split `(B, 236)` encoder outputs (no activation, no clamp: as DECA does)."""
        if parameters.ndim != 2 or parameters.shape[1] != sum(CODE_SIZES.values()):
            raise ValueError(f"DECA parameters must be (B, {sum(CODE_SIZES.values())}), got "
                             f"{tuple(parameters.shape)}.")
        parts = dict(zip(CODE_SIZES, parameters.split(list(CODE_SIZES.values()), dim=1), strict=True))
        parts["light"] = parts["light"].reshape(-1, 9, 3)  # light[b, i, c] = p[b, 209 + 3i + c]
        return cls(**parts)


class ResnetCodeEncoder(nn.Module):
    """ResNet-50 -> 7x7 average pool -> Linear 2048->1024 -> ReLU -> Linear 1024->``out_features`` (DECA's
    ``ResnetEncoder``; keys ``encoder.*`` and ``layers.0/2.*``)."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.encoder = ResNet50()
        self.layers = nn.Sequential(nn.Linear(self.encoder.out_channels, 1024), nn.ReLU(),
                                    nn.Linear(1024, out_features))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, 224, 224)` in [0, 1] -> `(B, 2048)`."""
        if images.ndim != 4 or images.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"DECA's encoder takes (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) crops, got "
                             f"{tuple(images.shape)}.")
        return F.avg_pool2d(self.encoder(images), 7, stride=1).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.features(images))


class DecaEncoder(nn.Module):
    """``E_flame`` (the codes) and, optionally, ``E_detail`` (the 128-d detail code)."""

    def __init__(self, with_detail: bool = False) -> None:
        super().__init__()
        self.flame = ResnetCodeEncoder(sum(CODE_SIZES.values()))
        self.detail = ResnetCodeEncoder(DETAIL_SIZE) if with_detail else None

    @classmethod
    def from_checkpoint(cls, path: str | Path, with_detail: bool = False) -> DecaEncoder:
        """Load the official ``deca_model.tar`` strictly (``E_flame``, and ``E_detail`` with ``with_detail``;
        ``D_detail`` is recognised and ignored), in eval mode.

        Raises:
            CheckpointError: the file is missing, not a DECA checkpoint, or its keys or shapes differ (listed).
        """
        from magicportrait.models.checkpoints import load_strict

        path = Path(path)
        contents = _read_deca_checkpoint(path)
        model = cls(with_detail)
        load_strict(model.flame, contents["E_flame"], f"{path} [E_flame]")
        if model.detail is not None:
            load_strict(model.detail, contents["E_detail"], f"{path} [E_detail]")
        return model.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> DecaCodes:
        return DecaCodes.from_parameters(self.flame(images))


def read_encoder_checkpoint(path: Path, name: str, flag: str, filename: str) -> object:
    """``torch.load`` of a released encoder checkpoint (tensors only), or a CheckpointError naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{name} checkpoint {path} does not exist; pass {flag} with the path of {filename} "
                              f"(from the {name} release).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or one holding code: torch raises several kinds
        raise CheckpointError(f"{path}: not a readable {name} checkpoint ({type(error).__name__}: "
                              f"{str(error)[:200]}).") from None


def _read_deca_checkpoint(path: Path) -> dict:
    contents = read_encoder_checkpoint(path, "DECA", "--deca-weights", "deca_model.tar")
    parts = ("E_flame", "E_detail", "D_detail")
    if not isinstance(contents, dict) or "E_flame" not in contents:
        found = sorted(contents)[:8] if isinstance(contents, dict) else type(contents).__name__
        raise CheckpointError(f"{path}: not a DECA checkpoint: expected the entries {', '.join(parts)}, found "
                              f"{found}.")
    return contents


# --- the crop --------------------------------------------------------------------------------------------------


def landmark_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The centre `(2,)` and mean side of the box around points `(N, 2+)` in pixels (DECA's and SMIRK's crops)."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    left, top = points.min(axis=0)
    right, bottom = points.max(axis=0)
    center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
    return center, ((right - left) + (bottom - top)) / 2


def crop_box(landmarks: np.ndarray | None = None, box: tuple[float, float, float, float] | None = None,
             scale: float = CROP_SCALE) -> tuple[np.ndarray, int]:
    """DECA's crop square: centre `(2,)` and side (an int, truncated) from 68 landmarks `(68, 2)` (the box around
    them x 1.1) or a detector box ``(left, top, right, bottom)`` (its mean side, centre moved down 0.12 x that)."""
    if landmarks is not None:
        center, mean_side = landmark_box(landmarks)
        old_size = mean_side * 1.1
    elif box is not None:
        left, top, right, bottom = box
        old_size = (right - left + bottom - top) / 2
        center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0 + old_size * 0.12])
    else:
        raise ValueError("crop_box needs landmarks or a box.")
    return center, int(old_size * scale)


def crop_transform(center: np.ndarray, size: int, crop_size: int = INPUT_SIZE) -> np.ndarray:
    """The 3x3 similarity (image -> crop) taking the square's corners to ``(0, 0), (0, 223), (223, 0)``."""
    from skimage.transform import estimate_transform

    half = size / 2
    source = np.array([[center[0] - half, center[1] - half], [center[0] - half, center[1] + half],
                       [center[0] + half, center[1] - half]])
    target = np.array([[0, 0], [0, crop_size - 1], [crop_size - 1, 0]])
    return estimate_transform("similarity", source, target).params


def deca_crop(image: np.ndarray, landmarks: np.ndarray, scale: float = CROP_SCALE,
              crop_size: int = INPUT_SIZE) -> tuple[torch.Tensor, np.ndarray]:
    """DECA's input crop of a uint8 RGB image: float64 bilinear warp (pixel centres at integers, 0 outside), as
    ``TestData`` computes it. Returns the crop `(3, 224, 224)` float32 in [0, 1] and the image -> crop 3x3 matrix."""
    from skimage.transform import SimilarityTransform, warp

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"deca_crop takes a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}.")
    center, size = crop_box(np.asarray(landmarks, dtype=np.float64), scale=scale)
    matrix = crop_transform(center, size, crop_size)
    region, shifted = crop_region(image, matrix, crop_size)
    crop = warp(region / 255.0, SimilarityTransform(shifted).inverse, output_shape=(crop_size, crop_size))
    return torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32)), matrix


def crop_region(image: np.ndarray, matrix: np.ndarray, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` a ``crop_size`` warp by ``matrix`` (image -> crop) samples, with 2 pixels to spare,
    and the matrix from that part: warping it gives the same crop without converting the whole frame to floats
    (a 720p frame is 20 times the pixels of a 224 crop)."""
    corners = np.array([[0, 0, 1], [crop_size - 1, 0, 1], [0, crop_size - 1, 1], [crop_size - 1, crop_size - 1, 1]])
    points = corners @ np.linalg.inv(matrix)[:2].T
    height, width = image.shape[:2]
    left, top = np.clip(np.floor(points.min(axis=0)).astype(int) - 2, 0, [width, height])
    right, bottom = np.clip(np.ceil(points.max(axis=0)).astype(int) + 3, 0, [width, height])
    if right <= left or bottom <= top:  # the crop lies outside the image: keep one pixel (sampled as 0 outside)
        left, top, right, bottom = 0, 0, 1, 1
    shift = np.array([[1.0, 0.0, left], [0.0, 1.0, top], [0.0, 0.0, 1.0]])
    return image[top:bottom, left:right], matrix @ shift
