"""Stage 1 (images) and stage 2 (video) training of MagicPortrait on ``accelerate``.

The recipe is Champ's two-stage training, which the official release follows (``official-implementation.md`` s5):

- stage 1 trains the guidance encoders, the denoising UNet without motion modules and the reference UNet (its last
  up block frozen: the last transformer's output feeds nothing, so DDP would see unused parameters), on a
  reference frame + a target frame of one clip;
- stage 2 trains only the motion modules (from AnimateDiff ``mm_sd_v15_v2`` or from scratch) on clips.

Both: VAE and text encoder frozen, the fixed prompt's embedding computed once; DDPM noise with zero-terminal-SNR
betas and v-prediction; min-SNR-gamma weights ``min(snr, gamma) / (snr + 1)``; noise offset; reference dropout (a
step skips the reference UNet, as the unconditional half of classifier-free guidance does at inference: same text,
same guidance, no reference bank). Checkpoints hold accelerate's state (optimizer, scheduler, RNG), the data position
and the trained networks in the official file layout, so ``load_release`` reads them.

Run: ``accelerate launch -m magicportrait.training.trainer --config configs/stage1.yaml --set run.max_steps=10``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from magicportrait.errors import CheckpointError, DependencyError, InputError
from magicportrait.training.config import TrainConfig, load_config
from magicportrait.training.data import (
    ResumableSampler,
    Stage1Dataset,
    Stage2Dataset,
    frame_path,
    read_manifest,
)
from magicportrait.types import GUIDANCE_NAMES

__all__ = ["MagicPortraitNet", "Trainer", "latest_checkpoint", "main", "train"]

logger = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)$")
STATE_DIR, POSITION_FILE, LOG_FILE = "state", "data_position.json", "log.jsonl"
PROMPT_FILE = "prompt.txt"


class MagicPortraitNet(nn.Module):
    """The trained networks in one module (what accelerate wraps): guidance encoders, reference UNet (wired to the
    denoising UNet by :class:`ReferenceFusion`) and denoising UNet; the official training forward (``MgpModel``)."""

    def __init__(self, denoising_unet: nn.Module, reference_unet: nn.Module, encoders: dict[str, nn.Module]) -> None:
        super().__init__()
        from magicportrait.models.reference_attention import ReferenceFusion

        self.denoising_unet, self.reference_unet = denoising_unet, reference_unet
        self.guidance_encoders = nn.ModuleDict(encoders)
        # Full-precision banks: gradients reach the reference UNet unrounded.
        self.fusion = ReferenceFusion(reference_unet, denoising_unet, bank_dtype=None)

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, reference_latents: torch.Tensor,
                maps: dict[str, torch.Tensor], text: torch.Tensor, use_reference: bool) -> torch.Tensor:
        features = torch.stack([self.guidance_encoders[name](maps[name]) for name in GUIDANCE_NAMES]).sum(0)
        # Banks stay set until the next forward: gradient checkpointing recomputes the readers during backward.
        if use_reference:
            self.fusion.write(reference_latents, text)
        else:
            self.fusion.clear()
        return self.denoising_unet(noisy_latents, timesteps, text, guidance_features=features)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step that holds a complete state, or None."""
    found = []
    for path in output_dir.glob("checkpoint-*"):
        match = CHECKPOINT_PATTERN.search(path.name)
        if match and (path / POSITION_FILE).is_file() and (path / STATE_DIR).is_dir():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class Trainer:
    """Builds everything from a :class:`TrainConfig` (resuming from the latest checkpoint when asked) and runs it."""

    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed

        self.config = config
        self.output_dir = Path(config.run.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        handlers = [DistributedDataParallelKwargs(find_unused_parameters=config.stage == 1
                                                  and config.diffusion.reference_dropout > 0)]
        self.accelerator = Accelerator(
            mixed_precision=config.run.mixed_precision,
            gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
            log_with="tensorboard" if _has_tensorboard() else None,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                logging_dir=str(self.output_dir / "logs")),
            kwargs_handlers=handlers,
        )
        set_seed(config.run.seed)
        self.device = self.accelerator.device
        self.sd15, self.vae_dir = Path(config.model.sd15), Path(config.model.vae)
        self._build_frozen()
        net = self._build_net()
        self.trainable = [p for p in net.parameters() if p.requires_grad]
        optimizer = self._build_optimizer()
        warmup = max(1, config.optim.warmup_steps)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.net, self.optimizer = self.accelerator.prepare(net, optimizer)
        self.accelerator.register_for_checkpointing(self.lr_scheduler)
        self.ema = self._build_ema()
        self.noise_scheduler = make_training_scheduler(config.diffusion.beta_schedule)
        self.dataset = self._build_dataset()
        self.global_step = 0
        self.resume()
        self._trim_log()
        self.loader = self._build_loader()

    # ------------------------------------------------------------------ building
    def _build_frozen(self) -> None:
        from diffusers import AutoencoderKL

        from magicportrait.models.release import encode_prompt

        for path, what in ((self.sd15 / "unet" / "config.json", "model.sd15"), (self.vae_dir / "config.json",
                                                                                "model.vae")):
            if not path.is_file():
                raise InputError(f"{path} not found: set {what} to a diffusers folder (see configs/stage1.yaml).")
        self.vae = AutoencoderKL.from_pretrained(str(self.vae_dir), local_files_only=True)
        self.vae.to(self.device).eval().requires_grad_(False)
        self.text_embedding = encode_prompt(self.sd15).to(self.device)  # (1, 77, D), the fixed prompt, once
        self.unet_config = json.loads((self.sd15 / "unet" / "config.json").read_text())

    def _guidance_widths(self) -> tuple[int, ...]:
        from magicportrait.models.release import OFFICIAL_GUIDANCE_ENCODER
        from magicportrait.models.tiny import TINY_GUIDANCE_ENCODER

        source = TINY_GUIDANCE_ENCODER if self.config.model.size == "tiny" else OFFICIAL_GUIDANCE_ENCODER
        return tuple(source["block_out_channels"])

    def _build_net(self) -> MagicPortraitNet:
        from magicportrait.models.guidance_encoder import GuidanceEncoder
        from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
        from magicportrait.models.release import OFFICIAL_MOTION_MODULE_KWARGS
        from magicportrait.models.unet_3d import UNet3DConditionModel

        stage2 = self.config.stage == 2
        extra = {"motion_module_kwargs": dict(OFFICIAL_MOTION_MODULE_KWARGS)} if stage2 else {"motion_modules": False}
        denoising = UNet3DConditionModel.from_unet2d_config(dict(self.unet_config), **extra)
        reference = ReferenceUNet2DConditionModel.from_unet2d_config(dict(self.unet_config))
        encoders = {name: GuidanceEncoder(guidance_embedding_channels=int(self.unet_config["block_out_channels"][0]),
                                          guidance_input_channels=3, block_out_channels=self._guidance_widths())
                    for name in GUIDANCE_NAMES}
        if stage2:
            load_stage2_weights(denoising, reference, encoders, self.config)
        else:
            load_stage1_weights(denoising, reference, encoders, self.config)
        net = MagicPortraitNet(denoising, reference, encoders)
        set_trainable(net, self.config.stage)
        if self.config.model.gradient_checkpointing:
            denoising.enable_gradient_checkpointing()
            reference.enable_gradient_checkpointing()
        return net.to(self.device).train()

    def _build_optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        kwargs = {"lr": optim.learning_rate, "betas": (optim.adam_beta1, optim.adam_beta2),
                  "weight_decay": optim.weight_decay, "eps": optim.adam_epsilon}
        if not optim.use_8bit_adam:
            return torch.optim.AdamW(self.trainable, **kwargs)
        try:
            import bitsandbytes
        except ImportError:
            raise DependencyError("optim.use_8bit_adam needs bitsandbytes: `pip install bitsandbytes` (CUDA only), "
                                  "or set optim.use_8bit_adam=false.") from None
        return bitsandbytes.optim.AdamW8bit(self.trainable, **kwargs)

    def _build_ema(self):  # -> EMAModel | None
        if not self.config.optim.use_ema:
            return None
        from diffusers.training_utils import EMAModel

        ema = EMAModel(self.trainable, decay=self.config.optim.ema_decay)
        ema.to(self.device)
        self.accelerator.register_for_checkpointing(ema)
        return ema

    def _build_dataset(self) -> Stage1Dataset | Stage2Dataset:
        data, seed = self.config.data, self.config.run.seed
        if self.config.stage == 1:
            return Stage1Dataset(data.root, data.resolution, data.margin, seed)
        return Stage2Dataset(data.root, data.resolution, data.clip_length, seed)

    def _build_loader(self) -> Iterator[dict]:
        """Endless batches from the current data position (the loader's own generator leaves the RNG alone)."""
        sampler = ResumableSampler(self.samples_consumed(), self.accelerator.process_index,
                                   self.accelerator.num_processes)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.config.run.batch_size, sampler=sampler,
                                             num_workers=self.config.data.num_workers,
                                             generator=torch.Generator().manual_seed(self.config.run.seed))
        return iter(loader)

    def samples_consumed(self) -> int:
        """Samples this process has drawn after ``global_step`` optimizer steps."""
        return self.global_step * self.config.optim.gradient_accumulation_steps * self.config.run.batch_size

    # ------------------------------------------------------------------ loss and steps
    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The min-SNR-weighted v-prediction loss of a batch. ``generator`` (CPU) fixes noise, timesteps and the
        reference dropout (e.g. to over-fit one sample); None draws them from the global RNG (saved in
        checkpoints)."""
        cfg, device = self.config.diffusion, self.device
        target_pixels = batch["target"].unsqueeze(2) if "target" in batch else batch["frames"]  # (B, 3, F, H, W)
        with torch.no_grad():
            latents = self._encode_video(target_pixels, generator)
            reference_latents = self._encode_mean(batch["reference"].to(device))
        batch_size = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator)
        if cfg.noise_offset:
            noise = noise + cfg.noise_offset * torch.randn((*latents.shape[:2], 1, 1, 1), generator=generator)
        noise = noise.to(device)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (batch_size,),
                                  generator=generator).to(device)
        use_reference = bool(torch.rand((), generator=generator) >= cfg.reference_dropout)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        text = self.text_embedding.expand(batch_size, -1, -1)
        maps = {name: batch[name].to(device) for name in GUIDANCE_NAMES}
        if "target" in batch:
            maps = {name: value.unsqueeze(2) for name, value in maps.items()}
        with self.accelerator.autocast():
            prediction = self.net(noisy, timesteps, reference_latents, maps, text, use_reference)
        errors = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3, 4))
        return (errors * self.loss_weights(timesteps)).mean()

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """min(snr, gamma) / (snr + 1) for v-prediction (ones when snr_gamma is null)."""
        gamma = self.config.diffusion.snr_gamma
        if gamma is None:
            return torch.ones(timesteps.shape, device=timesteps.device)
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.noise_scheduler, timesteps).float()
        return snr.clamp(max=gamma) / (snr + 1)

    def _encode_video(self, pixels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """`(B, 3, F, H, W)` in [-1, 1] -> sampled, scaled latents `(B, 4, F, h, w)` (Champ samples the posterior)."""
        batch, _, frames, height, width = pixels.shape
        flat = pixels.transpose(1, 2).reshape(batch * frames, 3, height, width).to(self.device, self.vae.dtype)
        posterior = self.vae.encode(flat).latent_dist
        sample = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(
            self.device, posterior.mean.dtype)
        latents = sample.float() * self.vae.config.scaling_factor
        return latents.reshape(batch, frames, *latents.shape[1:]).transpose(1, 2)

    def _encode_mean(self, pixels: torch.Tensor) -> torch.Tensor:
        """The reference latent as inference computes it: the posterior mean x scaling factor."""
        from magicportrait.models.vae import vae_encode_mean

        return vae_encode_mean(self.vae, pixels).float()

    def training_step(self, batch: dict, generator: torch.Generator | None = None) -> float:
        """One micro-batch: forward, backward, and (at accumulation boundaries) clip + optimizer step. Returns the
        loss (averaged over processes)."""
        with self.accelerator.accumulate(self.net):
            loss = self.compute_loss(batch, generator)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.trainable, self.config.optim.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator.sync_gradients:
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step(self.trainable)
        return float(self.accelerator.reduce(loss.detach(), reduction="mean"))

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path:
        """Run until ``run.max_steps``; returns the output folder."""
        run = self.config.run
        if self.accelerator.is_main_process and self.accelerator.trackers == [] and _has_tensorboard():
            self.accelerator.init_trackers("magicportrait", config=_flat_config(self.config))
        progress = tqdm(total=run.max_steps, initial=self.global_step, desc=f"stage {self.config.stage}",
                        disable=not (run.show_progress and self.accelerator.is_local_main_process))
        losses: list[float] = []
        while self.global_step < run.max_steps:
            losses.append(self.training_step(next(self.loader)))
            if not self.accelerator.sync_gradients:
                continue
            self.global_step += 1
            progress.update()
            loss, losses = float(np.mean(losses)), []
            progress.set_postfix(loss=f"{loss:.4f}")
            if self.global_step % run.log_steps == 0:
                self.log({"train/loss": loss, "train/lr": self.lr_scheduler.get_last_lr()[0]})
            if self.global_step % run.checkpoint_steps == 0 or self.global_step == run.max_steps:
                self.save_checkpoint()
            if run.validation_steps and self.global_step % run.validation_steps == 0:
                self.validate()
        progress.close()
        self.accelerator.end_training()
        return self.output_dir

    def log(self, values: dict[str, float]) -> None:
        """To tensorboard when available, and always to ``log.jsonl`` (main process)."""
        self.accelerator.log(values, step=self.global_step)
        if self.accelerator.is_main_process:
            with open(self.output_dir / LOG_FILE, "a") as handle:
                handle.write(json.dumps({"step": self.global_step, **values}) + "\n")

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """``checkpoint-<step>/``: accelerate state + data position + the official files (EMA weights if on)."""
        directory = self.output_dir / f"checkpoint-{self.global_step}"
        self.accelerator.save_state(str(directory / STATE_DIR))
        state = self._full_state_dict()  # every process takes part: FSDP / DeepSpeed gather their shards here
        if self.accelerator.is_main_process:
            export_official(state, directory, with_motion=self.config.stage == 2)
            position = {"global_step": self.global_step, "samples_per_process": self.samples_consumed(),
                        "num_processes": self.accelerator.num_processes}
            (directory / POSITION_FILE).write_text(json.dumps(position, indent=2))  # last: marks it complete
        self.accelerator.wait_for_everyone()
        return directory

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained networks' full state (EMA weights when EMA is on), gathered from every process."""
        if self.ema is not None:
            self.ema.store(self.trainable)
            self.ema.copy_to(self.trainable)
        try:
            return self.accelerator.get_state_dict(self.net)
        finally:
            if self.ema is not None:
                self.ema.restore(self.trainable)

    def resume(self) -> None:
        """Restore optimizer, scheduler, RNG (accelerate) and the data position from the latest checkpoint."""
        latest = latest_checkpoint(self.output_dir) if self.config.run.resume else None
        if latest is None:
            return
        position = json.loads((latest / POSITION_FILE).read_text())
        if position.get("num_processes", 1) != self.accelerator.num_processes:
            logger.warning("Resuming a %s-process run on %s processes: the data order changes.",
                           position.get("num_processes"), self.accelerator.num_processes)
        self.accelerator.load_state(str(latest / STATE_DIR))
        self.global_step = int(position["global_step"])
        logger.info("Resumed from %s (step %d).", latest, self.global_step)

    def _trim_log(self) -> None:
        """Drop log rows past the current step (a fresh start, or steps redone after a resume)."""
        path = self.output_dir / LOG_FILE
        if self.accelerator.is_main_process and path.is_file():
            rows = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= self.global_step]
            path.write_text("".join(row + "\n" for row in rows))

    # ------------------------------------------------------------------ validation
    def validate(self) -> Path | None:
        """Generate a short video from the first clip (reference = its first frame) and log its loss; the global
        RNG is left as it was, so validation does not change training."""
        if not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return None
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            path, loss = self._validation_video(), self._validation_loss()
        self.log({"validation/loss": loss})
        self.accelerator.wait_for_everyone()
        return path

    def _validation_loss(self) -> float:
        batch = torch.utils.data.default_collate([self.dataset[0]])
        with torch.no_grad():
            loss = self.compute_loss(batch, torch.Generator().manual_seed(self.config.run.seed))
        return float(loss)

    def _validation_video(self) -> Path:
        from magicportrait.io.video import write_video
        from magicportrait.models.generation import GenerationConfig, GenerationPipeline

        clip = read_manifest(self.config.data.root)[0]
        count = min(self.config.run.validation_frames, clip.num_frames)
        resolution = self.config.data.resolution
        reference = _read_uint8(frame_path(clip, "frames", 0), resolution)
        maps = {name: np.stack([_read_uint8(frame_path(clip, name, i), resolution) for i in range(count)])
                for name in GUIDANCE_NAMES}
        truth = np.stack([_read_uint8(frame_path(clip, "frames", i), resolution) for i in range(count)])
        net = self.accelerator.unwrap_model(self.net)
        pipeline = GenerationPipeline(self.vae, net.reference_unet, net.denoising_unet, dict(net.guidance_encoders),
                                      self.text_embedding)
        options = GenerationConfig(steps=self.config.run.validation_inference_steps, device=str(self.device),
                                   context_frames=min(self.config.data.clip_length, count), show_progress=False,
                                   seed=self.config.run.seed)
        try:
            video = pipeline(reference, maps, options)
        finally:
            net.train()
            self.vae.eval()
        path = self.output_dir / "validation" / f"step-{self.global_step:06d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_video(path, np.concatenate([truth, video], axis=2), fps=25)


