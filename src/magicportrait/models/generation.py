"""The diffusion generator: reference portrait + depth / normal / render guidance video -> reenacted video.

Sampling follows the official MagicPortrait pipeline (``MultiGuidance2LongVideoPipeline``) step for step, so the
released weights give the released behaviour:

1. The reference image ([-1, 1]) is encoded to the VAE posterior mean times 0.18215.
2. The initial latents are ``torch.randn((1, 4, F, H/8, W/8))`` from a generator seeded with ``seed`` on the
   latents' device (``--noise-device``: the official code draws on CUDA; ``cpu`` gives the same noise anywhere).
3. The reference UNet runs once, at timestep 0, and its per-block features ("banks") are reused by the denoising
   UNet's spatial self-attention at every step and in every window.
4. Every DDIM step (v-prediction, zero-terminal-SNR, trailing spacing, eta 0) runs the denoising UNet on each
   context window (:mod:`magicportrait.models.context`), with the guidance features of the window's frames
   added after ``conv_in``, and blends the windows' predictions per frame (averaged; without classifier-free
   guidance the official code sums them, ``--official-window-sum``).
5. Classifier-free guidance: both halves of the batch get the same text and guidance; the first ("unconditional")
   half attends without the reference, so the scale amplifies the appearance conditioning only.
6. The latents are decoded a few frames at a time.

Unlike the official pipeline, memory does not grow with the video beyond the latents and a bounded feature cache:
the guidance maps are read per window (from arrays or from a loader callable), their features kept while they fit
``--guidance-cache-mb``, and decoding streams. How the networks run (precision, offloading, compiling, VAE tiling,
the memory check) is in :mod:`magicportrait.models.runtime`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from magicportrait.config import (
    OUTPUT,
    SAMPLER,
    check_at_least,
    check_choices,
    check_device,
    check_range,
    flag,
    option,
)
from magicportrait.errors import InputError
from magicportrait.models import runtime
from magicportrait.models.context import ContextMode, ContextWindow, context_windows
from magicportrait.models.guidance_features import (  # noqa: F401 - re-exported: part of this module's API
    MIB,
    FrameLoader,
    GuidanceFeatures,
    GuidanceSource,
    GuidanceVideos,
)

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDIMScheduler

    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.reference_attention import ReferenceFusion
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.unet_3d import UNet3DConditionModel

logger = logging.getLogger(__name__)

WindowCallback = Callable[[int, int, ContextWindow, torch.Tensor], None]
StepCallback = Callable[[int, int, Mapping[str, torch.Tensor]], None]

SCHEDULER_KWARGS = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear",
    "steps_offset": 1, "clip_sample": False, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
}
"""The official inference scheduler (its YAML plus the zero-SNR switches ``enable_zero_snr`` adds)."""

DTYPES = runtime.DTYPES
MAX_STEPS = 1000


def make_scheduler() -> DDIMScheduler:
    from diffusers import DDIMScheduler  # diffusers is imported on first use: the CLI starts fast without it

    """The DDIM scheduler built exactly as the official inference builds it."""
    return DDIMScheduler(**SCHEDULER_KWARGS)


@dataclass
class GenerationConfig:
    """Options of the diffusion sampler (the sampler flags of ``animate`` and ``generate``)."""

    cli_group: ClassVar[str] = SAMPLER
    cli_field_groups: ClassVar[dict[str, str]] = {"show_progress": OUTPUT}

    steps: int = option(20, "DDIM denoising steps (the official release: 20).")
    guidance_scale: float = option(3.5, "Classifier-free guidance scale on the reference appearance; <= 1 "
                                        "turns CFG off (half the compute).")
    context_frames: int = option(12, "Frames per temporal window of the motion modules (official: 12).")
    context_overlap: int | None = option(None, "Frames shared by adjacent windows; default 1 for closed_loop "
                                               "(official), 4 for open_loop.")
    context_mode: ContextMode = option("closed_loop", "closed_loop: official windows, the last wraps around to the "
                                                      "first frames; open_loop: no wrap-around, cross-faded seams.")
    seed: int = option(42, "Seed of the initial noise.")
    noise_device: Literal["auto", "cpu", "cuda"] = option(
        "auto", "Device whose random generator draws the initial noise: auto = the device the latents live on "
                "(--device); cuda reproduces an official GPU run seed for seed; cpu gives the same noise on every "
                "machine.")
    official_window_sum: bool = option(
        False, "Without classifier-free guidance (--guidance-scale <= 1), sum the overlapping windows' predictions "
               "as the official pipeline does (frames in two windows move twice as fast) instead of averaging them: "
               "for bit-compatibility only.")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = option(
        "auto", "Precision of the networks (latents and the scheduler stay fp32): auto = fp16 on CUDA (bf16, or fp32, "
                "if fp16 overflows), fp32 on the CPU; the official release runs fp32.")
    device: str = option("cpu", "Torch device, e.g. cpu or cuda.")
    guidance_chunk: int = option(4, "Frames encoded at once by each guidance encoder (bounds its activations).")
    guidance_cache_mb: float = option(1024, "Memory (MiB, on --device) for keeping the guidance features between "
                                            "steps instead of re-encoding them; frames beyond it are re-encoded "
                                            "(0: re-encode every step, the least memory).")
    decode_chunk: int = option(4, "Frames decoded at once by the VAE.")
    feed_forward_chunk: int | None = option(None, "Rows of each feed-forward layer computed at once (bounds the "
                                                  "largest activation; exact); default 4096 on the CPU, all on a "
                                                  "GPU; 0 = all.")
    offload: bool = option(False, "Keep the reference UNet and the VAE on the CPU except while they run (for 8-12 GB "
                                  "GPUs; the text encoder is never kept).")
    vae_tile: int = option(0, "Decode in overlapping tiles of this many pixels (e.g. 256), blended at the seams; 0 = "
                              "whole frames.")
    compile: bool = option(False, "torch.compile the denoising UNet (the first window includes the compilation; "
                                  "worth it for long videos on a GPU).")
    low_vram: bool = option(False, "Preset for 8-12 GB GPUs: --offload, fp16 (auto), --vae-tile 256, "
                                   "--decode-chunk 1, --guidance-chunk 4, --guidance-cache-mb 0, feed-forward "
                                   "chunks of 4096 rows.")
    reference_fusion: Literal["concat", "add"] = option("concat", "How reference features enter self-attention: "
                                                                  "concat (official: extra keys/values) or add "
                                                                  "(the paper's element-wise variant).")
    show_progress: bool = option(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        check_choices(self)  # context_mode, dtype, reference_fusion
        check_range(self, "steps", 1, MAX_STEPS)
        check_range(self, "guidance_scale", 0)
        if self.low_vram:
            self._apply_low_vram()
        check_at_least(self, 1, "context_frames", "guidance_chunk", "decode_chunk")
        check_range(self, "guidance_cache_mb", 0)
        check_range(self, "feed_forward_chunk", 0)
        if self.vae_tile and (self.vae_tile < 64 or self.vae_tile % 8):
            raise InputError(f"{flag('vae_tile')} must be 0 or a multiple of 8 of at least 64 pixels, got "
                             f"{self.vae_tile}.")
        check_range(self, "context_overlap", 0, self.context_frames - 1)
        check_range(self, "seed", -2 ** 63, 2 ** 64 - 1)  # what torch.Generator.manual_seed takes
        check_device(self)
        if self.noise_device == "cuda" and not torch.cuda.is_available():
            raise InputError(f"{flag('noise_device')} cuda needs a CUDA GPU, and torch sees none; use cpu or auto.")

    def _apply_low_vram(self) -> None:
        self.offload = True
        self.vae_tile = self.vae_tile or 256
        self.decode_chunk, self.guidance_chunk = 1, min(self.guidance_chunk, 4)
        self.guidance_cache_mb = 0
        self.feed_forward_chunk = self.feed_forward_chunk or runtime.CPU_FEED_FORWARD_ROWS

    @property
    def torch_dtype(self) -> torch.dtype:
        """The networks' dtype (``auto`` resolved for ``device``)."""
        return runtime.resolve_dtype(self.dtype, self.device)

    @property
    def guidance_cache_bytes(self) -> int:
        return int(self.guidance_cache_mb * MIB)

    @property
    def feed_forward_rows(self) -> int:
        if self.feed_forward_chunk is not None:
            return self.feed_forward_chunk
        return runtime.CPU_FEED_FORWARD_ROWS if torch.device(self.device).type == "cpu" else 0

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1


