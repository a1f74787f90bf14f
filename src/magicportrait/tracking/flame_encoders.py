"""The paper's own 3D tracker: FLAME codes per image from DECA and SMIRK (user-supplied weights), batched.

``--tracker deca-smirk`` (the official MagicPortrait preprocessing): DECA's coarse encoder on every image gives
shape, texture, light, camera and the global rotation; SMIRK on the same image replaces the expression and jaw
(and gives eyelids). ``--tracker smirk``: SMIRK alone (its shape, pose, camera, expression, jaw, eyelids; no
texture or light: the render map's albedo is then estimated from the portrait). ``ours`` (default) is the
landmark fit of :mod:`magicportrait.heads`, which needs no extra weights.

DECA's crop is defined on the 68 iBUG landmarks (FAN's); ours come from the MediaPipe track through the fixed
correspondence of :mod:`magicportrait.tracking.ibug68`. SMIRK's crop is defined on MediaPipe's 478 points, as in
the official code. Crops are computed on the frames at their tracked resolution; the encoders run on batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from magicportrait.config import HEAD_MODEL, check_at_least, check_choices, check_positive, option
from magicportrait.errors import InputError
from magicportrait.io.assets import DECA, SMIRK, resolve_asset
from magicportrait.types import FlameCodes, Track

logger = logging.getLogger(__name__)
TRACKERS = ("ours", "deca-smirk", "smirk")
OFFICIAL_DECA_CROP_SCALE = 1.3  # the MagicPortrait preprocessing (DECA's own TestData uses 1.25)


@dataclass
class FlameEncoderConfig:
    """Which 3D tracker gives the FLAME parameters, and the encoders' weights."""

    cli_group: ClassVar[str] = HEAD_MODEL

    tracker: Literal["ours", "deca-smirk", "smirk"] = option(
        "ours", "ours: our landmark fit (no extra weights); deca-smirk: the paper's tracker, DECA + SMIRK (what the "
        "official weights were trained on; needs --deca-weights, --smirk-weights and FLAME 2020); smirk: SMIRK "
        "alone (needs --smirk-weights and FLAME).")
    deca_weights: str | None = option(None, f"DECA's deca_model.tar (for --tracker deca-smirk); default: ${DECA.env}.")
    smirk_weights: str | None = option(None, f"SMIRK's SMIRK_em1.pt (for --tracker deca-smirk or smirk); default: "
                                             f"${SMIRK.env}.")
    deca_crop_scale: float = option(OFFICIAL_DECA_CROP_SCALE, "DECA's crop side / the 68-landmark box (x 1.1): "
                                    "1.3 in the MagicPortrait preprocessing, 1.25 in DECA's own demo.")
    encoder_batch: int = option(16, "Frames encoded at once by DECA / SMIRK.")
    flame_codes: str | None = option(None, "The driving video's FLAME codes from another tracker (DECA, EMOCA, "
                                           "SMIRK saved outputs, or our driving_codes.npz), instead of encoding or "
                                           "fitting its frames; see the README, 'Trackers'. Needs --flame.")
    source_flame_codes: str | None = option(None, "The portrait's FLAME codes from another tracker (with its camera "
                                                  "and crop 'tform'), instead of encoding or fitting it.")

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(self, "deca_crop_scale")
        check_at_least(self, 1, "encoder_batch")

    @property
    def uses_encoders(self) -> bool:
        return self.tracker != "ours"

    @property
    def uses_codes(self) -> bool:
        """FLAME codes on either side (encoded, or read from files)."""
        return self.uses_encoders or bool(self.flame_codes or self.source_flame_codes)

    def weight_paths(self) -> tuple[Path | None, Path | None]:
        """The DECA and SMIRK files this tracker needs (None where it needs none), checked to exist."""
        if not self.uses_encoders:
            return None, None
        deca = _required(DECA, self.deca_weights, self.tracker) if self.tracker == "deca-smirk" else None
        return deca, _required(SMIRK, self.smirk_weights, self.tracker)


