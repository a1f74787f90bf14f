"""SMIRK's encoder, loaded from the official ``SMIRK_em1.pt``, and SMIRK's face crop, as the official code computes
them (checked against vectors made by the official SMIRK).

Three independent MobileNetV3 "minimal" backbones see the same 224x224 RGB crop in [0, 1] (not normalised); each
last feature map is averaged and goes through one linear layer:
- pose (small backbone, 6 outputs): global rotation (axis-angle, 3) and orthographic camera (3);
- shape (large, 300): FLAME shape;
- expression (large, 55): FLAME expression (50), eyelids (2, clamped to [0, 1]), jaw (3: the opening through a
  ReLU, the two sideways angles clamped to +-0.2).
MagicPortrait takes the expression and jaw from SMIRK and the rest from DECA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magicportrait.errors import CheckpointError
from magicportrait.tracking.mobilenet_v3 import MobileNetV3Features

INPUT_SIZE = 224
CROP_SCALE = 1.4
ENCODER_PREFIX = "smirk_encoder."
GENERATOR_PREFIX = "smirk_generator."


@dataclass(frozen=True)
class SmirkCodes:
    """SMIRK's output dict: `(B, n)` tensors."""

    pose_params: torch.Tensor
    cam: torch.Tensor
    shape_params: torch.Tensor
    expression_params: torch.Tensor
    eyelid_params: torch.Tensor
    jaw_params: torch.Tensor


class _Branch(nn.Module):
    """A backbone (``encoder``) and its linear head, under the head name the checkpoint uses."""

    def __init__(self, variant: str, head: str, out_features: int) -> None:
        super().__init__()
        self.encoder = MobileNetV3Features(variant)
        self.head_name = head
        setattr(self, head, nn.Sequential(nn.Linear(self.encoder.out_channels, out_features)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.encoder(images), 1).flatten(1)
        return getattr(self, self.head_name)(pooled)


class SmirkEncoder(nn.Module):
    """SMIRK's ``SmirkEncoder`` (keys ``pose_encoder.*``, ``shape_encoder.*``, ``expression_encoder.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.pose_encoder = _Branch("small", "pose_cam_layers", 6)
        self.shape_encoder = _Branch("large", "shape_layers", 300)
        self.expression_encoder = _Branch("large", "expression_layers", 55)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> SmirkEncoder:
        """Load the encoder strictly from the official ``SMIRK_em1.pt`` (its ``smirk_encoder.*`` entries; the
        ``smirk_generator.*`` ones are recognised and ignored), in eval mode.

        Raises:
            CheckpointError: the file is missing, not a SMIRK checkpoint, or its keys or shapes differ (listed).
        """
        from magicportrait.models.checkpoints import load_strict

        path = Path(path)
        state = _read_smirk_checkpoint(path)
        model = cls()
        load_strict(model, state, f"{path} [smirk_encoder]")
        return model.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> SmirkCodes:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"SMIRK's encoder takes (B, 3, H, W) crops, got {tuple(images.shape)}.")
        pose = self.pose_encoder(images)
        expression = self.expression_encoder(images)
        jaw = torch.cat([F.relu(expression[:, 52:53]), expression[:, 53:55].clamp(-0.2, 0.2)], dim=1)
        return SmirkCodes(pose_params=pose[:, :3], cam=pose[:, 3:6], shape_params=self.shape_encoder(images),
                          expression_params=expression[:, :50], eyelid_params=expression[:, 50:52].clamp(0, 1),
                          jaw_params=jaw)


def _read_smirk_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    from magicportrait.tracking.deca_encoder import read_encoder_checkpoint

    contents = read_encoder_checkpoint(path, "SMIRK", "--smirk-weights", "SMIRK_em1.pt")
    if not isinstance(contents, dict) or not any(str(key).startswith(ENCODER_PREFIX) for key in contents):
        found = sorted(map(str, contents))[:8] if isinstance(contents, dict) else type(contents).__name__
        raise CheckpointError(f"{path}: not a SMIRK checkpoint: expected '{ENCODER_PREFIX}*' entries, found "
                              f"{found}.")
    unknown = [key for key in contents if not key.startswith((ENCODER_PREFIX, GENERATOR_PREFIX))]
    if unknown:
        raise CheckpointError(f"{path}: unexpected entries beside the SMIRK encoder and generator: {unknown[:8]}.")
    return {key[len(ENCODER_PREFIX):]: value for key, value in contents.items() if key.startswith(ENCODER_PREFIX)}


# --- the crop --------------------------------------------------------------------------------------------------


def crop_square(landmarks: np.ndarray, scale: float = CROP_SCALE) -> tuple[np.ndarray, int]:
    """SMIRK's crop square from MediaPipe's 478 points in pixels `(478, 2+)`: the centre of their box and
    ``int(mean side x scale)``."""
    from magicportrait.tracking.deca_encoder import landmark_box

    center, old_size = landmark_box(landmarks)
    return center, int(old_size * scale)


def smirk_crop(image: np.ndarray, landmarks: np.ndarray, scale: float = CROP_SCALE,
               crop_size: int = INPUT_SIZE) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """SMIRK's input crop of a uint8 RGB image: float64 bilinear warp (0 outside), truncated to uint8, then / 255.
    Returns the crop `(3, 224, 224)` float32, the uint8 crop `(224, 224, 3)` and the image -> crop 3x3 matrix."""
    from skimage.transform import SimilarityTransform, warp

    from magicportrait.tracking.deca_encoder import crop_region, crop_transform

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"smirk_crop takes a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}.")
    center, size = crop_square(landmarks, scale)
    matrix = crop_transform(center, size, crop_size)
    region, shifted = crop_region(image, matrix, crop_size)
    warped = warp(region, SimilarityTransform(shifted).inverse, output_shape=(crop_size, crop_size),
                  preserve_range=True)
    crop_u8 = warped.astype(np.uint8)  # truncation, as the official crop does
    crop = torch.from_numpy(crop_u8.transpose(2, 0, 1).astype(np.float32) / 255.0)
    return crop, crop_u8, matrix
