"""``magicportrait animate``: portrait + driving video -> reenacted video, with one of two generators.

- ``diffusion`` (the paper's model; needs the released weights): the guidance stage (tracking, head fit,
  Structured Face Alignment; :mod:`magicportrait.pipelines.stages`) -> the depth / normal / render maps rendered on
  demand, window by window (:class:`~magicportrait.rendering.RenderedGuidance`) -> the diffusion generator
  (:mod:`magicportrait.models.generation`). The tracks and the aligned head go to ``guidance/`` (the maps' PNGs
  too with ``--write-frames``, for ``magicportrait generate``).
- ``geometric`` (no weights, real time on a CPU; :mod:`magicportrait.pipelines.geometric`): the same tracking and
  alignment -> the source photo re-rendered on the aligned head, the rest of the frame warped along.

``motion=`` (``--motion aligned_head.npz``) reuses a saved aligned head track instead of tracking the driving
video; ``generate`` runs the diffusion generator alone on a guidance folder (ours or the official layout).

``backend="auto"`` takes the diffusion generator when weights are configured (``--weights`` or
``$MAGICPORTRAIT_WEIGHTS``) and the geometric one otherwise. Both write ``result.mp4`` (the face crop pasted back
into the full-size source frame) at the driving video's fps with its audio, ``result_crop.mp4`` and ``grid.mp4``
(source | driving | depth | normal | render | result). Everything is staged and moved into place only when the job
succeeds.

Python::

    pipeline = load_pipeline(AnimateConfig(weights="pretrained/"))   # or AnimateConfig() for the geometric one
    result = pipeline.run("portrait.jpg", "driving.mp4", "out/")
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from tqdm.auto import tqdm

from magicportrait.config import GENERATOR, OUTPUT, SAMPLER, check_at_least, check_choices, flag, option
from magicportrait.errors import InputError
from magicportrait.heads import HeadModel, head_model_from_config
from magicportrait.io.assets import WEIGHTS, asset_value
from magicportrait.io.image import load_image
from magicportrait.io.output import output_folder
from magicportrait.models.generation import GenerationConfig
from magicportrait.models.release import DEFAULT_PROMPT
from magicportrait.pipelines import stages
from magicportrait.pipelines.geometric import GeometricConfig
from magicportrait.pipelines.guide import GuideConfig
from magicportrait.pipelines.outputs import DEFAULT_MAX_OUTPUT_SIZE, ResultWriter
from magicportrait.pipelines.run_cache import RunCache
from magicportrait.types import GUIDANCE_NAMES, HeadTrack, SourceFace

logger = logging.getLogger(__name__)
LATENT_MULTIPLE = 64  # the UNet halves the 1/8-size latents three times
OFFICIAL_FPS = 24.0  # the official release writes every video at 24 fps
GUIDANCE_CACHE_BYTES = 1 << 30  # rendered guidance kept in memory: 1 GiB holds 455 frames of the three 512 maps


@dataclass
class AnimateConfig:
    """Options of ``magicportrait animate`` (generator, weights, outputs) plus those of the stages."""

    cli_group: ClassVar[str] = GENERATOR
    cli_field_groups: ClassVar[dict[str, str]] = {"prompt": SAMPLER, "write_grid": OUTPUT, "paste_back": OUTPUT,
                                                  "max_output_size": OUTPUT}

    backend: Literal["auto", "diffusion", "geometric"] = option(
        "auto", f"Generator: diffusion (the paper's model, needs --weights), geometric (no weights, real time on a "
                f"CPU), or auto: diffusion when weights are configured (--weights or ${WEIGHTS.env}), else geometric.")
    weights: str | None = option(None, f"Folder of the official release (with ckpts/, stable-diffusion-v1-5/ and "
                                       f"sd-vae-ft-mse/), or its ckpts/ folder; default: ${WEIGHTS.env}.")
    sd15: str | None = option(None, "Stable Diffusion 1.5 folder (diffusers format) if not inside --weights.")
    vae: str | None = option(None, "sd-vae-ft-mse folder (diffusers format) if not inside --weights.")
    motion_module: str | None = option(None, "Motion-module file to use instead of the release's (e.g. AnimateDiff "
                                             "mm_sd_v15_v2.ckpt).")
    prompt: str = option(DEFAULT_PROMPT, "Text the UNets cross-attend to (the official release's fixed prompt).")
    write_grid: bool = option(True, "Also write grid.mp4: source | driving | depth | normal | render | result.")
    paste_back: bool = option(True, "result.mp4 is the full-size source frame with the face crop pasted back (the "
                                    "crop goes to result_crop.mp4); off: result.mp4 is the crop.")
    max_output_size: int = option(DEFAULT_MAX_OUTPUT_SIZE, "Longer side of result.mp4 at most, pixels (a larger "
                                                           "source image is scaled down for it).")
    write_result_frames: bool = option(False, "Also write result.mp4's frames as PNGs in result_frames/, with the "
                                              "portrait's transparency (RGBA) when it has one.")
    guide: GuideConfig = field(default_factory=lambda: GuideConfig(write_frames=False))  # maps' PNGs if asked
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    geometric: GeometricConfig = field(default_factory=GeometricConfig, metadata={"prefix": "geometric_"})

    def __post_init__(self) -> None:
        check_choices(self)
        if self.guide.size % LATENT_MULTIPLE:
            raise InputError(f"{flag('size')} must be a multiple of {LATENT_MULTIPLE} for the diffusion model (512 is "
                             f"what it was trained at), got {self.guide.size}.")
        check_at_least(self, 64, "max_output_size")

    def weights_path(self) -> str | None:
        """The configured diffusion weights: ``weights``, else ``$MAGICPORTRAIT_WEIGHTS``, else None."""
        path, _ = asset_value(WEIGHTS, self.weights)
        return None if path is None else str(path)

    def resolved_backend(self) -> str:
        """"diffusion" or "geometric": what ``backend`` means with the weights configured now."""
        if self.backend != "auto":
            return self.backend
        return "diffusion" if self.weights_path() else "geometric"


def load_pipeline(config: AnimateConfig | None = None, head_model: HeadModel | None = None):
    """The pipeline of the configured generator: :class:`MagicPortraitPipeline` (diffusion, weights loaded) or
    :class:`GeometricPipeline`."""
    config = config or AnimateConfig()
    if config.resolved_backend() == "diffusion":
        return MagicPortraitPipeline.from_pretrained(config=config, head_model=head_model)
    if config.backend == "auto":
        logger.info("No diffusion weights configured (--weights DIR or $%s): using the instant geometric "
                    "generator.", WEIGHTS.env)
    return GeometricPipeline(config, head_model)


@dataclass
class AnimateResult:
    output_dir: Path
    num_frames: int
    fps: float
    files: dict[str, Path]
    backend: str = "diffusion"




class MagicPortraitPipeline:
    """The whole main job with the diffusion generator (see the module docstring)."""

    def __init__(self, components: dict, config: AnimateConfig | None = None,
                 head_model: HeadModel | None = None) -> None:
        from magicportrait.models.generation import GenerationPipeline

        self.config = config or AnimateConfig()
        self._head_model = head_model
        self.generator = GenerationPipeline(**components)
        self.cache: RunCache | None = None  # a long-lived worker's tracker and prepared portraits (batch)

    @property
    def head_model(self) -> HeadModel:
        """The head model of the guidance stage (loaded on first use: ``generate`` needs none)."""
        if self._head_model is None:
            self._head_model = head_model_from_config(self.config.guide.head)
        return self._head_model

    @classmethod
    def from_pretrained(cls, weights: str | Path | None = None, config: AnimateConfig | None = None,
                        head_model: HeadModel | None = None) -> MagicPortraitPipeline:
        """Load the release from ``weights`` (or ``config.weights`` / ``$MAGICPORTRAIT_WEIGHTS``), strictly."""
        from magicportrait.models.release import (
            is_saved_release,
            load_release,
            load_saved_release,
            resolve_release_paths,
        )

        config = config or AnimateConfig()
        generation = config.generation
        weights = weights or config.weights_path()
        if is_saved_release(weights):  # our own format (save_pretrained)
            logger.info("Loading the diffusion weights from %s", weights)
            components = load_saved_release(weights, device=generation.device, dtype=generation.torch_dtype)
            return cls(components, config, head_model)
        paths = resolve_release_paths(weights, config.sd15, config.vae, config.motion_module)
        logger.info("Loading the diffusion weights from %s", paths.ckpts)
        components = load_release(paths, device=generation.device, dtype=generation.torch_dtype,
                                  prompt=config.prompt)
        return cls(components, config, head_model)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save the loaded networks in our own format (safetensors + configs), loadable by from_pretrained."""
        from magicportrait.models.release import save_release

        generator = self.generator
        components = {"vae": generator.vae, "reference_unet": generator.reference_unet,
                      "denoising_unet": generator.denoising_unet, "guidance_encoders": generator.guidance_encoders,
                      "text_embeddings": generator.text_embeddings}
        return save_release(components, directory, prompt=self.config.prompt)

    def run(self, source_path: str | Path, driving_path: str | Path | None, output_dir: str | Path,
            motion: str | Path | None = None) -> AnimateResult:
        """Reenact ``source_path`` with ``driving_path``'s motion (or the saved ``motion``) into ``output_dir``."""
        from magicportrait.rendering.guidance import RenderedGuidance

        config, guide = self.config, self.config.guide
        with output_folder(output_dir) as out:  # locked and checked now, before minutes of tracking
            image = load_image(source_path)
            # the released weights saw portraits framed the official way
            source, driving = stages.prepare_inputs(guide, self.head_model, image, str(source_path), driving_path,
                                                    motion, default_framing="official", cache=self.cache)
            maps = RenderedGuidance(self.head_model, source, driving.aligned, guide.chunk_size, guide.device,
                                    cached_frames=_guidance_cache_frames(config))
            latents = self.generator.generate_latents(source.crop, maps.loaders(), config.generation,
                                                      driving.aligned.num_frames)
            with out.stage() as stage:
                stages.save_inputs(stage / "guidance", source, driving)
                if guide.write_frames:
                    _write_guidance_frames(stage / "guidance", maps)
                writer = _result_writer(config, stage, source_path, image, source, driving, driving_path, "full")
                crops = stages.driving_crops(driving_path, driving.driving_track, guide, driving.aligned.num_frames)
                with writer:
                    index = 0
                    for chunk in self.generator.iter_video(latents, config.generation.decode_chunk, config.generation):
                        for frame in chunk:
                            writer.write(frame, [next(crops), *maps.frame(index)] if config.write_grid else [])
                            index += 1
        return _result(output_dir, stage, writer.files, driving.aligned.num_frames, driving.fps, "diffusion",
                       extra={"guidance": "guidance"})

    def generate(self, reference: str | Path | None, guidance_dir: str | Path, output_dir: str | Path,
                 fps: float | None = None) -> AnimateResult:
        """The diffusion generator alone on a guidance folder (``guide``'s, or the official release's
        ``transfers/<name>/`` with ``depth/ normal/ render/``): ``result.mp4`` (the crop) and ``grid.mp4``.

        ``reference`` defaults to the folder's ``source.png``; ``fps`` to the folder's ``aligned_head.npz``, else
        24 (the official release's output rate).
        """
        config = self.config
        if fps is not None and not 0 < fps <= 240:
            raise InputError(f"--fps must be in (0, 240], got {fps:g}.")
        with output_folder(output_dir) as out:
            folder, image = _guidance_inputs(guidance_dir, reference)
            fps = fps or _folder_fps(folder.root)
            loaders = folder.loaders()
            latents = self.generator.generate_latents(image, loaders, config.generation, folder.num_frames)
            with out.stage() as stage:
                writer = ResultWriter(stage, fps, None, image, image, np.eye(2, 3), paste_mode=None,
                                      write_grid=config.write_grid, max_output_size=config.max_output_size)
                with writer:
                    index = 0
                    for chunk in self.generator.iter_video(latents, config.generation.decode_chunk, config.generation):
                        for frame in chunk:
                            panels = [loaders[name](index, index + 1)[0] for name in GUIDANCE_NAMES]
                            writer.write(frame, panels if config.write_grid else [])
                            index += 1
        return _result(output_dir, stage, writer.files, folder.num_frames, fps, "diffusion", extra={})


