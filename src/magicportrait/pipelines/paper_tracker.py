"""The stage calls of the paper's tracker and of FLAME codes from files: ``--tracker deca-smirk`` / ``smirk``
encode the portrait and the driving frames, ``--source-flame-codes`` / ``--flame-codes`` read them; a side with
neither uses our own fit. Both sides as codes are aligned on codes in the absolute pose mode (the official
transfer), otherwise on head tracks (our smoothing, expression options and relative pose mode on top)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from magicportrait.alignment import align_to_source
from magicportrait.alignment.codes import align_codes
from magicportrait.errors import InputError
from magicportrait.heads import HeadModel
from magicportrait.heads.flame_code_files import check_placeable, load_flame_codes, reframe_codes
from magicportrait.heads.flame_codes import codes_appearance, head_track_from_codes
from magicportrait.rendering.appearance import source_appearance
from magicportrait.tracking.flame_encoders import load_flame_encoders
from magicportrait.types import FlameCodes, HeadTrack, RenderAppearance, SourceFace, Track

if TYPE_CHECKING:
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.pipelines.run_cache import RunCache
    from magicportrait.tracking.flame_encoders import FlameEncoders

logger = logging.getLogger(__name__)


class PaperTracker:
    """FLAME codes of the portrait and of the driving video for one run (the encoders loaded once)."""

    def __init__(self, config: GuideConfig, head_model: HeadModel, cache: RunCache | None = None) -> None:
        self.config, self.head_model = config, head_model
        self.settings = config.head.encoders

        def load() -> FlameEncoders | None:
            return load_flame_encoders(self.settings, head_model.name, config.device)

        self.encoders = load() if cache is None else cache.encoders(self.settings, head_model.name, config.device,
                                                                     load)
        self.codes: dict[str, FlameCodes] = {}  # "source", "driving": what this run used, in their images' pixels
        self._source_in_canvas: FlameCodes | None = None

    def source_head(self, image: np.ndarray, image_to_crop: np.ndarray, crop: np.ndarray,
                    track: Track) -> tuple[HeadTrack, RenderAppearance | None] | None:
        """The portrait crop's head from its codes and the render map's appearance (from the codes' texture and
        light in the FLAME texture space when both exist, else estimated from the portrait); None: our fit."""
        path, canvas = self.settings.source_flame_codes, (crop.shape[0], crop.shape[1])
        if path:
            in_image = load_flame_codes(path, image.shape[:2], source="file").select(slice(0, 1))
            check_placeable(in_image, path)
            codes = reframe_codes(in_image, image_to_crop, canvas)
        elif self.encoders is not None:
            codes = self.encoders.encode_image(crop, track.landmarks[0])
            in_image = reframe_codes(codes, np.linalg.inv(np.vstack([image_to_crop, [0, 0, 1]])), image.shape[:2])
        else:
            return None
        self.codes["source"], self._source_in_canvas = in_image, codes  # saved for the portrait as it is
        head = head_track_from_codes(self.head_model, codes)
        texture_path = self.config.head.flame_texture_path()
        appearance = codes_appearance(self.head_model, codes, texture_path, self.config.appearance.texture_size)
        if appearance is None:
            appearance = source_appearance(self.head_model, crop, track, head, self.config.appearance, texture_path)
        return head, appearance

    def align(self, source: SourceFace, driving_path: str | Path, driving_track: Track) -> HeadTrack:
        """The driving motion put on the portrait (see the module docstring)."""
        from magicportrait.pipelines.stages import with_provenance

        config, fps = self.config, driving_track.fps
        alignment = config.alignment.resolved(official=True)
        driving = self._driving_codes(driving_path, driving_track)
        source_codes = self._source_in_canvas
        if driving is not None and source_codes is not None and alignment.pose_mode == "absolute":
            aligned = head_track_from_codes(self.head_model, align_codes(source_codes, driving, alignment, fps),
                                            fps=fps)
        else:
            aligned = align_to_source(source.head, self._driving_head(driving, driving_track, alignment.pose_mode),
                                      alignment)
        return with_provenance(aligned, source)

    def _driving_codes(self, driving_path: str | Path, track: Track) -> FlameCodes | None:
        from magicportrait.pipelines.stages import driving_frames

        path = self.settings.flame_codes
        if path:
            codes = load_flame_codes(path, track.image_size, source="file")
            if codes.num_frames < track.num_frames:
                raise InputError(f"{path} holds FLAME codes of {codes.num_frames} frames, the driving video has "
                                 f"{track.num_frames}; give codes of every frame (or --max-frames "
                                 f"{codes.num_frames}).")
            codes = codes.select(slice(0, track.num_frames))
        elif self.encoders is not None:
            with tqdm(total=track.num_frames, desc=f"encode ({self.settings.tracker})", unit="frame",
                      disable=not self.config.show_progress) as progress:
                codes = self.encoders.encode_frames(driving_frames(driving_path, self.config), track, progress)
        else:
            return None
        self.codes["driving"] = codes
        return codes

    def _driving_head(self, codes: FlameCodes | None, track: Track, pose_mode: str) -> HeadTrack:
        if codes is None:
            return self.head_model.fit(track)
        if pose_mode == "relative":
            check_placeable(codes, self.settings.flame_codes or "the driving codes")
        elif not np.isfinite(codes.crop_matrix).all() or not np.isfinite(codes.cam).all():
            # absolute pose: only the rotation, expression and jaw are used; any camera will do
            codes = replace(codes, cam=np.tile([1.0, 0.0, 0.0], (codes.num_frames, 1)),
                            crop_matrix=np.tile(np.eye(3), (codes.num_frames, 1, 1)))
        return head_track_from_codes(self.head_model, codes, fps=track.fps)


def load_paper_tracker(config: GuideConfig, head_model: HeadModel, cache: RunCache | None = None,
                       ) -> PaperTracker | None:
    """The run's :class:`PaperTracker` (its encoders from ``cache`` when given), or None when neither side uses
    FLAME codes (our own fit)."""
    return PaperTracker(config, head_model, cache) if config.head.encoders.uses_codes else None
