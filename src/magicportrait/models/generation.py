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

Unlike the official pipeline, memory does not grow with the video beyond the latents: the guidance maps are read
and encoded per window (from arrays or from a loader callable), and decoding streams.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from magicportrait.models.context import ContextMode, ContextWindow, context_windows

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDIMScheduler

    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.reference_attention import ReferenceFusion
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.unet_3d import UNet3DConditionModel

logger = logging.getLogger(__name__)

FrameLoader = Callable[[int, int], np.ndarray]
"""``loader(start, stop)`` -> uint8 frames ``start..stop-1`` of shape ``(stop - start, H, W, 3)``."""
GuidanceSource = np.ndarray | torch.Tensor | Sequence[np.ndarray] | FrameLoader
WindowCallback = Callable[[int, int, ContextWindow, torch.Tensor], None]
StepCallback = Callable[[int, int, Mapping[str, torch.Tensor]], None]

SCHEDULER_KWARGS = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear",
    "steps_offset": 1, "clip_sample": False, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
}
"""The official inference scheduler (its YAML plus the zero-SNR switches ``enable_zero_snr`` adds)."""

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
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
    dtype: Literal["fp32", "fp16", "bf16"] = option("fp32", "Precision of the networks, which are cast in place "
                                                           "(latents and the scheduler stay fp32; the official "
                                                           "release runs fp32).")
    device: str = option("cpu", "Torch device, e.g. cpu or cuda.")
    guidance_chunk: int = option(12, "Frames encoded at once by each guidance encoder.")
    cache_guidance: bool = option(False, "Keep the guidance features of every frame on the CPU in fp16 after the "
                                         "first step instead of re-encoding them each step (faster; ~2.6 MB per "
                                         "frame at 512x512; not bit-exact with the official fp32 run).")
    decode_chunk: int = option(4, "Frames decoded at once by the VAE.")
    reference_fusion: Literal["concat", "add"] = option("concat", "How reference features enter self-attention: "
                                                                  "concat (official: extra keys/values) or add "
                                                                  "(the paper's element-wise variant).")
    show_progress: bool = option(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        check_choices(self)  # context_mode, dtype, reference_fusion
        check_range(self, "steps", 1, MAX_STEPS)
        check_range(self, "guidance_scale", 0)
        check_at_least(self, 1, "context_frames", "guidance_chunk", "decode_chunk")
        check_range(self, "context_overlap", 0, self.context_frames - 1)
        check_range(self, "seed", -2 ** 63, 2 ** 64 - 1)  # what torch.Generator.manual_seed takes
        check_device(self)
        if self.noise_device == "cuda" and not torch.cuda.is_available():
            raise InputError(f"{flag('noise_device')} cuda needs a CUDA GPU, and torch sees none; use cpu or auto.")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1


class GuidanceVideos:
    """Random access to the guidance videos (one per map type), frames read only when a window needs them.

    Args:
        sources: map name -> uint8 frames `(F, H, W, 3)` (array, tensor or list of frames), or a loader
            ``loader(start, stop)`` returning frames ``start..stop-1`` (so a long video need not be in memory).
        num_frames: the video length; required when every source is a loader.
    """

    def __init__(self, sources: Mapping[str, GuidanceSource], num_frames: int | None = None) -> None:
        if not sources:
            raise InputError("No guidance videos given.")
        self.sources = dict(sources)
        lengths = {name: len(source) for name, source in self.sources.items() if not callable(source)}
        if num_frames is None and not lengths:
            raise InputError("num_frames is needed when the guidance videos are given as loaders.")
        self.num_frames = int(num_frames if num_frames is not None else next(iter(lengths.values())))
        wrong = {name: length for name, length in lengths.items() if length != self.num_frames}
        if wrong or self.num_frames < 1:
            raise InputError(f"Every guidance video needs the same number of frames ({self.num_frames}); got {wrong}.")
        self.height: int | None = None
        self.width: int | None = None
        self.height, self.width = self.read(next(iter(self.sources)), [0]).shape[1:3]
        if self.height % 8 or self.width % 8:
            raise InputError(f"Guidance frames are {self.width}x{self.height}; both sides must be multiples of 8.")

    def read(self, name: str, frames: Sequence[int]) -> np.ndarray:
        """uint8 frames `(len(frames), H, W, 3)` of map `name`, in the order given (contiguous runs read at once)."""
        parts = [self._read_run(name, start, stop) for start, stop in _contiguous_runs(frames)]
        video = np.concatenate(parts)
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise InputError(f"Guidance '{name}' must be uint8 RGB frames (F, H, W, 3), got {video.dtype} "
                             f"{video.shape}.")
        if self.height is not None and video.shape[1:3] != (self.height, self.width):
            raise InputError(f"Guidance '{name}' frames are {video.shape[2]}x{video.shape[1]}, expected "
                             f"{self.width}x{self.height} (all maps and frames must have one size).")
        return video

    def _read_run(self, name: str, start: int, stop: int) -> np.ndarray:
        source = self.sources[name]
        frames = source(start, stop) if callable(source) else source[start:stop]
        if isinstance(frames, torch.Tensor):
            frames = frames.cpu().numpy()
        frames = np.stack(frames) if isinstance(frames, list | tuple) else np.asarray(frames)
        if len(frames) != stop - start:
            raise InputError(f"Guidance '{name}' returned {len(frames)} frames for frames {start}..{stop - 1}.")
        return frames


def _contiguous_runs(frames: Sequence[int]) -> list[tuple[int, int]]:
    """[11, 12, 13, 0, 1, 2] -> [(11, 14), (0, 3)]: half-open ranges of consecutive indices, in order."""
    runs: list[tuple[int, int]] = []
    for frame in frames:
        if runs and runs[-1][1] == frame:
            runs[-1] = (runs[-1][0], frame + 1)
        else:
            runs.append((frame, frame + 1))
    return runs


class GuidanceFeatures:
    """Guidance features of any set of frames: each map through its encoder, the three summed (as the official
    pipeline does), computed on demand and optionally cached on the CPU in fp16."""

    def __init__(self, encoders: Mapping[str, GuidanceEncoder], videos: GuidanceVideos, chunk: int,
                 device: torch.device, dtype: torch.dtype, cache: bool = False) -> None:
        missing = sorted(set(encoders) - set(videos.sources))
        extra = sorted(set(videos.sources) - set(encoders))
        if missing or extra:
            raise InputError(f"The guidance maps must match the encoders {sorted(encoders)}: missing {missing}, "
                             f"unexpected {extra}.")
        self.encoders, self.videos, self.chunk = encoders, videos, chunk
        self.device, self.dtype = device, dtype
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __call__(self, frames: Sequence[int]) -> torch.Tensor:
        """Features `(1, E, len(frames), H/8, W/8)` in the network dtype."""
        if self.cache is None:
            return self._encode(frames)
        todo = [frame for frame in dict.fromkeys(frames) if frame not in self.cache]
        if todo:
            fresh = self._encode(todo)[0].transpose(0, 1).to("cpu", torch.float16)
            self.cache.update(zip(todo, fresh, strict=True))
        cached = torch.stack([self.cache[frame] for frame in frames], dim=1)
        return cached.unsqueeze(0).to(self.device, self.dtype)

    def _encode(self, frames: Sequence[int]) -> torch.Tensor:
        features = []
        for name, encoder in self.encoders.items():
            maps = torch.from_numpy(self.videos.read(name, frames)).to(self.device)
            maps = (maps.float() / 255.0).permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, F, H, W) in [0, 1]
            features.append(encoder(maps.to(self.dtype), frame_chunk=self.chunk))
        return torch.stack(features).sum(0)  # stack-then-sum, as the official pipeline adds them


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

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device: str | torch.device, dtype: torch.dtype) -> GenerationPipeline:
        """Move and cast the networks in place; the VAE stays fp32 when its config asks for it (``force_upcast``,
        as SD VAEs do)."""
        for module in [self.reference_unet, self.denoising_unet, *self.guidance_encoders.values()]:
            current = next((parameter.dtype for parameter in module.parameters()), dtype)
            if current.itemsize < dtype.itemsize:
                logger.warning("Casting a %s network up to %s: its weights keep their lower precision; load the "
                               "weights again for exact %s results.", current, dtype, dtype)
            module.to(device=device, dtype=dtype).eval()
        vae_dtype = torch.float32 if self.vae.config.get("force_upcast", True) else dtype
        self.vae.to(device=device, dtype=vae_dtype).eval()
        return self

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
        return np.concatenate(list(self.iter_video(latents, config.decode_chunk)))

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
        """
        config = config or GenerationConfig()
        device, dtype = torch.device(config.device), config.torch_dtype
        self.to(device, dtype)
        videos = GuidanceVideos(guidance, num_frames)
        features = GuidanceFeatures(self.guidance_encoders, videos, config.guidance_chunk, device, dtype,
                                    cache=config.cache_guidance)
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
            fusion.write(self._cfg_batch(reference_latents, config), self._cfg_batch(text, config))
            text = self._cfg_batch(text, config)
            progress = tqdm(total=config.steps * len(windows), desc="denoising", disable=not config.show_progress)
            with progress:
                for step_index, timestep in enumerate(self.scheduler.timesteps):
                    velocity = self._predict_velocity(latents, timestep, windows, features, text, config,
                                                      step_index, callback_on_window, progress)
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

        return vae_encode_mean(self.vae, pixels)

    def prepare_latents(self, num_frames: int, height: int, width: int, seed: int,
                        device: str | torch.device = "cpu") -> torch.Tensor:
        """The initial noise `(1, C, F, H/8, W/8)`, float32, drawn as the official pipeline draws it, by ``device``'s
        generator (a CUDA generator gives other numbers than the CPU's for the same seed)."""
        generator = torch.Generator(device).manual_seed(seed)
        shape = (1, self.vae.config.latent_channels, num_frames,
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        return torch.randn(shape, generator=generator, device=device) * self.scheduler.init_noise_sigma

    def decode_latents(self, latents: torch.Tensor, chunk: int = 4) -> Iterator[torch.Tensor]:
        """Decode `chunk` frames at a time: yields float32 `(n, 3, H, W)` in [0, 1] on the CPU."""
        from magicportrait.models.vae import vae_decode

        for start in range(0, latents.shape[2], chunk):
            yield vae_decode(self.vae, latents[:, :, start:start + chunk], chunk)[0].transpose(0, 1).cpu()

    def iter_video(self, latents: torch.Tensor, chunk: int = 4) -> Iterator[np.ndarray]:
        """Decode `chunk` frames at a time: yields uint8 `(n, H, W, 3)` (stream these to a video writer)."""
        for frames in self.decode_latents(latents, chunk):
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
            sample = self._cfg_batch(latents[:, :, frames], config).to(config.torch_dtype)
            guidance = self._cfg_batch(features(frames), config)
            output = self.denoising_unet(sample, timestep, encoder_hidden_states=text,
                                         guidance_features=guidance).float()
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


def _noise_device(config: GenerationConfig) -> str:
    """The device whose generator draws the initial noise (see ``GenerationConfig.noise_device``)."""
    if config.noise_device != "auto":
        return config.noise_device
    return torch.device(config.device).type
