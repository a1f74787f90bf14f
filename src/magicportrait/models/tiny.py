"""Tiny random-weight stand-ins for the official release, for tests, smoke runs and benchmarks.

:func:`write_tiny_release` writes a folder in the layout of the Hugging Face release (``ckpts/``,
``stable-diffusion-v1-5/`` with ``unet/config.json``, ``text_encoder/`` and ``tokenizer/``, ``sd-vae-ft-mse/``) whose
models have the SD-1.5 *structure* but tiny widths, so that the whole loading and generation path runs in seconds on
a CPU. Nothing is downloaded; every weight is drawn from a seeded generator (so two calls give identical files).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from magicportrait.models.release import SD15_UNET_CONFIG
from magicportrait.types import GUIDANCE_NAMES

__all__ = ["TINY_UNET_CONFIG", "randomize_", "write_tiny_release", "write_tiny_tokenizer"]

TINY_UNET_CONFIG: dict = {**SD15_UNET_CONFIG, "block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32,
                          "layers_per_block": 1, "sample_size": 8}
"""An SD-1.5-layout UNet2D config shrunk to widths 32/64 (group norms need multiples of 32)."""

TINY_GUIDANCE_ENCODER = {"guidance_embedding_channels": 32, "guidance_input_channels": 3,
                         "block_out_channels": [16, 32, 32, 64]}
TINY_VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "norm_num_groups": 32,
                   "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1,
                   "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
TINY_TEXT_WIDTH = 32


def randomize_(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Re-draw every parameter (zero-initialised ones included, so each path matters): matrices and convolutions
    N(0, 1/sqrt(fan_in)), norm scales 1 + N(0, 0.1), biases N(0, 0.05). Buffers are kept."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            if parameter.ndim >= 2:
                values = noise / math.sqrt(parameter[0].numel())
            elif "norm" in name and name.endswith("weight"):
                values = 1.0 + 0.1 * noise
            else:
                values = 0.05 * noise
            parameter.copy_(values.to(parameter.dtype))
    return module


def write_tiny_tokenizer(directory: Path) -> Path:
    """A CLIP BPE tokenizer with the byte alphabet only (every character is its own token; no merges)."""
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    directory.mkdir(parents=True, exist_ok=True)
    characters = list(bytes_to_unicode().values())
    vocabulary = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocabulary)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(directory))
    return directory


def write_tiny_release(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random release (official file layout) into ``directory``; returns it."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.unet_3d import UNet3DConditionModel

    root = Path(directory)
    generator = torch.Generator().manual_seed(seed)
    ckpts, sd15, vae_dir = root / "ckpts", root / "stable-diffusion-v1-5", root / "sd-vae-ft-mse"
    for folder in (ckpts, sd15 / "unet"):
        folder.mkdir(parents=True, exist_ok=True)
    (sd15 / "unet" / "config.json").write_text(json.dumps(TINY_UNET_CONFIG, indent=2))

    denoising = randomize_(UNet3DConditionModel.from_unet2d_config(dict(TINY_UNET_CONFIG)), generator)
    state = denoising.state_dict()
    torch.save({k: v for k, v in state.items() if "motion_modules." not in k}, ckpts / "denoising_unet.pth")
    torch.save({k: v for k, v in state.items() if "motion_modules." in k}, ckpts / "motion_module.pth")
    reference = randomize_(ReferenceUNet2DConditionModel.from_unet2d_config(dict(TINY_UNET_CONFIG)), generator)
    torch.save(reference.state_dict(), ckpts / "reference_unet.pth")
    for name in GUIDANCE_NAMES:
        encoder = randomize_(GuidanceEncoder(**TINY_GUIDANCE_ENCODER), generator)
        torch.save(encoder.state_dict(), ckpts / f"guidance_encoder_{name}.pth")

    vae = randomize_(AutoencoderKL(**TINY_VAE_CONFIG), generator)
    with torch.no_grad():  # keep the random decoder's output mostly inside [-1, 1]
        vae.decoder.conv_out.weight.mul_(0.3)
    vae.save_pretrained(str(vae_dir), safe_serialization=True)

    text_config = CLIPTextConfig(vocab_size=514, hidden_size=TINY_TEXT_WIDTH, intermediate_size=37,
                                 num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                 bos_token_id=512, eos_token_id=513, pad_token_id=513)
    torch.manual_seed(seed)
    CLIPTextModel(text_config).save_pretrained(str(sd15 / "text_encoder"), safe_serialization=True)
    write_tiny_tokenizer(sd15 / "tokenizer")
    return root