def _guidance_inputs(guidance_dir: str | Path, reference: str | Path | None):
    """The guidance folder, checked, and the reference image at its size."""
    from magicportrait.io.frames import GuidanceFolder
    from magicportrait.io.image import load_image

    folder = GuidanceFolder(guidance_dir)
    reference_path = reference or folder.reference
    if reference_path is None:
        raise InputError(f"{guidance_dir} holds no source.png: give the reference portrait crop with --reference.")
    image = load_image(reference_path)
    if image.shape[:2] != folder.size:
        import cv2

        logger.info("Resizing the reference %dx%d to the guidance size %dx%d.", image.shape[1], image.shape[0],
                    folder.size[1], folder.size[0])
        image = cv2.resize(image, folder.size[::-1], interpolation=cv2.INTER_AREA)
    return folder, image


def _guidance_cache_frames(config: AnimateConfig) -> int:
    """Frames of rendered maps kept in memory: the whole video when it fits in :data:`GUIDANCE_CACHE_BYTES` (each
    frame is then rendered once, not once per denoising step), and at least a window's frames."""
    size = config.guide.size
    whole = GUIDANCE_CACHE_BYTES // (len(GUIDANCE_NAMES) * size * size * 3)
    return max(whole, config.generation.context_frames + 2 * config.guide.chunk_size)


