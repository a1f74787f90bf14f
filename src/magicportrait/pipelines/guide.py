"""``magicportrait guide``: portrait + driving video -> depth / normal / render guidance of the aligned head.

Flow (each stage's output is saved so it can be reused): track the source and the driving video ->
fit the head model -> structured alignment (source identity, driving motion) -> render the three maps of
every frame in the source's square face crop, streamed to videos and PNG folders.

Head model: FLAME when a FLAME file is given (``GuideConfig.flame``, ``--flame PATH`` or the environment
variable ``MAGICPORTRAIT_FLAME``), else the open face geometry. With FLAME, the render map's albedo and SH
light are estimated from the source portrait, or fitted in FLAME's texture space when ``FLAME_texture.npz`` is
given (``--flame-texture`` / ``MAGICPORTRAIT_FLAME_TEXTURE``); with the open geometry the portrait itself is
the albedo.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import cv2
import numpy as np
from tqdm.auto import tqdm

from magicportrait.alignment import AlignmentConfig, align_to_source
from magicportrait.config import (
    FACE,
    GUIDANCE,
    HEAD_MODEL,
    INPUT,
    OUTPUT,
    check_at_least,
    check_device,
    check_range,
    flag,
    option,
)
from magicportrait.errors import InputError
from magicportrait.heads import HeadModel, MediaPipeHeadModel
from magicportrait.heads.flame_head import FlameFitConfig
from magicportrait.io.atomic import ensure_writable_dir, staged_output_dir
from magicportrait.rendering.appearance import AppearanceConfig
from magicportrait.tracking import FaceTracker, TrackerConfig
from magicportrait.tracking.boxes import crop_matrix, transform_points
from magicportrait.types import HeadTrack, Track

if TYPE_CHECKING:
    from magicportrait.rendering.appearance import RenderAppearance

logger = logging.getLogger(__name__)
MAP_NAMES = ("depth", "normal", "render")
MIN_SIZE, MAX_SIZE = 64, 2048
VIDEO_PRESET = "veryfast"  # flat-shaded maps compress well; x264 "medium" would dominate the run time
FLAME_ENV = "MAGICPORTRAIT_FLAME"
FLAME_TEXTURE_ENV = "MAGICPORTRAIT_FLAME_TEXTURE"


@dataclass
class GuideConfig:
    """Options of the guidance stage (the CLI's ``guide`` flags)."""

    cli_group: ClassVar[str] = GUIDANCE
    cli_field_groups: ClassVar[dict[str, str]] = {
        "max_frames": INPUT, "face": FACE, "driving_max_size": FACE, "write_frames": OUTPUT, "write_preview": OUTPUT,
        "keep_audio": OUTPUT, "show_progress": OUTPUT, "flame": HEAD_MODEL, "flame_texture": HEAD_MODEL,
        "flame_shape_components": HEAD_MODEL, "flame_expression_components": HEAD_MODEL}

    size: int = option(512, "Side of the square guidance maps and of the source face crop, pixels.")
    max_frames: int | None = option(None, "Use only the first N driving frames.")
    face: int | None = option(None, "Which face of the source portrait to animate when it shows several: 0 is the "
                                    "leftmost, 1 the next to the right, ...; default: the most prominent one.")
    driving_max_size: int = option(1280, "Driving frames are downscaled to this longer side for tracking.")
    write_frames: bool = option(True, "Also write per-frame PNG folders depth/ normal/ render/.")
    write_preview: bool = option(True, "Write preview.mp4: source | driving | depth | normal | render.")
    keep_audio: bool = option(True, "Copy the driving video's audio into the videos written (preview.mp4; for "
                                    "animate result.mp4 and grid.mp4).")
    chunk_size: int = option(4, "Frames rendered per batch (larger uses more memory for little gain).")
    device: str = option("cpu", "Torch device for rendering, e.g. cpu or cuda.")
    show_progress: bool = option(True, "Show progress bars.")
    flame: str | None = option(None, f"FLAME model file (FLAME 2020 generic_model.pkl, FLAME 2023 .pkl, or .npz); "
                                     f"default: ${FLAME_ENV}; without one the open face geometry is used.")
    flame_texture: str | None = option(None, f"FLAME texture space FLAME_texture.npz for the render map; default: "
                                             f"${FLAME_TEXTURE_ENV}; without one the albedo is estimated.")
    flame_shape_components: int = option(100, "FLAME identity components used (the official release: 100).")
    flame_expression_components: int = option(50, "FLAME expression components used (the official release: 50).")
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    flame_fit: FlameFitConfig = field(default_factory=FlameFitConfig, metadata={"prefix": "flame_"})
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig, metadata={"prefix": "appearance_"})

    def __post_init__(self) -> None:
        check_range(self, "size", MIN_SIZE, MAX_SIZE)  # 512 matches the diffusion model
        check_at_least(self, 1, "max_frames", "chunk_size")
        check_at_least(self, 0, "face")
        check_at_least(self, MIN_SIZE, "driving_max_size")
        check_device(self)
        reference = self.alignment.reference_frame
        if self.max_frames is not None and reference >= self.max_frames:
            raise InputError(f"{flag('reference_frame')} {reference} is outside the first {flag('max_frames')} "
                             f"{self.max_frames} frames.")

    def flame_path(self) -> Path | None:
        """The FLAME file to use: the config's, else ``$MAGICPORTRAIT_FLAME``, else None (open geometry)."""
        return _configured_file(self.flame, FLAME_ENV, "FLAME model")

    def flame_texture_path(self) -> Path | None:
        return _configured_file(self.flame_texture, FLAME_TEXTURE_ENV, "FLAME texture space")