# ---------------------------------------------------------------------- model set-up helpers
def make_training_scheduler(beta_schedule: str = "scaled_linear"):  # -> DDPMScheduler
    """DDPM training noise: SD-1.5 betas rescaled to zero terminal SNR, v-prediction (Champ's training scheduler)."""
    from diffusers import DDPMScheduler

    from magicportrait.models.generation import SCHEDULER_KWARGS

    kwargs = {key: SCHEDULER_KWARGS[key] for key in ("num_train_timesteps", "beta_start", "beta_end",
                                                     "steps_offset", "clip_sample", "rescale_betas_zero_snr",
                                                     "timestep_spacing", "prediction_type")}
    return DDPMScheduler(**kwargs, beta_schedule=beta_schedule)


def load_stage1_weights(denoising: nn.Module, reference: nn.Module, encoders: dict[str, nn.Module],
                        config: TrainConfig) -> None:
    """Stage-1 start: an official-layout checkpoint folder when given, else SD-1.5's UNet weights for both UNets
    (the guidance encoders then start fresh, their zero ``conv_out`` leaving the UNet unchanged)."""
    from magicportrait.models.checkpoints import load_strict, read_state_dict

    if config.model.init_checkpoint_dir:
        ckpts = Path(config.model.init_checkpoint_dir)
        state = read_state_dict(ckpts / "denoising_unet.pth")
        load_strict(denoising, {k: v for k, v in state.items() if "motion_modules." not in k},
                    str(ckpts / "denoising_unet.pth"))
        _load_frozen_parts(reference, encoders, ckpts)
        return
    unet_dir = Path(config.model.sd15) / "unet"
    files = [unet_dir / name for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")]
    weights = next((path for path in files if path.is_file()), None)
    if weights is None:
        raise CheckpointError(f"No initial UNet weights: {unet_dir} has no diffusion_pytorch_model.safetensors and "
                              f"model.init_checkpoint_dir is not set. Download Stable Diffusion 1.5 in diffusers "
                              f"format (with unet weights) or point model.init_checkpoint_dir at a ckpts folder.")
    state = read_state_dict(weights)
    load_strict(denoising, state, str(weights))
    load_strict(reference, {k: v for k, v in state.items() if not k.startswith(("conv_norm_out.", "conv_out."))},
                str(weights))


def load_stage2_weights(denoising: nn.Module, reference: nn.Module, encoders: dict[str, nn.Module],
                        config: TrainConfig) -> None:
    """Stage-2 start: the stage-1 networks, plus the motion modules from ``model.motion_module`` (or fresh ones,
    whose zero ``proj_out`` makes them the identity)."""
    from magicportrait.models.checkpoints import (
        load_strict,
        merge_motion_modules,
        read_motion_modules,
        read_state_dict,
    )

    ckpts = Path(config.model.stage1_checkpoint_dir)
    missing = [name for name in ("denoising_unet.pth", "reference_unet.pth") if not (ckpts / name).is_file()]
    if missing:
        raise CheckpointError(f"model.stage1_checkpoint_dir={ckpts} lacks {', '.join(missing)}: point it at a "
                              f"stage-1 checkpoint-<step> folder.")
    state = {k: v for k, v in read_state_dict(ckpts / "denoising_unet.pth").items() if "motion_modules." not in k}
    if config.model.motion_module:
        merged = merge_motion_modules(state, read_motion_modules(config.model.motion_module),
                                      source=config.model.motion_module)
        load_strict(denoising, merged, f"{ckpts / 'denoising_unet.pth'} + {config.model.motion_module}")
    else:
        result = denoising.load_state_dict(state, strict=False)
        problems = [key for key in result.missing_keys if "motion_modules." not in key] + result.unexpected_keys
        if problems:
            raise CheckpointError(f"{ckpts / 'denoising_unet.pth'} does not match the UNet: {problems[:8]}.")
    _load_frozen_parts(reference, encoders, ckpts)


def _load_frozen_parts(reference: nn.Module, encoders: dict[str, nn.Module], ckpts: Path) -> None:
    from magicportrait.models.checkpoints import load_strict, read_state_dict

    load_strict(reference, read_state_dict(ckpts / "reference_unet.pth"), str(ckpts / "reference_unet.pth"))
    for name, encoder in encoders.items():
        path = ckpts / f"guidance_encoder_{name}.pth"
        load_strict(encoder, read_state_dict(path), str(path))


def set_trainable(net: MagicPortraitNet, stage: int) -> None:
    """Stage 1: everything but the reference UNet's last up block and the encoders' layers the forward never runs;
    stage 2: the motion modules only."""
    net.requires_grad_(False)
    if stage == 2:
        for name, parameter in net.denoising_unet.named_parameters():
            parameter.requires_grad_("motion_modules." in name)
        return
    net.denoising_unet.requires_grad_(True)
    net.reference_unet.requires_grad_(True)
    net.reference_unet.up_blocks[-1].requires_grad_(False)
    for encoder in net.guidance_encoders.values():
        encoder.requires_grad_(True)
        encoder.guidance_attention.requires_grad_(False)
        for index, attention in enumerate(encoder.attentions):
            attention.requires_grad_(encoder._runs_attention(index))


def export_official(state: dict[str, torch.Tensor], directory: Path, with_motion: bool) -> None:
    """Write the official files (``denoising_unet.pth``, ``reference_unet.pth``, ``guidance_encoder_<t>.pth`` and,
    for stage 2, ``motion_module.pth``), as ``load_release`` / ``find_official_checkpoints`` read them, from the full
    state dict of a :class:`MagicPortraitNet` (keys prefixed with its submodule names)."""
    directory.mkdir(parents=True, exist_ok=True)
    denoising = _submodule_state(state, "denoising_unet.")
    files = {"denoising_unet.pth": {k: v for k, v in denoising.items() if "motion_modules." not in k},
             "reference_unet.pth": _submodule_state(state, "reference_unet.")}
    if with_motion:
        files["motion_module.pth"] = {k: v for k, v in denoising.items() if "motion_modules." in k}
    for name in GUIDANCE_NAMES:
        files[f"guidance_encoder_{name}.pth"] = _submodule_state(state, f"guidance_encoders.{name}.")
    for name, tensors in files.items():
        temporary = directory / f".{name}.tmp"
        torch.save({k: v.detach().cpu().clone() for k, v in tensors.items()}, temporary)
        temporary.replace(directory / name)


def _submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


# ---------------------------------------------------------------------- small helpers
def _has_tensorboard() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


def _flat_config(config: TrainConfig) -> dict:
    import dataclasses

    flat = {}
    for section, values in dataclasses.asdict(config).items():
        for key, value in (values.items() if isinstance(values, dict) else [("", values)]):
            flat[f"{section}.{key}".rstrip(".")] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


def _read_uint8(path: Path, resolution: int) -> np.ndarray:
    from magicportrait.training.data import _read_rgb

    return _read_rgb(path, resolution)


def train(config_path: str | Path, overrides: list[str] | None = None) -> Path:
    """Train one stage as the YAML file (plus ``dotted.key=value`` overrides) says; returns the output folder."""
    return Trainer(load_config(config_path, list(overrides or []))).train()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MagicPortrait stage 1 / stage 2 training (accelerate).")
    parser.add_argument("--config", required=True, help="configs/stage1.yaml or configs/stage2.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set run.max_steps=100 (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(train(args.config, args.set))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
