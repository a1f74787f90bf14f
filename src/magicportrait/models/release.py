"""Find and load the official MagicPortrait release (strictly: every key accounted for).

The release is three user-supplied folders (nothing is downloaded at run time):

- the MagicPortrait checkpoints ``ckpts/``: ``denoising_unet.pth``, ``reference_unet.pth``,
  ``guidance_encoder_{depth,normal,render}.pth`` and ``motion_module*.pth``;
- Stable Diffusion 1.5 in diffusers format: ``unet/config.json`` (its weights are not needed: the checkpoints
  replace every tensor), ``text_encoder/`` and ``tokenizer/``;
- the VAE ``sd-vae-ft-mse`` in diffusers format.

``magicportrait weights download --dir pretrained`` (:mod:`magicportrait.models.download`) gives
all three as ``pretrained/{ckpts,stable-diffusion-v1-5,sd-vae-ft-mse}``; pass ``pretrained`` as the weights folder
and the other two are found inside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from magicportrait.errors import CheckpointError
from magicportrait.io.assets import GET_WEIGHTS, MOTION_MODULE, SD15, VAE, WEIGHTS, resolve_asset
from magicportrait.types import GUIDANCE_NAMES

__all__ = ["DEFAULT_PROMPT", "OFFICIAL_MOTION_MODULE_KWARGS", "ReleasePaths", "SD15_UNET_CONFIG", "encode_prompt",
           "is_saved_release", "load_release", "load_saved_release", "resolve_release_paths", "save_release"]

DEFAULT_PROMPT = "A close up of a person."  # the official release's fixed prompt
SD15_UNET_CONFIG: dict = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
"""Stable Diffusion 1.5's ``unet/config.json`` (structure only), for building full-size models without the files."""
OFFICIAL_GUIDANCE_ENCODER = {"guidance_embedding_channels": 320, "guidance_input_channels": 3,
                             "block_out_channels": (16, 32, 96, 256)}
OFFICIAL_MOTION_MODULE_KWARGS = {"num_attention_heads": 8, "num_transformer_block": 1,
                                 "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                                 "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32,
                                 "temporal_attention_dim_div": 1}
"""``unet_additional_kwargs.motion_module_kwargs`` of the official inference config (AnimateDiff v2 layout)."""

SAVED_MARKER = "magicportrait_release.json"  # our own format (safetensors + configs), see save_release
@dataclass(frozen=True)
class ReleasePaths:
    ckpts: Path
    sd15: Path
    vae: Path
    motion_module: Path


def resolve_release_paths(weights: str | os.PathLike | None = None, sd15: str | os.PathLike | None = None,
                          vae: str | os.PathLike | None = None,
                          motion_module: str | os.PathLike | None = None) -> ReleasePaths:
    """Locate the release's files; raise one :class:`CheckpointError` listing everything that is missing."""
    from magicportrait.models.checkpoints import find_official_checkpoints

    root = resolve_asset(WEIGHTS, weights)
    if root is None:
        raise CheckpointError(f"No diffusion weights given. MagicPortrait's generator needs the released "
                              f"checkpoints, Stable Diffusion 1.5 and sd-vae-ft-mse. {GET_WEIGHTS}")
    ckpts = root / "ckpts" if (root / "ckpts").is_dir() else root
    sd15_dir = resolve_asset(SD15, sd15) or _first_dir(root, "stable-diffusion-v1-5", "sd15", "sd-v1-5")
    vae_dir = resolve_asset(VAE, vae) or _first_dir(root, "sd-vae-ft-mse", "vae")
    problems = []
    try:
        found = find_official_checkpoints(ckpts)
    except CheckpointError as error:
        problems.append(str(error))
        found = {}
    if sd15_dir is None or not (sd15_dir / "unet" / "config.json").is_file():
        problems.append(f"Stable Diffusion 1.5 folder with unet/config.json, text_encoder/ and tokenizer/ not found "
                        f"(looked for {sd15_dir or root / 'stable-diffusion-v1-5'}; pass --sd15 DIR).")
    else:
        problems += [f"{sd15_dir / sub} is missing." for sub in ("text_encoder", "tokenizer")
                     if not (sd15_dir / sub).is_dir()]
    if vae_dir is None or not (vae_dir / "config.json").is_file():
        problems.append(f"VAE folder sd-vae-ft-mse with config.json not found "
                        f"(looked for {vae_dir or root / 'sd-vae-ft-mse'}; pass --vae DIR).")
    try:
        motion = resolve_asset(MOTION_MODULE, motion_module) or found.get("motion_module")
    except CheckpointError as error:
        problems.append(str(error))
        motion = None
    if problems:
        raise CheckpointError("The diffusion weights are incomplete:\n  - " + "\n  - ".join(problems) +
                              f"\n{GET_WEIGHTS}")
    return ReleasePaths(ckpts=ckpts, sd15=sd15_dir, vae=vae_dir, motion_module=motion)


