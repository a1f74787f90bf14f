"""``magicportrait animate``: portrait + driving video -> reenacted video, with the diffusion generator.

Flow: the guidance stage (:mod:`magicportrait.pipelines.guide`: tracking, head fit, Structured Face Alignment,
depth / normal / render maps, written to ``guidance/``) -> the diffusion generator
(:mod:`magicportrait.pipelines.generation`, reading the maps back frame-exactly from their PNGs, window by window)
-> ``result.mp4`` at the driving video's fps with its audio, and ``grid.mp4``
(source | driving | depth | normal | render | result). Everything is staged and moved into place only when the
job succeeds.

Python::

    pipeline = MagicPortraitPipeline.from_pretrained("pretrained/")   # the official release folder
    result = pipeline.run("portrait.jpg", "driving.mp4", "out/")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from magicportrait.config import option
from magicportrait.errors import InputError
from magicportrait.heads import HeadModel
from magicportrait.io.atomic import ensure_writable_dir, staged_output_dir
from magicportrait.models.release import DEFAULT_PROMPT, WEIGHTS_ENV
from magicportrait.pipelines.generation import GenerationConfig
from magicportrait.pipelines.guide import MAP_NAMES, GuideConfig, GuidePipeline

logger = logging.getLogger(__name__)
LATENT_MULTIPLE = 64  # the UNet halves the 1/8-size latents three times


@dataclass
class AnimateConfig:
    """Options of ``magicportrait animate`` (weights, prompt, outputs) plus the guidance and generation stages'."""

    weights: str | None = option(None, f"Folder of the official release (with ckpts/, stable-diffusion-v1-5/ and "
                                       f"sd-vae-ft-mse/), or its ckpts/ folder; default: ${WEIGHTS_ENV}.")
    sd15: str | None = option(None, "Stable Diffusion 1.5 folder (diffusers format) if not inside --weights.")
    vae: str | None = option(None, "sd-vae-ft-mse folder (diffusers format) if not inside --weights.")
    motion_module: str | None = option(None, "Motion-module file to use instead of the release's (e.g. AnimateDiff "
                                             "mm_sd_v15_v2.ckpt).")
    prompt: str = option(DEFAULT_PROMPT, "Text the UNets cross-attend to (the official release's fixed prompt).")
    write_grid: bool = option(True, "Also write grid.mp4: source | driving | depth | normal | render | result.")
    guide: GuideConfig = field(default_factory=GuideConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self) -> None:
        if self.guide.size % LATENT_MULTIPLE:
            raise InputError(f"size {self.guide.size} must be a multiple of {LATENT_MULTIPLE} for the diffusion "
                             "model (512 is what it was trained at).")


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
        weights = weights or config.weights or os.environ.get(WEIGHTS_ENV)
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
        from magicportrait.io.video import probe_video

        config = self.config
        ensure_writable_dir(output_dir)
        guide_config = replace(config.guide, write_frames=True)  # the generator reads the maps back from the PNGs
        with staged_output_dir(output_dir) as stage:
            guided = GuidePipeline(guide_config, self.head_model).run(source_path, driving_path, stage / "guidance")
            reference = load_image(stage / "guidance" / "source.png")
            maps = {name: PngGuidance(stage / "guidance" / name, guided.num_frames) for name in MAP_NAMES}
            latents = self.generator.generate_latents(reference, maps, config.generation, guided.num_frames)
            frames = self.generator.iter_video(latents, config.generation.decode_chunk)
            audio = driving_path if guide_config.keep_audio and probe_video(driving_path).has_audio else None
            files = _write_outputs(stage, frames, reference, maps, guided.fps, audio, config.write_grid)
        output_dir = Path(output_dir)
        files = {name: output_dir / path.relative_to(stage) for name, path in files.items()}
        files["guidance"] = output_dir / "guidance"
        return AnimateResult(output_dir=output_dir, num_frames=guided.num_frames, fps=guided.fps, files=files)


def _write_outputs(stage: Path, frames: Iterator[np.ndarray], reference: np.ndarray, maps: dict[str, PngGuidance],
                   fps: float, audio: str | Path | None, write_grid: bool) -> dict[str, Path]:
    """Stream the decoded frames into result.mp4 and grid.mp4 (source | driving | depth | normal | render | result);
    the driving crops come from the guide stage's preview (its second panel)."""
    from contextlib import ExitStack

    from magicportrait.io.video import VideoWriter, iter_frames

    files = {"result": stage / "result.mp4"}
    size = reference.shape[1]
    preview_path = stage / "guidance" / "preview.mp4"
    previews = iter_frames(preview_path) if write_grid and preview_path.is_file() else None
    with ExitStack() as stack:
        result = stack.enter_context(VideoWriter(files["result"], fps, audio_from=audio))
        if write_grid:
            files["grid"] = stage / "grid.mp4"
            grid = stack.enter_context(VideoWriter(files["grid"], fps, audio_from=audio))
        index = 0
        for chunk in frames:
            for frame in chunk:
                result.write(frame)
                if write_grid:
                    preview = next(previews, None) if previews is not None else None
                    driving = preview[:, size:2 * size] if preview is not None else np.zeros_like(reference)
                    panels = [maps[name](index, index + 1)[0] for name in MAP_NAMES]
                    grid.write(np.concatenate([reference, driving, *panels, frame], axis=1))
                index += 1
    return files
