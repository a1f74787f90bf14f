"""The diffusion generator's models (diffusers style: one model per file, config-registered constructors).

Names are imported lazily, on first use: importing `magicportrait.models` does not import diffusers, and a
model file that is absent or broken only fails when one of its names is used.
"""

from __future__ import annotations

from magicportrait._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "GenerationConfig": "generation",
    "GenerationPipeline": "generation",
    "GuidanceEncoder": "guidance_encoder",
    "UNet3DConditionModel": "unet_3d",
    "ReferenceUNet2DConditionModel": "reference_unet",
    "ReferenceFusion": "reference_attention",
    "OFFICIAL_FILES": "checkpoints",
    "find_official_checkpoints": "checkpoints",
    "load_model": "checkpoints",
    "load_strict": "checkpoints",
    "merge_motion_modules": "checkpoints",
    "position_encoding_length": "checkpoints",
    "read_motion_modules": "checkpoints",
    "read_state_dict": "checkpoints",
    "save_model": "checkpoints",
    "vae_decode": "vae",
    "vae_encode_mean": "vae",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