class FlameEncoders:
    """DECA and / or SMIRK loaded once, turning images and their MediaPipe landmarks into :class:`FlameCodes`."""

    def __init__(self, config: FlameEncoderConfig, device: str | torch.device = "cpu") -> None:
        from magicportrait.tracking.deca_encoder import DecaEncoder
        from magicportrait.tracking.smirk_encoder import SmirkEncoder

        if not config.uses_encoders:
            raise ValueError("FlameEncoders is for --tracker deca-smirk or smirk.")
        self.config, self.device = config, torch.device(device)
        deca_path, smirk_path = config.weight_paths()
        # channels-last convolutions: 1.3x (ResNet-50) and 1.5x (MobileNetV3) faster on 2 CPU cores
        layout = {"device": self.device, "memory_format": torch.channels_last}
        self.deca = None if deca_path is None else DecaEncoder.from_checkpoint(deca_path).to(**layout)
        self.smirk = SmirkEncoder.from_checkpoint(smirk_path).to(**layout)

    def encode_image(self, image: np.ndarray, landmarks: np.ndarray) -> FlameCodes:
        """One image `(H, W, 3)` uint8 RGB and its `(478, 2+)` landmarks -> codes of T=1."""
        track = Track(landmarks=np.asarray(landmarks, np.float32)[None], boxes=np.zeros((1, 3), np.float32),
                      detected=np.ones(1, bool), fps=0.0, image_size=image.shape[:2])
        return self.encode_frames([image], track)

    def encode_frames(self, frames: Iterable[np.ndarray], track: Track, progress=None) -> FlameCodes:
        """Every frame of ``track`` (the frames it was tracked on, at that resolution) -> codes of T frames."""
        parts = [self._encode_batch(batch, track.landmarks[start:start + len(batch)], progress)
                 for start, batch in _batches(frames, self.config.encoder_batch, track.num_frames)]
        if not parts:
            raise InputError("No frames to encode.")
        arrays = {name: None if parts[0][name] is None else np.concatenate([part[name] for part in parts])
                  for name in parts[0]}
        if len(arrays["shape"]) != track.num_frames:
            raise InputError(f"The video gave {len(arrays['shape'])} frames but its track has {track.num_frames}.")
        return FlameCodes(**arrays, image_size=track.image_size, source=self.config.tracker)

    def _batch(self, crops: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(crops).to(self.device).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def _encode_batch(self, frames: list[np.ndarray], landmarks: np.ndarray, progress) -> dict:
        from magicportrait.tracking.deca_encoder import deca_crop
        from magicportrait.tracking.ibug68 import ibug68_from_mediapipe
        from magicportrait.tracking.smirk_encoder import smirk_crop

        smirk_crops = [smirk_crop(frame, points[:, :2]) for frame, points in zip(frames, landmarks, strict=True)]
        smirk = self.smirk(self._batch([crop for crop, _, _ in smirk_crops]))
        result = {"expression": smirk.expression_params, "jaw": smirk.jaw_params, "eyelids": smirk.eyelid_params}
        if self.deca is None:
            result.update(shape=smirk.shape_params, global_pose=smirk.pose_params, cam=smirk.cam, tex=None,
                          light=None)
            matrices = [matrix for _, _, matrix in smirk_crops]
        else:
            deca_crops = [deca_crop(frame, ibug68_from_mediapipe(points[:, :2]), scale=self.config.deca_crop_scale)
                          for frame, points in zip(frames, landmarks, strict=True)]
            deca = self.deca(self._batch([crop for crop, _ in deca_crops]))
            result.update(shape=deca.shape, global_pose=deca.pose[:, :3], cam=deca.cam, tex=deca.tex,
                          light=deca.light)
            matrices = [matrix for _, matrix in deca_crops]
        if progress is not None:
            progress.update(len(frames))
        arrays = {name: None if value is None else value.float().cpu().numpy() for name, value in result.items()}
        return {**arrays, "crop_matrix": np.stack(matrices)}


def load_flame_encoders(config: FlameEncoderConfig, head_model_name: str,
                        device: str | torch.device = "cpu") -> FlameEncoders | None:
    """DECA and / or SMIRK for ``--tracker deca-smirk`` / ``smirk`` (None for our own fit, or when files give both
    sides' codes), checked against the head model (the codes are FLAME's)."""
    if not config.uses_codes:
        return None
    if head_model_name != "flame":
        what = f"--tracker {config.tracker}" if config.uses_encoders else "FLAME codes"
        raise InputError(f"{what} gives FLAME parameters: pass the FLAME 2020 model generic_model.pkl with --flame "
                         "(or $MAGICPORTRAIT_FLAME); see the README, 'Trackers'.")
    if not config.uses_encoders or (config.flame_codes and config.source_flame_codes):
        return None
    return FlameEncoders(config, device=device)


def _required(asset, value: str | None, tracker: str):
    path = resolve_asset(asset, value)
    if path is None:
        raise InputError(f"--tracker {tracker} needs the {asset.what}: pass {asset.flag} PATH or set ${asset.env}. "
                         f"{asset.hint} Or use --tracker ours (no extra weights).")
    return path


def _batches(frames: Iterable[np.ndarray], size: int, limit: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    iterator, start = islice(iter(frames), limit), 0
    while batch := list(islice(iterator, size)):
        yield start, batch
        start += len(batch)