def _result_writer(config: AnimateConfig, stage: Path, source_path: str | Path, image: np.ndarray,
                   source: SourceFace, motion: stages.Motion, driving_path: str | Path | None,
                   paste_mode: str) -> ResultWriter:
    """The writer of result.mp4 (``image`` with the crops pasted back by ``paste_mode``), result_crop.mp4, grid.mp4
    and result frames."""
    from magicportrait.io.image import load_alpha

    alpha = load_alpha(source_path) if config.write_result_frames else None
    return ResultWriter(stage, motion.fps, stages.audio_source(driving_path, config.guide), image,
                        source.crop, source.crop_matrix, paste_mode=paste_mode if config.paste_back else None,
                        write_grid=config.write_grid, max_output_size=config.max_output_size,
                        write_result_frames=config.write_result_frames, source_alpha=alpha,
                        num_frames=motion.aligned.num_frames)


def _folder_fps(root: Path) -> float:
    path = root / "aligned_head.npz"
    fps = HeadTrack.load(path).fps if path.is_file() else 0.0
    return fps if fps > 0 else OFFICIAL_FPS


def _write_guidance_frames(folder: Path, maps) -> None:
    """The maps as PNG frames in the official ``depth/ normal/ render/`` layout."""
    from magicportrait.io.frames import FrameFolder

    folders = {name: FrameFolder(folder / name, maps.num_frames).create() for name in GUIDANCE_NAMES}
    for index in range(maps.num_frames):
        for name, image in zip(GUIDANCE_NAMES, maps.frame(index), strict=True):
            folders[name].write(index, image)


