"""Check a release folder file by file without loading its weights: every tensor's name and shape against the
models our code builds from the folder's own configs (the official state-dict layout), read from the files'
headers (safetensors) or memory-mapped (torch pickles), so a 3 GB UNet costs no memory.

:func:`check_release` gives one :class:`FileCheck` per file: ok, missing, unreadable, wrong keys or wrong shapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from magicportrait.errors import CheckpointError
from magicportrait.types import GUIDANCE_NAMES

__all__ = ["FileCheck", "check_release", "stored_shapes"]

Shapes = dict[str, tuple[int, ...]]
MOTION_KEY = "motion_modules."
TEXT_ENCODER_FILES = ("model.safetensors", "pytorch_model.bin")
VAE_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
LISTED = 5  # keys named in a report line


@dataclass(frozen=True)
class FileCheck:
    """One file of a release: ``status`` is "ok", "missing", "unreadable", "wrong keys" or "wrong shapes"."""

    path: Path
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def stored_shapes(path: str | Path) -> Shapes:
    """Tensor name -> shape of a checkpoint file, without reading its tensors' data."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
        except Exception as error:  # SafetensorError, OSError
            raise CheckpointError(f"{path}: not a readable safetensors file ({error}).") from None
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # not a zip archive (legacy format), truncated, refused globals
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(error).splitlines()[0]}).") from None
    if isinstance(contents, dict) and isinstance(contents.get("state_dict"), dict):
        contents = contents["state_dict"]
    if not isinstance(contents, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(contents).__name__}.")
    return {str(key): tuple(value.shape) for key, value in contents.items() if isinstance(value, torch.Tensor)}


def _model_shapes(build: Callable[[], torch.nn.Module]) -> Shapes:
    """The state dict's shapes of the module ``build`` makes, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = build()
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def compare(path: Path, expected: Shapes, select: Callable[[str], bool] = lambda key: True) -> FileCheck:
    """``path``'s tensors (those ``select`` keeps) against ``expected``."""
    if not path.is_file():
        return FileCheck(path, "missing")
    try:
        stored = {key: shape for key, shape in stored_shapes(path).items() if select(key)}
    except CheckpointError as error:
        return FileCheck(path, "unreadable", str(error))
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        parts = [f"{len(missing)} missing ({_names(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_names(unexpected)})" if unexpected else ""]
        return FileCheck(path, "wrong keys", "; ".join(part for part in parts if part))
    misshaped = [f"{key} {stored[key]} instead of {expected[key]}" for key in sorted(expected)
                 if stored[key] != expected[key]]
    if misshaped:
        return FileCheck(path, "wrong shapes", f"{len(misshaped)}: {'; '.join(misshaped[:LISTED])}")
    return FileCheck(path, "ok", f"{len(stored)} tensors")


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:LISTED]) + (", ..." if len(keys) > LISTED else "")


def check_release(root: str | Path, motion_module: str | Path | None = None) -> list[FileCheck]:
    """Check the release folder ``root`` (``ckpts/``, ``stable-diffusion-v1-5/``, ``sd-vae-ft-mse/``), with
    ``motion_module`` instead of the release's own when given."""
    root = Path(root)
    ckpts, sd15, vae = root / "ckpts", root / "stable-diffusion-v1-5", root / "sd-vae-ft-mse"
    config_path = sd15 / "unet" / "config.json"
    try:
        unet_config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        status = "missing" if not config_path.is_file() else "unreadable"
        return [FileCheck(config_path, status, f"the UNet's structure is read from it ({error})")]
    checks = [FileCheck(config_path, "ok")]
    checks += _unet_checks(ckpts, unet_config, motion_module)
    checks += _guidance_checks(ckpts, int(unet_config["block_out_channels"][0]))
    checks.append(_folder_model_check(sd15 / "text_encoder", TEXT_ENCODER_FILES, _text_encoder))
    checks += [FileCheck(sd15 / "tokenizer" / name, "ok" if (sd15 / "tokenizer" / name).is_file() else "missing")
               for name in TOKENIZER_FILES]
    checks.append(_folder_model_check(vae, VAE_FILES, _vae))
    return checks


def _unet_checks(ckpts: Path, unet_config: dict, motion_module: str | Path | None) -> list[FileCheck]:
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.release import OFFICIAL_MOTION_MODULE_KWARGS
    from magicportrait.models.unet_3d import UNet3DConditionModel

    denoising = _model_shapes(lambda: UNet3DConditionModel.from_unet2d_config(
        dict(unet_config), motion_module_kwargs=dict(OFFICIAL_MOTION_MODULE_KWARGS)))
    reference = _model_shapes(lambda: ReferenceUNet2DConditionModel.from_unet2d_config(dict(unet_config)))
    motion_path = Path(motion_module) if motion_module else _motion_file(ckpts)
    return [
        compare(ckpts / "denoising_unet.pth", {k: v for k, v in denoising.items() if MOTION_KEY not in k}),
        compare(motion_path, {k: v for k, v in denoising.items() if MOTION_KEY in k}),
        compare(ckpts / "reference_unet.pth", reference),
    ]


def _motion_file(ckpts: Path) -> Path:
    found = sorted(ckpts.glob("motion_module*.pth"))
    return found[0] if found else ckpts / "motion_module.pth"


def _guidance_checks(ckpts: Path, width: int) -> list[FileCheck]:
    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.release import guidance_widths

    checks = []
    for name in GUIDANCE_NAMES:
        path = ckpts / f"guidance_encoder_{name}.pth"
        if not path.is_file():
            checks.append(FileCheck(path, "missing"))
            continue
        try:
            shapes = stored_shapes(path)
        except CheckpointError as error:
            checks.append(FileCheck(path, "unreadable", str(error)))
            continue
        try:  # the stage widths are the file's own (the loader reads them the same way)
            blocks = guidance_widths(shapes, path)
        except CheckpointError as error:
            checks.append(FileCheck(path, "wrong keys", str(error)))
            continue
        expected = _model_shapes(lambda blocks=blocks: GuidanceEncoder(
            guidance_embedding_channels=width, guidance_input_channels=3, block_out_channels=blocks))
        checks.append(compare(path, expected))
    return checks


def _folder_model_check(folder: Path, names: tuple[str, ...], build: Callable[[dict], torch.nn.Module]) -> FileCheck:
    """A diffusers / transformers model folder: ``config.json`` and the first of ``names`` present."""
    config_path = folder / "config.json"
    weights = next((folder / name for name in names if (folder / name).is_file()), folder / names[0])
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return FileCheck(config_path, "missing" if not config_path.is_file() else "unreadable")
    return compare(weights, _model_shapes(lambda: build(config)),
                   select=lambda key: not key.endswith("position_ids"))  # a buffer older files keep


def _text_encoder(config: dict) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**config))


def _vae(config: dict) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(config)