class GenerationPipeline:
    """Samples a reenacted video from a reference portrait and its guidance videos.

    Args:
        vae: diffusers `AutoencoderKL` (sd-vae-ft-mse in the release).
        reference_unet: the reference UNet, run once at timestep 0 to give the reference features.
        denoising_unet: the UNet3D with motion modules.
        guidance_encoders: map name (``depth``, ``normal``, ``render``) -> its encoder; the call's guidance
            videos must have exactly these names.
        text_embeddings (`torch.Tensor` of shape `(1, 77, D)`): the CLIP text embedding of the fixed prompt.
        scheduler: a DDIM scheduler; defaults to :func:`make_scheduler` (the official one).
    """

    def __init__(self, vae: AutoencoderKL, reference_unet: ReferenceUNet2DConditionModel,
                 denoising_unet: UNet3DConditionModel, guidance_encoders: Mapping[str, GuidanceEncoder],
                 text_embeddings: torch.Tensor, scheduler: DDIMScheduler | None = None) -> None:
        if text_embeddings.ndim != 3 or text_embeddings.shape[0] != 1:
            raise ValueError(f"text_embeddings must have shape (1, 77, D), got {tuple(text_embeddings.shape)}.")
        self.vae = vae
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        self.guidance_encoders = dict(guidance_encoders)
        self.text_embeddings = text_embeddings
        self.scheduler = scheduler if scheduler is not None else make_scheduler()
        self._vae_upcast = False  # set once fp16 gave the VAE non-finite values

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device: str | torch.device, dtype: torch.dtype, offload: bool = False) -> GenerationPipeline:
        """Move and cast the networks in place. The VAE runs in ``dtype`` too, and in fp32 from the first time
        fp16 gives it non-finite values (see :meth:`decode_latents`). With ``offload`` the reference UNet and the VAE
        stay on the CPU until they run."""
        device = torch.device(device)
        for module in [self.reference_unet, self.denoising_unet, *self.guidance_encoders.values(), self.vae]:
            current = next((parameter.dtype for parameter in module.parameters()), dtype)
            target = torch.float32 if module is self.vae and self._vae_upcast else dtype
            if current.itemsize < target.itemsize:
                logger.warning("Casting a %s network up to %s: its weights keep their lower precision; load the "
                               "weights again for exact %s results.", current, target, target)
            stays_on_cpu = offload and module in (self.reference_unet, self.vae)
            module.to(device="cpu" if stays_on_cpu else device, dtype=target).eval()
        return self

    def estimate_memory(self, config: GenerationConfig, num_frames: int, height: int,
                        width: int) -> runtime.MemoryEstimate:
        """What :meth:`generate_latents` and the decode need on ``config.device`` beyond what is there now."""
        return runtime.estimate_generation(self, config, num_frames, height, width)

    @torch.no_grad()
    def __call__(self, reference_image: np.ndarray, guidance: Mapping[str, GuidanceSource],
                 config: GenerationConfig | None = None, num_frames: int | None = None) -> np.ndarray:
        """Generate the video.

        Args:
            reference_image: uint8 RGB `(H, W, 3)`, the portrait (resized to the guidance size if it differs).
            guidance: map name -> uint8 RGB frames `(F, H, W, 3)` or a loader ``loader(start, stop)``.
            config: sampling options; defaults to :class:`GenerationConfig` (the official settings).
            num_frames: the video length, needed only when every guidance video is a loader.

        Returns:
            uint8 RGB video `(F, H, W, 3)`.
        """
        config = config or GenerationConfig()
        latents = self.generate_latents(reference_image, guidance, config, num_frames)
        return np.concatenate(list(self.iter_video(latents, config.decode_chunk, config)))

    @torch.no_grad()
    def generate_latents(self, reference_image: np.ndarray, guidance: Mapping[str, GuidanceSource],
                         config: GenerationConfig | None = None, num_frames: int | None = None, *,
                         callback_on_window: WindowCallback | None = None,
                         callback_on_step_end: StepCallback | None = None) -> torch.Tensor:
        """Run the denoising loop and return the final latents `(1, 4, F, H/8, W/8)`, float32.

        Args:
            callback_on_window: ``f(step_index, window_index, window, model_output)`` after each UNet call, with the
                raw model output `(B, 4, len(window.frames), h, w)` (B = 2 under CFG: unconditional, conditional).
            callback_on_step_end: ``f(step_index, timestep, tensors)`` after each DDIM step; ``tensors`` holds
                ``"velocity"`` (the blended, guided prediction) and ``"latents"`` (the new latents).

        Raises:
            InputError: the generation cannot fit in the device's free memory (estimated before it starts), or ran
                out of it.
        """
        config = config or GenerationConfig()
        videos = GuidanceVideos(guidance, num_frames)
        device = torch.device(config.device)
        runtime.check_fits(self.estimate_memory(config, videos.num_frames, videos.height, videos.width), device)
        dtype = config.torch_dtype
        try:
            return self._sample(reference_image, videos, config, dtype, callback_on_window, callback_on_step_end)
        except _Overflow:
            fallback = runtime.overflow_fallback(device)
            logger.warning("fp16 overflowed in the denoising UNet (non-finite values); generating again in %s.",
                           str(fallback).removeprefix("torch."))
            return self._sample(reference_image, videos, config, fallback, callback_on_window, callback_on_step_end)
        except torch.OutOfMemoryError as error:
            raise runtime.out_of_memory_error(device) from error

    def _sample(self, reference_image: np.ndarray, videos: GuidanceVideos, config: GenerationConfig,
                dtype: torch.dtype, callback_on_window: WindowCallback | None,
                callback_on_step_end: StepCallback | None) -> torch.Tensor:
        device = torch.device(config.device)
        self.to(device, dtype, offload=config.offload)
        runtime.set_feed_forward_chunk(self.denoising_unet, config.feed_forward_rows)
        runtime.set_compiled(self.denoising_unet, config.compile)
        features = GuidanceFeatures(self.guidance_encoders, videos, config.guidance_chunk, device, dtype,
                                    cache_bytes=config.guidance_cache_bytes)
        with runtime.on_device([self.vae], device, config.offload):
            reference_latents = self.encode_reference(reference_image, videos.height, videos.width).to(dtype)
        latents = self.prepare_latents(videos.num_frames, videos.height, videos.width, config.seed,
                                       _noise_device(config)).to(device)
        windows = context_windows(videos.num_frames, config.context_frames, config.context_overlap,
                                  config.context_mode)
        self._check_window_length(max(len(window.frames) for window in windows))
        self.scheduler.set_timesteps(config.steps, device=device)
        text = self.text_embeddings.to(device=device, dtype=dtype)
        fusion = self._reference_fusion(config, dtype)
        try:
            # The reference UNet runs once; its banks serve every step and window.
            with runtime.on_device([self.reference_unet], device, config.offload):
                fusion.write(self._cfg_batch(reference_latents.to(device), config), self._cfg_batch(text, config))
            runtime.release_mapped_pages(self.reference_unet)  # not needed again until the next video
            text = self._cfg_batch(text, config)
            check_overflow = config.dtype == "auto" and dtype == torch.float16
            progress = tqdm(total=config.steps * len(windows), desc="denoising", disable=not config.show_progress)
            with progress:
                for step_index, timestep in enumerate(self.scheduler.timesteps):
                    velocity = self._predict_velocity(latents, timestep, windows, features, text, config,
                                                      step_index, callback_on_window, progress)
                    if check_overflow and not torch.isfinite(velocity).all():
                        raise _Overflow
                    latents = self.scheduler.step(velocity, timestep, latents).prev_sample
                    if callback_on_step_end is not None:
                        callback_on_step_end(step_index, int(timestep),
                                             {"velocity": velocity, "latents": latents})
        finally:
            fusion.clear()
            fusion.detach()
        return latents

    def encode_reference(self, image: np.ndarray, height: int, width: int) -> torch.Tensor:
        """uint8 `(H, W, 3)` -> [-1, 1] -> VAE posterior mean x 0.18215, `(1, 4, height/8, width/8)`."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise InputError(f"The reference image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}.")
        if image.shape[:2] != (height, width):
            # Lanczos, as diffusers' VaeImageProcessor resizes the official pipeline's reference.
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
        pixels = torch.tensor(image, dtype=torch.float32) / 255.0  # a copy: the image may be read-only
        pixels = (pixels * 2.0 - 1.0).permute(2, 0, 1).unsqueeze(0)
        from magicportrait.models.vae import vae_encode_mean

        return self._finite_vae(lambda: vae_encode_mean(self.vae, pixels))

    def prepare_latents(self, num_frames: int, height: int, width: int, seed: int,
                        device: str | torch.device = "cpu") -> torch.Tensor:
        """The initial noise `(1, C, F, H/8, W/8)`, float32, drawn as the official pipeline draws it, by ``device``'s
        generator (a CUDA generator gives other numbers than the CPU's for the same seed)."""
        generator = torch.Generator(device).manual_seed(seed)
        shape = (1, self.vae.config.latent_channels, num_frames,
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        return torch.randn(shape, generator=generator, device=device) * self.scheduler.init_noise_sigma

    def decode_latents(self, latents: torch.Tensor, chunk: int = 4,
                       config: GenerationConfig | None = None) -> Iterator[torch.Tensor]:
        """Decode `chunk` frames at a time: yields float32 `(n, 3, H, W)` in [0, 1] on the CPU.

        A VAE in fp16 that gives non-finite values is cast to fp32 (with a message) and the chunk decoded again; it
        stays fp32 from then on. ``config`` brings ``--offload`` and ``--vae-tile``."""
        from magicportrait.models.vae import vae_decode

        offload = config is not None and config.offload
        device = torch.device(config.device) if config is not None else self.vae.device
        runtime.set_vae_tiling(self.vae, config.vae_tile if config is not None else 0)
        with runtime.on_device([self.vae], device, offload):
            for start in range(0, latents.shape[2], chunk):
                part = latents[:, :, start:start + chunk]
                yield self._finite_vae(lambda part=part: vae_decode(self.vae, part, chunk))[0].transpose(0, 1).cpu()

    def _finite_vae(self, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``run()`` with the VAE; if a half-precision VAE gave non-finite values, again in fp32 (and fp32 from then
        on, with a message)."""
        result = run()
        if self.vae.dtype == torch.float32 or torch.isfinite(result).all():
            return result
        logger.warning("The VAE gave non-finite values in %s; running it in fp32 from here on.",
                       str(self.vae.dtype).removeprefix("torch."))
        self._vae_upcast = True
        self.vae.to(torch.float32)
        return run()

    def iter_video(self, latents: torch.Tensor, chunk: int = 4,
                   config: GenerationConfig | None = None) -> Iterator[np.ndarray]:
        """Decode `chunk` frames at a time: yields uint8 `(n, H, W, 3)` (stream these to a video writer)."""
        for frames in self.decode_latents(latents, chunk, config):
            yield (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def _check_window_length(self, length: int) -> None:
        """Refuse windows longer than the motion modules' positional encodings (they would fail mid-run)."""
        from magicportrait.models.motion_module import SinusoidalPositionalEncoding

        limits = [module.pe.shape[1] for module in self.denoising_unet.modules()
                  if isinstance(module, SinusoidalPositionalEncoding)]
        if limits and length > min(limits):
            raise InputError(f"{flag('context_frames')} {length} is more than the {min(limits)} frames these motion "
                             f"modules can encode; use {flag('context_frames')} {min(limits)} or fewer.")

    def _reference_fusion(self, config: GenerationConfig, dtype: torch.dtype) -> ReferenceFusion:
        from magicportrait.models.reference_attention import ReferenceFusion

        # The official pipeline rounds the banks to fp16 even when it runs fp32; a bf16 run keeps bf16 banks.
        bank_dtype = torch.bfloat16 if dtype == torch.bfloat16 else torch.float16
        fusion = ReferenceFusion(self.reference_unet, self.denoising_unet, mode=config.reference_fusion,
                                 bank_dtype=bank_dtype)
        fusion.uncond_first_half = config.do_classifier_free_guidance
        return fusion

    @staticmethod
    def _cfg_batch(tensor: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
        """Duplicate along the batch for classifier-free guidance (both halves get the same inputs)."""
        return torch.cat([tensor, tensor]) if config.do_classifier_free_guidance else tensor

    def _predict_velocity(self, latents: torch.Tensor, timestep: torch.Tensor, windows: list[ContextWindow],
                          features: GuidanceFeatures, text: torch.Tensor, config: GenerationConfig, step_index: int,
                          callback: WindowCallback | None, progress: tqdm) -> torch.Tensor:
        """The denoising UNet on every window, blended per frame, then classifier-free guidance; float32."""
        batch = 2 if config.do_classifier_free_guidance else 1
        blended = torch.zeros((batch, *latents.shape[1:]), device=latents.device, dtype=torch.float32)
        for window_index, window in enumerate(windows):
            frames = list(window.frames)
            sample = self._cfg_batch(latents[:, :, frames], config).to(text.dtype)
            guidance = self._cfg_batch(features(frames), config)
            began = time.perf_counter()
            output = self.denoising_unet(sample, timestep, encoder_hidden_states=text,
                                         guidance_features=guidance).float()
            if config.compile and step_index == window_index == 0:
                logger.info("torch.compile warm-up: the first window took %.1f s (compilation included).",
                            time.perf_counter() - began)
            if callback is not None:
                callback(step_index, window_index, window, output)
            weights = window.weights.to(latents.device).view(1, 1, -1, 1, 1)
            if batch == 1 and config.official_window_sum:  # the official no-CFG path: summed, not averaged
                weights = torch.ones_like(weights)
            blended[:, :, frames] += output * weights
            progress.update()
        if batch == 1:
            return blended
        unconditional, conditional = blended.chunk(2)
        return unconditional + config.guidance_scale * (conditional - unconditional)


class _Overflow(Exception):
    """fp16 gave non-finite values in an ``auto`` run; it is repeated in bf16 (or fp32)."""


def _noise_device(config: GenerationConfig) -> str:
    """The device whose generator draws the initial noise (see ``GenerationConfig.noise_device``)."""
    if config.noise_device != "auto":
        return config.noise_device
    return torch.device(config.device).type