class GeometricPipeline:
    """The whole main job with the geometric generator: no weights, real time on a CPU (see the module docstring).

    Python::

        result = GeometricPipeline(AnimateConfig()).run("portrait.jpg", "driving.mp4", "out/")
    """

    def __init__(self, config: AnimateConfig | None = None, head_model: HeadModel | None = None) -> None:
        self.config = config or AnimateConfig()
        self.head_model = head_model or head_model_from_config(self.config.guide.head)
        self.frames_per_second: float | None = None  # the generator's own speed in the last run
        self.cache: RunCache | None = None  # a long-lived worker's tracker and prepared portraits (batch)

    def run(self, source_path: str | Path, driving_path: str | Path | None, output_dir: str | Path,
            motion: str | Path | None = None) -> AnimateResult:
        """Reenact ``source_path`` with ``driving_path``'s motion (or the saved ``motion``) into ``output_dir``."""
        config = self.config
        with output_folder(output_dir) as out:  # locked and checked now, before minutes of tracking
            image = load_image(source_path)
            source, driving = stages.prepare_inputs(config.guide, self.head_model, image, str(source_path),
                                                    driving_path, motion, cache=self.cache)
            driving = self.limit_motion(source, driving)
            with out.stage() as stage:
                files = stages.save_inputs(stage, source, driving)
                writer = _result_writer(config, stage, source_path, image, source, driving, driving_path, "changed")
                with writer:
                    self._generate(source, driving, driving_path, writer)
        return _result(output_dir, stage, {**writer.files, **files}, driving.aligned.num_frames, driving.fps,
                       "geometric", extra={})

    def limit_motion(self, source: SourceFace, motion: stages.Motion) -> stages.Motion:
        """Warn about what limits the result and clamp poses a single photo cannot show."""
        from magicportrait.alignment import limit_rotation
        from magicportrait.pipelines.geometric import source_pose_degrees, source_warnings
        from magicportrait.tracking.selection import frame_ranges

        for message in source_warnings(source):
            logger.warning(message)
        bounds = self.config.geometric.rotation_bounds(source_pose_degrees(source))
        aligned, clamped = limit_rotation(motion.aligned, source.head.rotation[0], bounds)
        if clamped.any():
            ranges = ", ".join(f"{name} {low:g}..{high:g}" for name, low, high in zip(("yaw", "pitch", "roll"),
                                                                                    *bounds, strict=True))
            logger.warning("The driving head turns further from the portrait's pose than a single photo can show in "
                           "%d of %d frames (%s); the rotation there is clamped to %s degrees "
                           "(--geometric-max-yaw/-pitch/-roll, --geometric-max-hidden-turn, "
                           "--geometric-max-turned).", int(clamped.sum()),
                           len(clamped), frame_ranges(np.flatnonzero(clamped)), ranges)
        return replace(motion, aligned=aligned)

    def _generate(self, source: SourceFace, motion: stages.Motion, driving_path, writer: ResultWriter) -> None:
        from magicportrait.pipelines.geometric import GeometricGenerator
        from magicportrait.rendering.guidance import RenderedGuidance

        config, aligned = self.config, motion.aligned
        generator = GeometricGenerator(self.head_model, source, config.geometric, device=config.guide.device)
        crops = stages.driving_crops(driving_path, motion.driving_track, config.guide, aligned.num_frames)
        maps = RenderedGuidance(self.head_model, source, aligned, config.geometric.chunk_size, config.guide.device)
        chunk_size, busy, index = config.geometric.chunk_size, 0.0, 0
        with tqdm(total=aligned.num_frames, desc="reenact", unit="frame",
                  disable=not config.guide.show_progress) as progress:
            for start in range(0, aligned.num_frames, chunk_size):
                began = time.perf_counter()
                results = generator.render(aligned.select(slice(start, start + chunk_size)))
                busy += time.perf_counter() - began
                for crop in results:
                    writer.write(crop, [next(crops), *maps.frame(index)] if config.write_grid else [])
                    index += 1
                progress.update(len(results))
        self.frames_per_second = aligned.num_frames / max(busy, 1e-9)
        logger.info("Geometric generator: %.1f frames/s (without tracking and video encoding).",
                    self.frames_per_second)


def _result(output_dir: str | Path, stage: Path, files: dict[str, Path], num_frames: int, fps: float, backend: str,
            extra: dict[str, str]) -> AnimateResult:
    output_dir = Path(output_dir)
    paths = {name: output_dir / path.relative_to(stage) for name, path in files.items()}
    paths.update({name: output_dir / relative for name, relative in extra.items()})
    return AnimateResult(output_dir=output_dir, num_frames=num_frames, fps=fps, files=paths, backend=backend)