def _configured_file(value: str | None, env: str, what: str) -> Path | None:
    origin = "given" if value else f"named by ${env}"
    value = value or os.environ.get(env) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise InputError(f"The {what} file {origin} does not exist: {path}. Point to the file you downloaded "
                         f"(see the README, 'FLAME'), or unset it to use the open face geometry.")
    return path


def head_model_from_config(config: GuideConfig) -> HeadModel:
    """FLAME when the config (or the environment) names a FLAME file, else the open face geometry."""
    path = config.flame_path()
    if path is None:
        logger.info("Head model: the open face geometry (give --flame PATH or $%s for FLAME).", FLAME_ENV)
        return MediaPipeHeadModel()
    from magicportrait.heads.flame_head import FlameHeadModel

    model = FlameHeadModel.from_file(path, num_shape=config.flame_shape_components,
                                     num_expression=config.flame_expression_components, config=config.flame_fit)
    logger.info("Head model: FLAME from %s (%d identity, %d expression components).", path, model.num_shape,
                model.num_expression)
    return model


@dataclass
class SourceFace:
    """The source portrait cropped to the guidance frame, with its track and fitted head in crop space."""

    crop: np.ndarray  # (size, size, 3) uint8 RGB
    crop_matrix: np.ndarray  # (2, 3) original image -> crop pixels
    track: Track  # T=1, crop space
    head: HeadTrack  # T=1, crop space
    appearance: RenderAppearance | None = None  # how the render map is coloured (FLAME); None: the crop itself


@dataclass
class GuideResult:
    output_dir: Path
    num_frames: int
    fps: float
    missing_frames: list[int]
    files: dict[str, Path]
    head_model: str = "mediapipe"  # which head model made the guidance: "mediapipe" (open geometry) or "flame"
    crop_matrix: np.ndarray | None = None  # (2, 3) source image -> source.png crop (OpenCV convention)


def crop_track(track: Track, matrix: np.ndarray, size: int) -> Track:
    """Map a Track's landmarks through a similarity crop (2x3 matrix); z scales like x and y."""
    landmarks = transform_points(track.landmarks, matrix).astype(np.float32)
    boxes = transform_points(track.boxes, matrix).astype(np.float32)  # centre moves, side scales like z
    return Track(landmarks=landmarks, boxes=boxes, detected=track.detected, fps=track.fps,
                 image_size=(size, size), num_faces=track.num_faces, source=track.source)


