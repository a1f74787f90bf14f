"""``magicportrait animate``: portrait + driving video -> reenacted video, with one of two generators.

- ``diffusion`` (the paper's model; needs the released weights): the guidance stage
  (:mod:`magicportrait.pipelines.guide`: tracking, head fit, Structured Face Alignment, depth / normal / render maps
  written to ``guidance/``) -> the diffusion generator (:mod:`magicportrait.pipelines.generation`, reading the maps
  back frame-exactly from their PNGs, window by window).
- ``geometric`` (no weights, real time on a CPU; :mod:`magicportrait.pipelines.geometric`): the same tracking and
  alignment -> the source photo re-rendered on the aligned head, the rest of the frame warped along.

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
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from tqdm.auto import tqdm

from magicportrait.config import GENERATOR, OUTPUT, SAMPLER, check_at_least, check_choices, flag, option
from magicportrait.errors import InputError
from magicportrait.heads import HeadModel
from magicportrait.io.atomic import ensure_writable_dir, staged_output_dir
from magicportrait.models.release import DEFAULT_PROMPT, WEIGHTS_ENV
from magicportrait.pipelines.generation import GenerationConfig
from magicportrait.pipelines.geometric import GeometricConfig
from magicportrait.pipelines.guide import MAP_NAMES, GuideConfig, GuidePipeline
from magicportrait.pipelines.outputs import DEFAULT_MAX_OUTPUT_SIZE, ResultWriter
from magicportrait.types import HeadTrack

logger = logging.getLogger(__name__)
LATENT_MULTIPLE = 64  # the UNet halves the 1/8-size latents three times


@dataclass
class AnimateConfig:
    """Options of ``magicportrait animate`` (generator, weights, outputs) plus those of the stages."""

    cli_group: ClassVar[str] = GENERATOR
    cli_field_groups: ClassVar[dict[str, str]] = {"prompt": SAMPLER, "write_grid": OUTPUT, "paste_back": OUTPUT,
                                                  "max_output_size": OUTPUT}

    backend: Literal["auto", "diffusion", "geometric"] = option(
        "auto", f"Generator: diffusion (the paper's model, needs --weights), geometric (no weights, real time on a "
                f"CPU), or auto: diffusion when weights are configured (--weights or ${WEIGHTS_ENV}), else geometric.")
    weights: str | None = option(None, f"Folder of the official release (with ckpts/, stable-diffusion-v1-5/ and "
                                       f"sd-vae-ft-mse/), or its ckpts/ folder; default: ${WEIGHTS_ENV}.")
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
    guide: GuideConfig = field(default_factory=GuideConfig)
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
        return self.weights or os.environ.get(WEIGHTS_ENV) or None

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
                    "generator.", WEIGHTS_ENV)
    return GeometricPipeline(config, head_model)


@dataclass
class AnimateResult:
    output_dir: Path
    num_frames: int
    fps: float
    files: dict[str, Path]
    backend: str = "diffusion"


class PngGuidance:
    """Loader of one map's frames ``start..stop-1`` from the guide stage's PNG folder (exact, unlike H.264)."""

    def __init__(self, folder: Path, num_frames: int) -> None:
        self.folder, self.num_frames = folder, num_frames
        self.digits = max(4, len(str(num_frames)))

    def __call__(self, start: int, stop: int) -> np.ndarray:
        from magicportrait.io.image import load_image

        return np.stack([load_image(self.folder / f"frame_{i + 1:0{self.digits}d}.png") for i in range(start, stop)])


class MagicPortraitPipeline:
    """The whole main job with the diffusion generator (see the module docstring)."""

    def __init__(self, components: dict, config: AnimateConfig | None = None,
                 head_model: HeadModel | None = None) -> None:
        from magicportrait.pipelines.generation import GenerationPipeline

        self.config = config or AnimateConfig()
        self.head_model = head_model
        self.generator = GenerationPipeline(**components)

    @classmethod
    def from_pretrained(cls, weights: str | Path | None = None, config: AnimateConfig | None = None,
                        head_model: HeadModel | None = None) -> MagicPortraitPipeline:
        """Load the release from ``weights`` (or ``config.weights`` / ``$MAGICPORTRAIT_WEIGHTS``), strictly."""
        import torch

        from magicportrait.models.release import (
            is_saved_release,
            load_release,
            load_saved_release,
            resolve_release_paths,
        )

        config = config or AnimateConfig()
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.generation.dtype]
        weights = weights or config.weights_path()
        if is_saved_release(weights):  # our own format (save_pretrained)
            logger.info("Loading the diffusion weights from %s", weights)
            components = load_saved_release(weights, device=config.generation.device, dtype=dtype)
            return cls(components, config, head_model)
        paths = resolve_release_paths(weights, config.sd15, config.vae, config.motion_module)
        logger.info("Loading the diffusion weights from %s", paths.ckpts)
        components = load_release(paths, device=config.generation.device, dtype=dtype, prompt=config.prompt)
        return cls(components, config, head_model)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save the loaded networks in our own format (safetensors + configs), loadable by from_pretrained."""
        from magicportrait.models.release import save_release

        generator = self.generator
        components = {"vae": generator.vae, "reference_unet": generator.reference_unet,
                      "denoising_unet": generator.denoising_unet, "guidance_encoders": generator.guidance_encoders,
                      "text_embeddings": generator.text_embeddings}
        return save_release(components, directory, prompt=self.config.prompt)

    def run(self, source_path: str | Path, driving_path: str | Path, output_dir: str | Path) -> AnimateResult:
        from magicportrait.io.image import load_image

        config = self.config
        ensure_writable_dir(output_dir)
        guide_config = replace(config.guide, write_frames=True)  # the generator reads the maps back from the PNGs
        with staged_output_dir(output_dir) as stage:
            guided = GuidePipeline(guide_config, self.head_model).run(source_path, driving_path, stage / "guidance")
            reference = load_image(stage / "guidance" / "source.png")
            maps = {name: PngGuidance(stage / "guidance" / name, guided.num_frames) for name in MAP_NAMES}
            latents = self.generator.generate_latents(reference, maps, config.generation, guided.num_frames)
            frames = self.generator.iter_video(latents, config.generation.decode_chunk)
            audio = _audio_source(driving_path, guide_config)
            writer = ResultWriter(stage, guided.fps, audio, load_image(source_path), reference, guided.crop_matrix,
                                  paste_mode="full" if config.paste_back else None,
                                  write_grid=config.write_grid, max_output_size=config.max_output_size)
            preview = stage / "guidance" / "preview.mp4"
            previews = _preview_driving_crops(preview, reference.shape[1], config.write_grid)
            with writer:
                index = 0
                for chunk in frames:
                    for frame in chunk:
                        panels = []
                        if config.write_grid:
                            panels = [next(previews, np.zeros_like(reference)),
                                      *(maps[name](index, index + 1)[0] for name in MAP_NAMES)]
                        writer.write(frame, panels)
                        index += 1
        return _result(output_dir, stage, writer.files, guided.num_frames, guided.fps, "diffusion",
                       extra={"guidance": "guidance"})