def _first_dir(root: Path, *names: str) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


def encode_prompt(sd15: Path, prompt: str = DEFAULT_PROMPT, device: str | torch.device = "cpu") -> torch.Tensor:
    """`(1, 77, D)` CLIP text embedding (last hidden state) of ``prompt``, as the official release computes it."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(sd15 / "tokenizer"), local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(str(sd15 / "text_encoder"), local_files_only=True).to(device).eval()
    length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)  # 77 for CLIP
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids.to(device))[0].float()


def load_release(paths: ReleasePaths, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 prompt: str = DEFAULT_PROMPT) -> dict:
    """Build every model of the release and load its weights strictly. Returns the pipeline's components:
    ``vae``, ``reference_unet``, ``denoising_unet``, ``guidance_encoders`` (depth/normal/render) and
    ``text_embeddings``."""
    from diffusers import AutoencoderKL

    from magicportrait.models.checkpoints import (
        load_strict,
        merge_motion_modules,
        read_motion_modules,
        read_state_dict,
    )
    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.unet_3d import UNet3DConditionModel

    config_path = paths.sd15 / "unet" / "config.json"
    try:
        unet_config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_path}: not a readable JSON config ({error}).") from None
    # Built on the meta device (no random weights allocated), then the checkpoints' tensors become the parameters
    # (cast to ``dtype`` one tensor at a time): the weights are in memory once. The denoising UNet's are read, not
    # memory-mapped: mapped, they ran the UNet 1.2x slower (the first touch of every page, and no huge pages). The
    # reference UNet runs once per video: its weights stay memory-mapped, and the generator drops their pages after
    # the reference pass (``runtime.release_mapped_pages``), so they are not in RAM during the denoising loop.
    with torch.device("meta"):
        denoising = UNet3DConditionModel.from_unet2d_config(dict(unet_config),
                                                            motion_module_kwargs=dict(OFFICIAL_MOTION_MODULE_KWARGS))
        reference = ReferenceUNet2DConditionModel.from_unet2d_config(dict(unet_config))
    merged = merge_motion_modules(read_state_dict(paths.ckpts / "denoising_unet.pth"),
                                  read_motion_modules(paths.motion_module), source=str(paths.motion_module))
    load_strict(denoising, merged, f"{paths.ckpts / 'denoising_unet.pth'} + {paths.motion_module}", assign=True,
                dtype=dtype)
    del merged
    load_strict(reference, read_state_dict(paths.ckpts / "reference_unet.pth", mmap=True),
                str(paths.ckpts / "reference_unet.pth"), assign=True, dtype=dtype)
    width = int(unet_config["block_out_channels"][0])
    encoders = {}
    for name in GUIDANCE_NAMES:
        path = paths.ckpts / f"guidance_encoder_{name}.pth"
        state = read_state_dict(path)
        blocks = guidance_widths({key: value.shape for key, value in state.items()}, path)
        encoders[name] = GuidanceEncoder(guidance_embedding_channels=width, guidance_input_channels=3,
                                         block_out_channels=blocks)
        load_strict(encoders[name], state, str(path))
    vae = AutoencoderKL.from_pretrained(str(paths.vae), local_files_only=True)
    text = encode_prompt(paths.sd15, prompt)
    components = {"vae": vae, "reference_unet": reference, "denoising_unet": denoising,
                  "guidance_encoders": encoders}
    for module in [vae, reference, denoising, *encoders.values()]:
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    components["text_embeddings"] = text.to(device=device, dtype=dtype)
    return components


def guidance_widths(shapes: Mapping[str, Sequence[int]], path: Path) -> tuple[int, ...]:
    """A guidance encoder's stage widths from its checkpoint's tensor shapes (the official release: 16, 32, 96,
    256): conv_in's output, then the strided blocks' outputs."""
    try:
        first = int(shapes["conv_in.weight"][0])
        widths = [int(shapes[f"blocks.{i}.weight"][0]) for i in (1, 3, 5)]
    except KeyError as missing:
        raise CheckpointError(f"{path}: not a guidance-encoder checkpoint (no {missing}).") from None
    return (first, *widths)


def save_release(components: dict, directory: str | os.PathLike, prompt: str = DEFAULT_PROMPT) -> Path:
    """Write loaded components in our own format: one ``<name>.safetensors`` + ``<name>.json`` (config) per
    network, the VAE as a diffusers folder, and the prompt's text embedding (so CLIP is not needed to load it)."""
    from safetensors.torch import save_file

    from magicportrait.io.atomic import staged_output_dir
    from magicportrait.models.checkpoints import save_model

    with staged_output_dir(directory) as stage:
        save_model(components["denoising_unet"], stage, "denoising_unet")
        save_model(components["reference_unet"], stage, "reference_unet")
        for name, encoder in components["guidance_encoders"].items():
            save_model(encoder, stage, f"guidance_encoder_{name}")
        components["vae"].save_pretrained(str(stage / "vae"), safe_serialization=True)
        save_file({"text_embeddings": components["text_embeddings"].detach().float().cpu().contiguous()},
                  str(stage / "text_embeddings.safetensors"))
        (stage / SAVED_MARKER).write_text(json.dumps(
            {"format": "magicportrait", "version": 1, "prompt": prompt,
             "guidance": sorted(components["guidance_encoders"])}, indent=2))
    return Path(directory)


