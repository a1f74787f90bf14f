"""``magicportrait guide``: portrait + driving video -> depth / normal / render guidance of the aligned head.

Flow (each stage's output is saved so it can be reused): track the source and the driving video ->
fit the head model -> structured alignment (source identity, driving motion) -> render the three maps of
every frame in the source's square face crop, streamed to videos and PNG folders. With ``motion=`` (``--motion``)
a saved aligned head track replaces tracking and aligning the driving video.

Head model: FLAME when a FLAME file is given (``--flame PATH`` or ``$MAGICPORTRAIT_FLAME``; see
:class:`~magicportrait.heads.HeadModelConfig`), else the open face geometry. With FLAME, the render map's albedo
and SH light are estimated from the source portrait, or fitted in FLAME's texture space when ``FLAME_texture.npz``
is given (``--flame-texture``); with the open geometry the portrait itself is the albedo.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from tqdm.auto import tqdm

from magicportrait.alignment import AlignmentConfig, MotionEdit
from magicportrait.config import (
    FACE,
    GUIDANCE,
    INPUT,
    OUTPUT,
    check_at_least,
    check_choices,
    check_device,
    check_range,
    flag,
    option,
)
from magicportrait.errors import InputError
from magicportrait.heads import HeadModel, HeadModelConfig, head_model_from_config
from magicportrait.io.frames import FrameFolder
from magicportrait.io.image import load_image
from magicportrait.io.output import output_folder
from magicportrait.pipelines import stages
from magicportrait.rendering.appearance import AppearanceConfig
from magicportrait.rendering.guidance import render_guidance
from magicportrait.tracking import TrackerConfig
from magicportrait.tracking.boxes import parse_face_box
from magicportrait.types import GUIDANCE_NAMES, SourceFace

logger = logging.getLogger(__name__)
MIN_SIZE, MAX_SIZE = 64, 2048
VIDEO_PRESET = "veryfast"  # flat-shaded maps compress well; x264 "medium" would dominate the run time


@dataclass
class GuideConfig:
    """Options of the guidance stage (the CLI's ``guide`` flags)."""

    cli_group: ClassVar[str] = GUIDANCE
    cli_field_groups: ClassVar[dict[str, str]] = {
        "max_frames": INPUT, "face": FACE, "face_box": FACE, "driving_max_size": FACE, "write_frames": OUTPUT,
        "write_preview": OUTPUT, "keep_audio": OUTPUT, "show_progress": OUTPUT}

    size: int = option(512, "Side of the square guidance maps and of the source face crop, pixels.")
    max_frames: int | None = option(None, "Use only the first N driving frames.")
    face: int | None = option(None, "Which face of the source portrait to animate when it shows several: 0 is the "
                                    "leftmost, 1 the next to the right, ...; default: the most prominent one.")
    face_box: str | None = option(None, "Use the face inside this box of the portrait, x,y,width,height in pixels "
                                        "of the image (a face the detector misses; `magicportrait faces IMAGE -o "
                                        "faces.png` shows the faces it finds).")
    driving_max_size: int = option(1280, "Driving frames are downscaled to this longer side for tracking.")
    framing: Literal["ours", "official"] | None = option(
        None, "How the portrait is framed in the square canvas: ours (2x the landmark box, a little above its "
        "centre) or official (the official preprocessing's crop, 2.18 face-box widths; see the README). Default: "
        "official with the diffusion backend (the released weights saw faces at that scale), ours otherwise.")
    write_frames: bool = option(True, "Also write per-frame PNG folders depth/ normal/ render/.")
    write_preview: bool = option(True, "Write preview.mp4: source | driving | depth | normal | render.")
    keep_audio: bool = option(True, "Copy the driving video's audio into the videos written (preview.mp4; for "
                                    "animate result.mp4 and grid.mp4).")
    chunk_size: int = option(4, "Frames rendered per batch (larger uses more memory for little gain).")
    device: str = option("cpu", "Torch device for rendering, e.g. cpu or cuda.")
    show_progress: bool = option(True, "Show progress bars.")
    head: HeadModelConfig = field(default_factory=HeadModelConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    edit: MotionEdit = field(default_factory=MotionEdit, metadata={"prefix": "edit_"})
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig, metadata={"prefix": "appearance_"})

    def __post_init__(self) -> None:
        check_range(self, "size", MIN_SIZE, MAX_SIZE)  # 512 matches the diffusion model
        check_choices(self)
        check_at_least(self, 1, "max_frames", "chunk_size")
        check_at_least(self, 0, "face")
        if self.face_box is not None:
            parse_face_box(self.face_box, flag("face_box"))
            if self.face is not None:
                raise InputError(f"{flag('face')} and {flag('face_box')} both choose the face; give one of them.")
        check_at_least(self, MIN_SIZE, "driving_max_size")
        check_device(self)
        reference = self.alignment.reference_frame
        if self.max_frames is not None and reference >= self.max_frames:
            raise InputError(f"{flag('reference_frame')} {reference} is outside the first {flag('max_frames')} "
                             f"{self.max_frames} frames.")


@dataclass
class GuideResult:
    output_dir: Path
    num_frames: int
    fps: float
    missing_frames: list[int]
    files: dict[str, Path]
    head_model: str = "mediapipe"  # which head model made the guidance: "mediapipe" (open geometry) or "flame"
    crop_matrix: np.ndarray | None = None  # (2, 3) source image -> source.png crop (OpenCV convention)


class GuidePipeline:
    """Portrait + driving video -> guidance maps. Usable from Python::

        result = GuidePipeline(GuideConfig(size=512)).run("portrait.jpg", "driving.mp4", "out/")
    """

    def __init__(self, config: GuideConfig | None = None, head_model: HeadModel | None = None) -> None:
        self.config = config or GuideConfig()
        self.head_model = head_model or head_model_from_config(self.config.head)

    def run(self, source_path: str | Path, driving_path: str | Path | None, output_dir: str | Path,
            motion: str | Path | None = None) -> GuideResult:
        config = self.config
        with output_folder(output_dir) as out:  # locked and checked now, before minutes of tracking
            image = load_image(source_path)
            source, driving = stages.prepare_inputs(config, self.head_model, image, str(source_path), driving_path,
                                                    motion)
            with out.stage() as stage:
                files = stages.save_inputs(stage, source, driving)
                files.update(self._write_maps(stage, source, driving, driving_path))
        output_dir = Path(output_dir)
        missing = [] if driving.driving_track is None else driving.driving_track.missing_frames.tolist()
        return GuideResult(output_dir=output_dir, num_frames=driving.aligned.num_frames, fps=driving.fps,
                           missing_frames=missing, head_model=self.head_model.name, crop_matrix=source.crop_matrix,
                           files={name: output_dir / path.relative_to(stage) for name, path in files.items()})

    def _write_maps(self, stage: Path, source: SourceFace, motion: stages.Motion,
                    driving_path: str | Path | None) -> dict[str, Path]:
        from magicportrait.io.video import VideoWriter

        config, aligned = self.config, motion.aligned
        files = {name: stage / f"{name}.mp4" for name in GUIDANCE_NAMES}
        folders = {name: FrameFolder(stage / name, aligned.num_frames) for name in GUIDANCE_NAMES}
        with ExitStack() as stack, ThreadPoolExecutor(max_workers=2) as pool:
            writers = {name: stack.enter_context(VideoWriter(files[name], motion.fps, preset=VIDEO_PRESET))
                       for name in GUIDANCE_NAMES}
            if config.write_preview:
                files["preview"] = stage / "preview.mp4"
                preview = stack.enter_context(VideoWriter(files["preview"], motion.fps, preset=VIDEO_PRESET,
                                                          audio_from=stages.audio_source(driving_path, config)))
                crops = stages.driving_crops(driving_path, motion.driving_track, config, aligned.num_frames)
            if config.write_frames:
                for folder in folders.values():
                    folder.create()
            progress = stack.enter_context(tqdm(total=aligned.num_frames, desc="render", unit="frame",
                                                disable=not config.show_progress))
            index = 0
            for maps in render_guidance(self.head_model, source, aligned, config.chunk_size, config.device):
                pending = []
                for i in range(len(maps["depth"])):
                    for name in GUIDANCE_NAMES:
                        writers[name].write(maps[name][i])
                        if config.write_frames:  # cv2 releases the GIL while encoding: PNGs overlap rendering
                            pending.append(pool.submit(folders[name].write, index, maps[name][i]))
                    if config.write_preview:
                        preview.write(np.concatenate([source.crop, next(crops)] +
                                                     [maps[name][i] for name in GUIDANCE_NAMES], axis=1))
                    index += 1
                for future in pending:  # re-raises a failed PNG write here
                    future.result()
                progress.update(len(maps["depth"]))
        return files
