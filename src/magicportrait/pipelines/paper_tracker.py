"""The stage calls of the paper's tracker (``--tracker deca-smirk`` or ``smirk``): the portrait's head and render
appearance from its FLAME codes, and the driving video encoded and aligned to it on codes (the official
preprocessing; our smoothing, expression options and relative pose mode on top)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from magicportrait.alignment import align_to_source
from magicportrait.alignment.codes import align_codes
from magicportrait.heads import HeadModel
from magicportrait.heads.flame_codes import codes_appearance, head_track_from_codes
from magicportrait.rendering.appearance import source_appearance
from magicportrait.tracking.flame_encoders import FlameEncoders, load_flame_encoders
from magicportrait.types import HeadTrack, RenderAppearance, SourceFace, Track

if TYPE_CHECKING:
    from magicportrait.pipelines.guide import GuideConfig

logger = logging.getLogger(__name__)


def load_encoders(config: GuideConfig, head_model: HeadModel) -> FlameEncoders | None:
    """DECA and / or SMIRK for ``--tracker deca-smirk`` / ``smirk`` (None for our own fit)."""
    return load_flame_encoders(config.head.encoders, head_model.name, config.device)


def encoded_source(encoders: FlameEncoders, head_model: HeadModel, crop: np.ndarray, track: Track,
                   config: GuideConfig) -> tuple[HeadTrack, RenderAppearance | None]:
    """The portrait crop's head from its codes, and the render map's appearance: from the codes' texture and light
    in the FLAME texture space (official) when both exist, else estimated from the portrait as with our fit."""
    codes = encoders.encode_image(crop, track.landmarks[0])
    head = head_track_from_codes(head_model, codes)
    texture_path = config.head.flame_texture_path()
    appearance = codes_appearance(head_model, codes, texture_path, config.appearance.texture_size)
    if appearance is None:
        appearance = source_appearance(head_model, crop, track, head, config.appearance, texture_path)
    return head, appearance


def align_encoded(head_model: HeadModel, source: SourceFace, encoders: FlameEncoders, driving_path: str | Path,
                  driving_track: Track, config: GuideConfig) -> HeadTrack:
    """The driving video encoded frame by frame and put on the portrait: on codes in the absolute pose mode (the
    official transfer), on head tracks in the relative one."""
    from magicportrait.pipelines.stages import driving_frames, with_provenance

    source_codes = encoders.encode_image(source.crop, source.track.landmarks[0])  # as for the portrait's head
    with tqdm(total=driving_track.num_frames, desc=f"encode ({encoders.config.tracker})", unit="frame",
              disable=not config.show_progress) as progress:
        driving_codes = encoders.encode_frames(driving_frames(driving_path, config), driving_track, progress)
    alignment = config.alignment.resolved(official=True)
    if alignment.pose_mode == "absolute":
        aligned_codes = align_codes(source_codes, driving_codes, alignment, driving_track.fps)
        aligned = head_track_from_codes(head_model, aligned_codes, fps=driving_track.fps)
    else:
        driving = head_track_from_codes(head_model, driving_codes, fps=driving_track.fps)
        aligned = align_to_source(source.head, driving, alignment)
    return with_provenance(aligned, source)