def crop_face(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Square crop ``box`` = (cx, cy, side) of ``image`` resized to ``size``; edges replicated outside.

    warpAffine samples without low-pass filtering, so a crop much larger than ``size`` (an 8K portrait) is
    first shrunk with area averaging to avoid aliasing.
    """
    box = np.asarray(box, dtype=np.float64)
    shrink = min(1.0, 2.0 * size / box[2])
    if shrink < 1.0:
        height, width = image.shape[:2]
        small = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        box = np.array([box[0] * small[0] / width, box[1] * small[1] / height, box[2] * small[0] / width])
    return cv2.warpAffine(image, crop_matrix(box, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


class GuidePipeline:
    """Portrait + driving video -> guidance maps. Usable from Python::

        result = GuidePipeline(GuideConfig(size=512)).run("portrait.jpg", "driving.mp4", "out/")
    """

    def __init__(self, config: GuideConfig | None = None, head_model: HeadModel | None = None) -> None:
        self.config = config or GuideConfig()
        self.head_model = head_model or head_model_from_config(self.config)

    # 1. Source ---------------------------------------------------------------------------------------------
    def prepare_source(self, image: np.ndarray, tracker: FaceTracker, source_name: str = "") -> SourceFace:
        face = self.config.face
        track = tracker.track_image(image, source=source_name, face_index=face)
        num_faces = int(track.num_faces[0])
        if num_faces > 1:
            number = face if face is not None else tracker.face_number(image, track.landmarks[0], source_name)
            logger.info("%d faces found in %s; using face %s (numbered from the left; choose with --face N).",
                        num_faces, source_name or "the source portrait",
                        "the most prominent one" if number is None else number)
        size = self.config.size
        matrix = crop_matrix(track.boxes[0], size)
        crop = crop_face(image, track.boxes[0], size)
        cropped = crop_track(track, matrix, size)
        head = self.head_model.fit(cropped)
        return SourceFace(crop=crop, crop_matrix=matrix, track=cropped, head=head,
                          appearance=self.estimate_appearance(crop, cropped, head))

    def estimate_appearance(self, crop: np.ndarray, track: Track, head: HeadTrack) -> RenderAppearance | None:
        """The render map's albedo and SH light, from the source crop (FLAME; the open geometry uses the crop)."""
        if self.head_model.name == "mediapipe":
            return None
        from magicportrait.rendering.appearance import (
            estimate_appearance,
            face_region_mask,
            fit_texture_appearance,
            load_flame_texture_space,
        )

        vertices = self.head_model.posed_vertices(head)[0]
        region = face_region_mask(track.landmarks[0, :, :2], crop.shape[:2])
        texture_path = self.config.flame_texture_path()
        config = self.config.appearance
        if texture_path is not None:
            space = load_flame_texture_space(texture_path, num_components=config.texture_components,
                                             size=config.texture_size)
            return fit_texture_appearance(crop, vertices, self.head_model.faces, region, space, config=config)
        rest = self.head_model.shape_vertices(np.zeros_like(head.identity), head.expression[:1] * 0)[0]
        return estimate_appearance(crop, vertices, self.head_model.faces, region, rest_vertices=rest, config=config)

    # 2. Driving --------------------------------------------------------------------------------------------
    def track_driving(self, driving_path: str | Path, tracker: FaceTracker) -> Track:
        from magicportrait.io.video import probe_video

        info = probe_video(driving_path)
        num_frames = min(info.num_frames, self.config.max_frames or info.num_frames)
        frames = self.driving_frames(driving_path)
        return tracker.track_frames(frames, fps=info.fps, num_frames=num_frames, source=str(driving_path))

    def driving_frames(self, driving_path: str | Path):
        from itertools import islice

        from magicportrait.io.video import iter_frames

        return islice(iter_frames(driving_path, max_size=self.config.driving_max_size), self.config.max_frames)

    # 3. Alignment ------------------------------------------------------------------------------------------
    def align(self, source: SourceFace, driving_track: Track) -> HeadTrack:
        driving_head = self.head_model.fit(driving_track)
        return align_to_source(source.head, driving_head, self.config.alignment)

    # 4. Rendering ------------------------------------------------------------------------------------------
    def render_chunks(self, source: SourceFace, aligned: HeadTrack):
        """Yield dicts of `(n, size, size, 3)` uint8 maps ('depth', 'normal', 'render'), chunk by chunk."""
        from magicportrait.rendering import GuidanceRenderer
        from magicportrait.rendering.appearance import AppearanceRenderer

        size = self.config.size
        if source.appearance is not None:
            renderer = AppearanceRenderer(self.head_model.faces, source.appearance, image_size=(size, size),
                                          device=self.config.device)
            colouring = {}
        else:  # the open geometry's vertices are the landmarks: the crop itself is their texture
            renderer = GuidanceRenderer(self.head_model.faces, image_size=(size, size), device=self.config.device)
            colouring = {"texture": source.crop, "uv": source.track.landmarks[0, :, :2]}
        for start in range(0, aligned.num_frames, self.config.chunk_size):
            chunk = aligned.select(slice(start, start + self.config.chunk_size))
            yield renderer.render_uint8(self.head_model.posed_vertices(chunk), **colouring)

    # Whole job ---------------------------------------------------------------------------------------------
    def run(self, source_path: str | Path, driving_path: str | Path, output_dir: str | Path) -> GuideResult:
        from magicportrait.io.image import load_image, save_image

        config = self.config
        ensure_writable_dir(output_dir)  # fail before minutes of tracking, not after
        image = load_image(source_path)
        with FaceTracker(config.tracker) as tracker:
            source = self.prepare_source(image, tracker, str(source_path))
            driving_track = self.track_driving(driving_path, tracker)
        aligned = self.align(source, driving_track)  # the tracker has already warned about frames without a face

        with staged_output_dir(output_dir) as stage:
            files = {"source": stage / "source.png", "track": stage / "track.npz",
                     "source_track": stage / "source_track.npz", "aligned_head": stage / "aligned_head.npz"}
            save_image(files["source"], source.crop)
            driving_track.save(files["track"])
            source.track.save(files["source_track"])
            aligned.save(files["aligned_head"])
            if source.appearance is not None:
                files["appearance"] = source.appearance.save(stage / "appearance.npz")
            files.update(self._write_maps(stage, source, aligned, driving_path, driving_track))
        output_dir = Path(output_dir)
        return GuideResult(output_dir=output_dir, num_frames=aligned.num_frames, fps=driving_track.fps,
                           missing_frames=driving_track.missing_frames.tolist(), head_model=self.head_model.name,
                           crop_matrix=source.crop_matrix,
                           files={name: output_dir / path.relative_to(stage) for name, path in files.items()})

    def _write_maps(self, stage: Path, source: SourceFace, aligned: HeadTrack, driving_path: str | Path,
                    driving_track: Track) -> dict[str, Path]:
        from contextlib import ExitStack

        from magicportrait.io.video import VideoWriter, probe_video

        config, fps = self.config, driving_track.fps
        files = {name: stage / f"{name}.mp4" for name in MAP_NAMES}
        digits = max(4, len(str(aligned.num_frames)))
        with ExitStack() as stack, ThreadPoolExecutor(max_workers=2) as pool:
            writers = {name: stack.enter_context(VideoWriter(files[name], fps, preset=VIDEO_PRESET))
                       for name in MAP_NAMES}
            if config.write_preview:
                files["preview"] = stage / "preview.mp4"
                audio = driving_path if config.keep_audio and probe_video(driving_path).has_audio else None
                preview = stack.enter_context(VideoWriter(files["preview"], fps, audio_from=audio,
                                                          preset=VIDEO_PRESET))
                driving_frames = self.driving_frames(driving_path)
            if config.write_frames:
                for name in MAP_NAMES:
                    (stage / name).mkdir()
            progress = stack.enter_context(tqdm(total=aligned.num_frames, desc="render", unit="frame",
                                                disable=not config.show_progress))
            index, pending = 0, []
            for maps in self.render_chunks(source, aligned):
                for i in range(len(maps["depth"])):
                    for name in MAP_NAMES:
                        writers[name].write(maps[name][i])
                        if config.write_frames:
                            pending.append(pool.submit(
                                _write_png, stage / name / f"frame_{index + 1:0{digits}d}.png", maps[name][i]))
                    if config.write_preview:
                        frame = next(driving_frames)
                        driving_crop = crop_face(frame, driving_track.boxes[index], config.size)
                        preview.write(np.concatenate([source.crop, driving_crop] +
                                                     [maps[name][i] for name in MAP_NAMES], axis=1))
                    index += 1
                for future in pending:  # re-raises a failed PNG write here
                    future.result()
                pending.clear()
                progress.update(len(maps["depth"]))
        return files


def _write_png(path: Path, rgb: np.ndarray) -> None:
    # cv2 releases the GIL while encoding, so a small thread pool overlaps PNG writing with rendering.
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"Could not write {path}")
