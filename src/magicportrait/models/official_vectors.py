"""The official MagicPortrait test vectors (``official-tiny``: tiny random models in the official checkpoint files,
fixed inputs and every intermediate of the official pipeline's call): loaded, run through our pipeline, compared.

Used by the test suite (on the CPU) and by ``benchmarks/gpu_check.py`` (the same comparison on a GPU). The vectors
are not part of this project: point ``folder`` at ``official-tiny`` (``../shared/vectors/official-tiny`` beside a
checkout).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from magicportrait.models.generation import GenerationConfig, GenerationPipeline

TOLERANCES = {"unet_out": 1e-4, "v_cfg": 5e-4, "latents_out": 5e-4, "final_latents": 5e-4, "video": 1.5e-4}
"""rel-L2 tolerance per intermediate (by name suffix) against the official pipeline's outputs."""


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double().cpu()
    return float((actual.double().cpu() - expected).norm() / expected.norm())


def load_official_pipeline(folder: Path) -> dict:
    """The tiny official models loaded strictly from the vectors' checkpoints, and the vectors' inputs."""
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    from magicportrait.models.checkpoints import read_state_dict
    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.unet_3d import UNet3DConditionModel

    config = json.loads((folder / "config.json").read_text())
    unet_config = json.loads((folder / "base_model" / "unet" / "config.json").read_text())
    ckpts = folder / "ckpts"
    denoising = UNet3DConditionModel.from_unet2d_config(unet_config, **config["unet_additional_kwargs"])
    denoising.load_state_dict({**read_state_dict(ckpts / "denoising_unet.pth"),
                               **read_state_dict(ckpts / "motion_module.pth")}, strict=True)
    reference = ReferenceUNet2DConditionModel.from_unet2d_config(unet_config)
    reference.load_state_dict(read_state_dict(ckpts / "reference_unet.pth"), strict=True)
    encoder_kwargs = {key: config["guidance_encoder_kwargs"][key]
                      for key in ("guidance_embedding_channels", "guidance_input_channels", "block_out_channels")}
    encoders = {}
    for name in config["guidance_types"]:
        encoders[name] = GuidanceEncoder(**encoder_kwargs)
        encoders[name].load_state_dict(read_state_dict(ckpts / f"guidance_encoder_{name}.pth"), strict=True)
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"), local_files_only=True, low_cpu_mem_usage=False)
    inputs = load_file(str(folder / "inputs.safetensors"))
    pipe = GenerationPipeline(vae, reference, denoising, encoders, inputs["text_embeds"])
    # The uint8 images the official run started from (the vectors' README, section 3).
    reference_image = ((inputs["ref_image"][0] + 1) / 2 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    guidance = {name: (inputs[f"guidance_{name}"][0] * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
                for name in config["guidance_types"]}
    return {"pipe": pipe, "inputs": inputs, "reference_image": reference_image, "guidance": guidance,
            "expected": load_file(str(folder / "expected_d_pipeline.safetensors"))}


def run_official_call(official: dict, device: str = "cpu", dtype: str = "fp32",
                      noise_device: str = "cpu") -> dict[str, torch.Tensor]:
    """The vectors' pipeline call (128x64, 14 frames, 3 steps, CFG 3.5, eta 0, seed 42), every intermediate kept.
    The official noise was drawn on the CPU: ``noise_device`` cpu reproduces it on any device."""
    pipe = official["pipe"]
    captured: dict[str, torch.Tensor] = {}

    def on_window(step: int, window: int, context, output: torch.Tensor) -> None:
        captured[f"step{step}_window{window}_unet_out"] = output.detach().cpu().clone()

    def on_step_end(step: int, timestep: int, tensors) -> None:
        captured[f"step{step}_v_cfg"] = tensors["velocity"].cpu().clone()
        captured[f"step{step}_latents_out"] = tensors["latents"].cpu().clone()

    config = GenerationConfig(steps=3, guidance_scale=3.5, seed=42, show_progress=False, device=device, dtype=dtype,
                              noise_device=noise_device)
    captured["final_latents"] = pipe.generate_latents(official["reference_image"], official["guidance"], config,
                                                      callback_on_window=on_window,
                                                      callback_on_step_end=on_step_end).cpu()
    decoded = torch.cat(list(pipe.decode_latents(captured["final_latents"].to(device), chunk=1)))  # (F, 3, H, W)
    captured["video"] = decoded.permute(1, 0, 2, 3).unsqueeze(0)
    return captured


def compare(captured: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per intermediate: rel-L2 against the official value, its tolerance, and whether it passes."""
    report = {}
    for key, value in captured.items():
        tolerance = next(limit for suffix, limit in TOLERANCES.items() if key.endswith(suffix))
        error = rel_l2(value, expected[key]) if value.shape == expected[key].shape else float("inf")
        report[key] = {"rel_l2": error, "tolerance": tolerance, "passed": bool(np.isfinite(error) and
                                                                              error < tolerance)}
    return report