class GeometricPipeline:
    """The whole main job with the geometric generator: no weights, real time on a CPU (see the module docstring).

    Python::

        result = GeometricPipeline(AnimateConfig()).run("portrait.jpg", "driving.mp4", "out/")
    """

    def __init__(self, config: AnimateConfig | None = None, head_model: HeadModel | None = None) -> None:
        self.config = config or AnimateConfig()
        self.guide = GuidePipeline(replace(self.config.guide, write_frames=False), head_model)
        self.head_model = self.guide.head_model
        self.frames_per_second: float | None = None  # the generator's own speed in the last run

    def run(self, source_path: str | Path, driving_path: str | Path, output_dir: str | Path) -> AnimateResult:
        from magicportrait.io.image import load_image
        from magicportrait.tracking import FaceTracker

        config = self.config
        ensure_writable_dir(output_dir)
        image = load_image(source_path)
        with FaceTracker(config.guide.tracker) as tracker:
            source = self.guide.prepare_source(image, tracker, str(source_path))
            driving_track = self.guide.track_driving(driving_path, tracker)
        aligned = self.prepare_motion(source, driving_track)
        with staged_output_dir(output_dir) as stage:
            self._save_inputs(stage, source, driving_track, aligned)
            writer = ResultWriter(stage, driving_track.fps, _audio_source(driving_path, config.guide), image,
                                  source.crop, source.crop_matrix, paste_mode="changed" if config.paste_back else None,
                                  write_grid=config.write_grid, max_output_size=config.max_output_size)
            with writer:
                self._generate(source, aligned, driving_track, driving_path, writer)
        files = {name: Path(name + ".npz") for name in ("track", "source_track", "aligned_head")}
        return _result(output_dir, stage, writer.files, aligned.num_frames, driving_track.fps, "geometric",
                       extra={"source": "source.png", **{name: str(path) for name, path in files.items()}})

    def prepare_motion(self, source, driving_track) -> HeadTrack:
        """Align the driving motion to the source, warn about what limits the result, clamp extreme poses."""
        from magicportrait.alignment import limit_rotation
        from magicportrait.pipelines.geometric import source_warnings
        from magicportrait.tracking.mediapipe_tracker import frame_ranges

        for message in source_warnings(source):
            logger.warning(message)
        aligned = self.guide.align(source, driving_track)
        aligned, clamped = limit_rotation(aligned, source.head.rotation[0], self.config.geometric.rotation_limits)
        if clamped.any():
            limits = self.config.geometric.rotation_limits
            logger.warning("The driving head turns further from the portrait's pose than a single photo can show in "
                           "%d of %d frames (%s); the rotation there is clamped to yaw %g, pitch %g, roll %g degrees "
                           "(--geometric-max-yaw/-pitch/-roll).", int(clamped.sum()), len(clamped),
                           frame_ranges(np.flatnonzero(clamped)), *limits)
        return aligned

    def _save_inputs(self, stage: Path, source, driving_track, aligned) -> None:
        from magicportrait.io.image import save_image

        save_image(stage / "source.png", source.crop)
        driving_track.save(stage / "track.npz")
        source.track.save(stage / "source_track.npz")
        aligned.save(stage / "aligned_head.npz")

    def _generate(self, source, aligned: HeadTrack, driving_track, driving_path, writer: ResultWriter) -> None:
        from magicportrait.pipelines.geometric import GeometricGenerator
        from magicportrait.pipelines.guide import crop_face

        config = self.config
        generator = GeometricGenerator(self.head_model, source, config.geometric, device=config.guide.device)
        driving_frames = self.guide.driving_frames(driving_path) if config.write_grid else None
        chunk_size, busy, index = config.geometric.chunk_size, 0.0, 0
        with tqdm(total=aligned.num_frames, desc="reenact", unit="frame",
                  disable=not config.guide.show_progress) as progress:
            for start in range(0, aligned.num_frames, chunk_size):
                chunk = aligned.select(slice(start, start + chunk_size))
                began = time.perf_counter()
                crops = generator.render(chunk)
                busy += time.perf_counter() - began
                maps = self._guidance(source, chunk) if config.write_grid else None
                for i, crop in enumerate(crops):
                    panels = []
                    if config.write_grid:
                        driving = crop_face(next(driving_frames), driving_track.boxes[index], config.guide.size)
                        panels = [driving, *(maps[name][i] for name in MAP_NAMES)]
                    writer.write(crop, panels)
                    index += 1
                progress.update(len(crops))
        self.frames_per_second = aligned.num_frames / max(busy, 1e-9)
        logger.info("Geometric generator: %.1f frames/s (without tracking and video encoding).",
                    self.frames_per_second)


    def _guidance(self, source, head: HeadTrack) -> dict[str, np.ndarray]:
        """The depth / normal / render maps of ``head``'s frames, for the grid."""
        chunks = list(self.guide.render_chunks(source, head))
        return {name: np.concatenate([maps[name] for maps in chunks]) for name in MAP_NAMES}


def _audio_source(driving_path: str | Path, guide_config: GuideConfig) -> str | Path | None:
    from magicportrait.io.video import probe_video

    return driving_path if guide_config.keep_audio and probe_video(driving_path).has_audio else None


def _preview_driving_crops(preview_path: Path, size: int, wanted: bool):
    """The driving crops from the guide stage's preview (its second panel), or an empty iterator."""
    from magicportrait.io.video import iter_frames

    if not wanted or not preview_path.is_file():
        return iter(())
    return (frame[:, size:2 * size] for frame in iter_frames(preview_path))


def _result(output_dir: str | Path, stage: Path, files: dict[str, Path], num_frames: int, fps: float, backend: str,
            extra: dict[str, str]) -> AnimateResult:
    output_dir = Path(output_dir)
    paths = {name: output_dir / path.relative_to(stage) for name, path in files.items()}
    paths.update({name: output_dir / relative for name, relative in extra.items()})
    return AnimateResult(output_dir=output_dir, num_frames=num_frames, fps=fps, files=paths, backend=backend)
