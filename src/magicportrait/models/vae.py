"""The VAE steps of the official pipeline, on a diffusers `AutoencoderKL` (sd-vae-ft-mse in the release).

- Reference image -> latents: the posterior *mean* (no sample is drawn) times the scaling factor 0.18215.
- Latents -> video: decoded a few frames at a time (one by default, as the official pipeline does, which bounds
  memory on long videos), then mapped from [-1, 1] to [0, 1].
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

__all__ = ["vae_decode", "vae_encode_mean"]


def _scaling_factor(vae: AutoencoderKL) -> float:
    return float(vae.config.scaling_factor)  # 0.18215 for SD-1.5 VAEs such as sd-vae-ft-mse


@torch.no_grad()
def vae_encode_mean(vae: AutoencoderKL, images: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """
    Args:
        images (`torch.Tensor` of shape `(B, 3, H, W)`): RGB in [-1, 1], H and W divisible by 8.
        chunk (`int`, *optional*): encode at most this many images at once; defaults to all.

    Returns:
        `torch.Tensor` of shape `(B, 4, H/8, W/8)`: `latent_dist.mean * scaling_factor`, in the VAE's dtype.
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}.")
    images = images.to(device=vae.device, dtype=vae.dtype)
    parts = images.split(chunk or images.shape[0])
    means = [vae.encode(part).latent_dist.mean for part in parts]
    return torch.cat(means) * _scaling_factor(vae)


@torch.no_grad()
def vae_decode(vae: AutoencoderKL, latents: torch.Tensor, chunk: int = 1) -> torch.Tensor:
    """
    Args:
        latents (`torch.Tensor` of shape `(B, 4, F, h, w)` or `(N, 4, h, w)`): scaled latents.
        chunk (`int`, *optional*, defaults to 1): frames decoded at once.

    Returns:
        `torch.Tensor` of shape `(B, 3, F, 8h, 8w)` (or `(N, 3, 8h, 8w)`), float32 in [0, 1].
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of frames, got {chunk}.")
    if latents.ndim == 5:
        batch_size, channels, num_frames, height, width = latents.shape
        frames = latents.permute(0, 2, 1, 3, 4).reshape(batch_size * num_frames, channels, height, width)
        images = vae_decode(vae, frames, chunk)
        return images.reshape(batch_size, num_frames, *images.shape[1:]).permute(0, 2, 1, 3, 4)
    if latents.ndim != 4:
        raise ValueError(f"latents must have shape (B, 4, F, h, w) or (N, 4, h, w), got {tuple(latents.shape)}.")
    # Multiply by the reciprocal, as the official pipeline does (bit-identical to it, unlike a division).
    scaled = latents.to(device=vae.device, dtype=vae.dtype) * (1 / _scaling_factor(vae))
    images = [vae.decode(part).sample.float() for part in scaled.split(chunk)]
    return (torch.cat(images) / 2 + 0.5).clamp(0, 1)
