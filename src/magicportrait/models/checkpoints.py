"""Checkpoint I/O that never fails silently.

- :func:`read_state_dict` reads `.pth/.pt/.ckpt/.bin` (only tensors: `torch.load(weights_only=True)`) and
  `.safetensors` files.
- :func:`load_strict` loads a state dict and raises one :class:`CheckpointError` naming the file and every
  missing, unexpected and mis-shaped key (the official code loads with `strict=False`, so a wrong file silently
  leaves random or zero weights).
- The official release's layout (:data:`OFFICIAL_FILES`, :func:`find_official_checkpoints`) and its motion
  modules (:func:`read_motion_modules`, :func:`merge_motion_modules`; AnimateDiff's `mm_sd_v15_v2.ckpt` uses the
  same key names).
- Our own format (:func:`save_model`, :func:`load_model`): `<name>.safetensors` + `<name>.json`, the model's
  diffusers config.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from magicportrait.errors import CheckpointError

__all__ = ["MOTION_MODULE_KEY", "OFFICIAL_FILES", "OFFICIAL_SOURCE", "find_official_checkpoints", "load_model",
           "load_strict", "merge_motion_modules", "position_encoding_length", "read_motion_modules",
           "read_state_dict", "save_model"]

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
MAX_LISTED_KEYS = 10
MOTION_MODULE_KEY = "motion_modules."

OFFICIAL_FILES: dict[str, str] = {
    "denoising_unet": "denoising_unet.pth",
    "reference_unet": "reference_unet.pth",
    "guidance_encoder_depth": "guidance_encoder_depth.pth",
    "guidance_encoder_normal": "guidance_encoder_normal.pth",
    "guidance_encoder_render": "guidance_encoder_render.pth",
    "motion_module": "motion_module*.pth",  # the release ships motion_module-47360.pth
}
"""The official release's checkpoint files (name or glob pattern), by role."""