def is_saved_release(directory: str | os.PathLike | None) -> bool:
    return directory is not None and (Path(directory) / SAVED_MARKER).is_file()


def load_saved_release(directory: str | os.PathLike, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> dict:
    """Load a folder written by :func:`save_release` (strictly), as :func:`load_release` returns it."""
    from diffusers import AutoencoderKL

    from magicportrait.models.checkpoints import load_model, read_state_dict
    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.unet_3d import UNet3DConditionModel

    directory = Path(directory)
    meta = json.loads((directory / SAVED_MARKER).read_text())
    components = {
        "denoising_unet": load_model(UNet3DConditionModel, directory, "denoising_unet"),
        "reference_unet": load_model(ReferenceUNet2DConditionModel, directory, "reference_unet"),
        "guidance_encoders": {name: load_model(GuidanceEncoder, directory, f"guidance_encoder_{name}")
                              for name in meta["guidance"]},
        "vae": AutoencoderKL.from_pretrained(str(directory / "vae"), local_files_only=True),
    }
    for module in [components["vae"], components["reference_unet"], components["denoising_unet"],
                   *components["guidance_encoders"].values()]:
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    text = read_state_dict(directory / "text_embeddings.safetensors")["text_embeddings"]
    components["text_embeddings"] = text.to(device=device, dtype=dtype)
    return components
