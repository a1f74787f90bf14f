"""The one place that resolves user-supplied asset paths (FLAME, its texture space, the diffusion weights, the
DECA and SMIRK encoders).

Each asset comes from a flag (or a config field; same thing), else from its environment variable, else (the
diffusion weights only) from an earlier ``magicportrait weights download`` into the Hugging Face cache, else it is
not configured. A path that is given but missing is an error that says where the path came from and what to do.
Nothing here downloads anything (the cache is looked up offline).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from magicportrait.errors import CheckpointError, InputError

logger = logging.getLogger(__name__)

__all__ = ["ASSETS", "Asset", "DECA", "FLAME", "FLAME_EYELIDS", "FLAME_TEXTURE", "MOTION_MODULE", "RELEASE_REPO",
           "SD15", "SMIRK", "VAE", "WEIGHTS", "asset_value", "cached_release", "resolve_asset"]


@dataclass(frozen=True)
class Asset:
    """A user-supplied file or folder: its name in messages, flag, environment variable and where to get it."""

    what: str
    flag: str
    env: str
    is_dir: bool
    hint: str
    error: type[InputError] = InputError


RELEASE_REPO = "mengtingwei/MagicPortrait"  # the official release on the Hugging Face hub
FROM_CACHE = "found in the Hugging Face cache (magicportrait weights download)"
GET_WEIGHTS = ("Get them with `magicportrait weights download` (or, on a machine with internet, `magicportrait "
               "weights download --dir pretrained`, copy `pretrained/` here and pass `--weights pretrained` or set "
               "$MAGICPORTRAIT_WEIGHTS). See the README, 'Weights'.")

FLAME = Asset("FLAME model file", "--flame", "MAGICPORTRAIT_FLAME", False,
              "Point to the file you downloaded (see the README, 'FLAME'), or unset it to use the open face geometry.")
FLAME_TEXTURE = Asset("FLAME texture space file", "--flame-texture", "MAGICPORTRAIT_FLAME_TEXTURE", False,
                      "Download FLAME_texture.npz from https://flame.is.tue.mpg.de and pass its path, or unset it to "
                      "estimate the albedo from the portrait.")
FLAME_EYELIDS = Asset("FLAME eyelid blend shapes folder", "--flame-eyelids", "MAGICPORTRAIT_FLAME_EYELIDS", True,
                      "Pass the folder holding l_eyelid.npy and r_eyelid.npy (SMIRK's assets/ folder, from "
                      "https://github.com/georgeretsi/smirk), or unset it to render FLAME without eyelid closing.")
WEIGHTS = Asset("diffusion weights folder", "--weights", "MAGICPORTRAIT_WEIGHTS", True, GET_WEIGHTS, CheckpointError)
SD15 = Asset("Stable Diffusion 1.5 folder", "--sd15", "MAGICPORTRAIT_SD15", True,
             "Pass the diffusers-format folder with unet/config.json, text_encoder/ and tokenizer/.", CheckpointError)
VAE = Asset("sd-vae-ft-mse folder", "--vae", "MAGICPORTRAIT_VAE", True,
            "Pass the diffusers-format folder with config.json.", CheckpointError)
MOTION_MODULE = Asset("motion module file", "--motion-module", "MAGICPORTRAIT_MOTION_MODULE", False,
                      "Pass a motion-module checkpoint (e.g. AnimateDiff's mm_sd_v15_v2.ckpt).", CheckpointError)
DECA = Asset("DECA weights file", "--deca-weights", "MAGICPORTRAIT_DECA", False,
             "Download deca_model.tar from the DECA release (https://github.com/yfeng95/DECA, 'Usage') and pass its "
             "path.", CheckpointError)
SMIRK = Asset("SMIRK weights file", "--smirk-weights", "MAGICPORTRAIT_SMIRK", False,
              "Download SMIRK_em1.pt from the SMIRK release (https://github.com/georgeretsi/smirk) and pass its path.",
              CheckpointError)
ASSETS = (FLAME, FLAME_TEXTURE, FLAME_EYELIDS, WEIGHTS, SD15, VAE, MOTION_MODULE, DECA, SMIRK)


def asset_value(asset: Asset, value: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The configured path (given, else the environment's; not checked) and where it came from."""
    if value:
        return Path(value).expanduser(), f"given with {asset.flag}"
    from_env = os.environ.get(asset.env) or None
    if from_env:
        return Path(from_env).expanduser(), f"named by ${asset.env}"
    if asset is WEIGHTS:
        cached = cached_release()
        if cached is not None:
            return cached, FROM_CACHE
    return None, ""


def cached_release() -> Path | None:
    """The official release downloaded into the Hugging Face cache earlier, looked up offline; None if absent."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(RELEASE_REPO, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError (not downloaded), a damaged cache: not configured
        return None
    return path if (path / "ckpts").is_dir() else None


def resolve_asset(asset: Asset, value: str | os.PathLike | None) -> Path | None:
    """The asset's path (given, else ``$ENV``), checked to exist; None when neither is set."""
    path, origin = asset_value(asset, value)
    if path is None:
        return None
    if path.is_dir() if asset.is_dir else path.is_file():
        if origin == FROM_CACHE:
            logger.info("Using the %s %s: %s", asset.what, origin, path)
        return path
    problem = "does not exist" if not path.exists() else f"is not a {'folder' if asset.is_dir else 'file'}"
    raise asset.error(f"The {asset.what} {origin} {problem}: {path}. {asset.hint}")