OFFICIAL_SOURCE = (
    "Get them with `magicportrait weights download --dir pretrained` (the Hugging Face repository "
    "mengtingwei/MagicPortrait, folder ckpts/), then check them with `magicportrait weights check pretrained`."
)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_state_dict(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict (on the CPU) from `.safetensors` or a torch pickle (`.pth/.pt/.ckpt/.bin`); with ``mmap``
    a pickle's tensors stay in the file (memory-mapped, read as they are used: no copy of the weights in memory).

    Pickles are read with `weights_only=True`: a file holding anything but tensors and plain containers is refused
    rather than executed. A top-level `"state_dict"` entry (Lightning / AnimateDiff checkpoints) is unwrapped, and
    non-tensor metadata beside the tensors (such as `"global_step"`) is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} does not exist.")
    if path.suffix == SAFETENSORS_SUFFIX:
        contents = _read_safetensors(path)
    elif path.suffix in PICKLE_SUFFIXES:
        contents = _read_pickle(path, mmap)
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint format {path.suffix!r}; expected {SAFETENSORS_SUFFIX} or one of "
            f"{', '.join(PICKLE_SUFFIXES)}."
        )
    return _tensors_only(contents, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError, and OSError
        raise CheckpointError(f"{path}: not a readable safetensors file ({error}).") from error


def _read_pickle(path: Path, mmap: bool = False) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        raise CheckpointError(
            f"{path}: refused to load: the file contains Python objects other than tensors"
            f"{f' ({found.group(1)})' if found else ''}, and loading them could run arbitrary code (torch.load "
            f"weights_only=True). Use the original checkpoint, or, if you trust this file, re-save its tensors alone "
            f"(a dict of tensors, or .safetensors)."
        ) from error
    except Exception as error:  # truncated / corrupt archives raise RuntimeError, EOFError, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(error)}).") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _tensors_only(contents: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(contents, Mapping) and isinstance(contents.get("state_dict"), Mapping):
        contents = contents["state_dict"]
    if not isinstance(contents, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(contents).__name__}.")
    tensors = {str(key): value for key, value in contents.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: contains no tensors (keys: {_listing(map(str, contents))}).")
    return tensors


# ----------------------------------------------------------------------------------------------------------------
# Strict loading


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    ignore_missing_prefixes: Iterable[str] = (),
    assign: bool = False,
    dtype: torch.dtype | None = None,
) -> None:
    """Load `state_dict` into `module`, requiring an exact match of names and shapes.

    With ``assign`` the tensors become the module's parameters (cast to ``dtype`` one at a time) instead of being
    copied into them: a module built on the meta device then costs no memory of its own.

    Args:
        module: the model to fill (its parameters and persistent buffers).
        state_dict: the tensors to load.
        source: what the tensors came from (a file name), for the error message.
        ignore_missing_prefixes: model keys starting with one of these may be absent from `state_dict` (they keep
            their current values).

    Raises:
        CheckpointError: naming `source` and listing the missing, unexpected and mis-shaped keys.
    """
    prefixes = tuple(ignore_missing_prefixes)
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict and not key.startswith(prefixes)]
    unexpected = [key for key in state_dict if key not in expected]
    misshaped = [
        f"{key} (file {list(state_dict[key].shape)}, model {list(expected[key].shape)})"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    if missing or unexpected or misshaped:
        raise CheckpointError(_mismatch_message(module, source, missing, unexpected, misshaped))
    if not assign:
        module.load_state_dict(dict(state_dict), strict=False)
        return
    if prefixes:
        raise ValueError("load_strict: assign=True needs every key (no ignore_missing_prefixes).")
    cast = {key: value.to(dtype) if dtype is not None and value.is_floating_point() else value
            for key, value in state_dict.items()}
    module.load_state_dict(cast, strict=True, assign=True)


def _mismatch_message(module: nn.Module, source: str, missing: list, unexpected: list, misshaped: list) -> str:
    lines = [f"{source} does not match {type(module).__name__}:"]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            lines.append(f"  {len(keys)} {label} key{'s' if len(keys) != 1 else ''}: {_listing(keys)}")
    lines.append(
        "Check that this is the right file for this model and that the model is built with the configuration the "
        "checkpoint was trained with."
    )
    return "\n".join(lines)


def _listing(keys: Iterable[str], limit: int = MAX_LISTED_KEYS) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# ----------------------------------------------------------------------------------------------------------------
# The official release


def find_official_checkpoints(weights_dir: str | os.PathLike) -> dict[str, Path]:
    """Locate the official checkpoint files, by role (the keys of :data:`OFFICIAL_FILES`).

    `weights_dir` is the release's `ckpts/` folder or a folder containing `ckpts/`. Raises one
    :class:`CheckpointError` listing every missing file and where to get it.
    """
    directory = Path(weights_dir).expanduser()
    if not directory.is_dir():
        raise CheckpointError(f"Checkpoint folder {directory} does not exist. {OFFICIAL_SOURCE}")
    if not (directory / OFFICIAL_FILES["denoising_unet"]).is_file() and (directory / "ckpts").is_dir():
        directory = directory / "ckpts"
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, pattern in OFFICIAL_FILES.items():
        matches = sorted(path for path in directory.glob(pattern) if path.is_file())
        if not matches:
            missing.append(pattern)
        elif len(matches) > 1:
            raise CheckpointError(
                f"{directory} holds several {role} files ({', '.join(path.name for path in matches)}); keep one, "
                f"or pass the one to use explicitly."
            )
        else:
            found[role] = matches[0]
    if missing:
        raise CheckpointError(
            f"Missing MagicPortrait checkpoint file{'s' if len(missing) > 1 else ''} in {directory}: "
            f"{', '.join(missing)}. {OFFICIAL_SOURCE}"
        )
    return found


def read_motion_modules(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a motion-module file: the official `motion_module-*.pth` or AnimateDiff's `mm_sd_v15_v2.ckpt` (same
    key names, e.g. `down_blocks.0.motion_modules.0.temporal_transformer.norm.weight`). Raises if it holds keys
    that are not motion-module keys. See :func:`position_encoding_length` for its temporal window limit."""
    state_dict = read_state_dict(path, mmap)
    _require_motion_keys(state_dict, str(path))
    return state_dict


def position_encoding_length(motion_state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Length of the sinusoidal position-encoding tables (`*.pos_encoder.pe`, shape `(1, L, C)`): the longest
    temporal window the motion modules were built for (32 for AnimateDiff v2 and MagicPortrait, 24 for v1).
    `None` when the file has no such table."""
    lengths = {int(value.shape[1]) for key, value in motion_state_dict.items() if key.endswith("pos_encoder.pe")}
    if len(lengths) > 1:
        raise CheckpointError(f"Motion modules disagree on their position-encoding length: {sorted(lengths)}.")
    return lengths.pop() if lengths else None


def merge_motion_modules(
    state_dict: Mapping[str, torch.Tensor], motion_state_dict: Mapping[str, torch.Tensor], source: str = "motion file"
) -> dict[str, torch.Tensor]:
    """The denoising UNet's full state dict: `state_dict` plus the motion-module tensors (which win on overlap, as
    in the official loader). Raises if `motion_state_dict` holds keys that are not motion-module keys."""
    _require_motion_keys(motion_state_dict, source)
    return {**state_dict, **motion_state_dict}


def _require_motion_keys(motion_state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    foreign = [key for key in motion_state_dict if MOTION_MODULE_KEY not in key]
    if foreign:
        raise CheckpointError(
            f"{source} is not a motion-module file: {len(foreign)} of its {len(motion_state_dict)} keys are not "
            f"motion-module keys (containing {MOTION_MODULE_KEY!r}): {_listing(foreign)}."
        )


# ----------------------------------------------------------------------------------------------------------------
# Our own format: <name>.safetensors + <name>.json


def save_model(module: nn.Module, directory: str | os.PathLike, name: str) -> Path:
    """Write `module`'s tensors to `<directory>/<name>.safetensors` and its diffusers config (a
    `ConfigMixin` model) to `<directory>/<name>.json`. Returns the safetensors path."""
    from safetensors.torch import save_file

    from magicportrait.io.atomic import atomic_path

    if not hasattr(module, "to_json_string"):
        raise TypeError(f"{type(module).__name__} has no diffusers config (it is not a ConfigMixin).")
    directory = Path(directory)
    weights_path, config_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    tensors = {key: value.detach().contiguous().cpu() for key, value in module.state_dict().items()}
    with atomic_path(weights_path) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt"})
    with atomic_path(config_path) as temporary:
        temporary.write_text(module.to_json_string())
    return weights_path


def load_model(cls: type[ModuleT], directory: str | os.PathLike, name: str) -> ModuleT:
    """Rebuild a model written by :func:`save_model` from its config and load its tensors strictly (in eval
    mode, on the CPU)."""
    directory = Path(directory)
    weights_path, config_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    if not config_path.is_file():
        raise CheckpointError(f"Model config {config_path} does not exist (written by save_model beside the weights).")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path}: not a readable JSON config ({error}).") from error
    saved_class = config.get("_class_name")
    if saved_class is not None and saved_class != cls.__name__:
        raise CheckpointError(f"{config_path} describes a {saved_class}, not a {cls.__name__}.")
    model = cls.from_config(config)
    load_strict(model, read_state_dict(weights_path), str(weights_path))
    return model.eval()
