"""Training configuration: one YAML file per stage, overridable with ``dotted.key=value`` strings.

Every value of the recipe (Champ's two-stage training, which the official release follows; see
``shared/reference/official-implementation.md`` section 5) lives in :class:`TrainConfig`; unknown keys and
wrongly-typed values are refused with an :class:`InputError` naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from magicportrait.errors import InputError

__all__ = ["DataConfig", "DiffusionConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "apply_overrides", "load_config"]

MIXED_PRECISION = ("no", "fp16", "bf16")
MODEL_SIZES = ("sd15", "tiny")
BETA_SCHEDULES = ("linear", "scaled_linear")


@dataclass
class DataConfig:
    root: str = "data"  # a prepared dataset (manifest.json + clips/)
    resolution: int = 512  # frames and maps are resized to resolution x resolution
    margin: int = 30  # stage 1: minimum distance in frames between the reference and the target frame
    clip_length: int = 12  # stage 2: consecutive frames per training clip
    num_workers: int = 2


@dataclass
class ModelConfig:
    size: Literal["sd15", "tiny"] = "sd15"  # tiny: models/tiny.py widths, for tests and CPU smoke runs
    sd15: str = "pretrained/stable-diffusion-v1-5"  # diffusers folder: unet/config.json, text_encoder/, tokenizer/
    vae: str = "pretrained/sd-vae-ft-mse"
    init_checkpoint_dir: str | None = None  # stage 1: official-layout ckpts to start from (else SD-1.5 UNet weights)
    stage1_checkpoint_dir: str | None = None  # stage 2: the stage-1 result (official layout), required
    motion_module: str | None = None  # stage 2: AnimateDiff mm_sd_v15_v2.ckpt (or any motion file); null = scratch
    gradient_checkpointing: bool = False


@dataclass
class OptimConfig:
    learning_rate: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 1  # constant learning rate after a linear warm-up (Champ: 1 step)
    use_8bit_adam: bool = False  # bitsandbytes AdamW8bit
    use_ema: bool = False
    ema_decay: float = 0.9999
    gradient_accumulation_steps: int = 1


@dataclass
class DiffusionConfig:
    beta_schedule: Literal["linear", "scaled_linear"] = "scaled_linear"  # Champ's training scheduler
    noise_offset: float = 0.05
    snr_gamma: float | None = 5.0  # min-SNR-gamma weighting (null: plain MSE)
    reference_dropout: float = 0.1  # probability that a step trains without reference attention (CFG)


@dataclass
class RunConfig:
    output_dir: str = "runs/stage1"
    seed: int = 42
    batch_size: int = 4  # per process
    max_steps: int = 100_000
    checkpoint_steps: int = 2000
    validation_steps: int = 2000  # 0 disables validation
    validation_frames: int = 12
    validation_inference_steps: int = 20
    log_steps: int = 10
    mixed_precision: Literal["no", "fp16", "bf16"] = "fp16"
    resume: bool = True  # continue from the latest output_dir/checkpoint-<step>/ when there is one
    show_progress: bool = True


@dataclass
class TrainConfig:
    stage: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse values no run could use, naming the key."""
        checks = [
            (self.stage in (1, 2), "stage", "1 or 2"),
            (self.model.size in MODEL_SIZES, "model.size", f"one of {MODEL_SIZES}"),
            (self.run.mixed_precision in MIXED_PRECISION, "run.mixed_precision", f"one of {MIXED_PRECISION}"),
            (self.diffusion.beta_schedule in BETA_SCHEDULES, "diffusion.beta_schedule", f"one of {BETA_SCHEDULES}"),
            (self.data.resolution >= 8 and self.data.resolution % 8 == 0, "data.resolution", "a multiple of 8"),
            (self.data.margin >= 0, "data.margin", ">= 0"),
            (self.data.clip_length >= 1, "data.clip_length", ">= 1"),
            (self.data.num_workers >= 0, "data.num_workers", ">= 0"),
            (self.run.batch_size >= 1, "run.batch_size", ">= 1"),
            (self.run.max_steps >= 1, "run.max_steps", ">= 1"),
            (self.run.checkpoint_steps >= 1, "run.checkpoint_steps", ">= 1"),
            (self.run.validation_steps >= 0, "run.validation_steps", ">= 0"),
            (self.run.log_steps >= 1, "run.log_steps", ">= 1"),
            (self.run.validation_frames >= 1, "run.validation_frames", ">= 1"),
            (self.run.validation_inference_steps >= 1, "run.validation_inference_steps", ">= 1"),
            (self.optim.learning_rate > 0, "optim.learning_rate", "> 0"),
            (0 <= self.optim.adam_beta1 < 1, "optim.adam_beta1", "in [0, 1)"),
            (0 <= self.optim.adam_beta2 < 1, "optim.adam_beta2", "in [0, 1)"),
            (self.optim.adam_epsilon > 0, "optim.adam_epsilon", "> 0"),
            (self.optim.weight_decay >= 0, "optim.weight_decay", ">= 0"),
            (self.optim.max_grad_norm > 0, "optim.max_grad_norm", "> 0"),
            (self.optim.warmup_steps >= 0, "optim.warmup_steps", ">= 0"),
            (self.optim.gradient_accumulation_steps >= 1, "optim.gradient_accumulation_steps", ">= 1"),
            (0 <= self.diffusion.reference_dropout <= 1, "diffusion.reference_dropout", "in [0, 1]"),
            (self.diffusion.noise_offset >= 0, "diffusion.noise_offset", ">= 0"),
            (self.diffusion.snr_gamma is None or self.diffusion.snr_gamma > 0, "diffusion.snr_gamma", "> 0 or null"),
            (0 < self.optim.ema_decay < 1, "optim.ema_decay", "in (0, 1)"),
            (self.stage == 1 or self.model.stage1_checkpoint_dir, "model.stage1_checkpoint_dir",
             "set for stage 2 (the stage-1 checkpoint folder)"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise InputError(f"Config value {key}={_get(self, key)!r} is invalid: it must be {expected}.")


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config, apply ``dotted.key=value`` overrides (values parsed as YAML), type-check everything."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Training config {path} does not exist (see configs/stage1.yaml for an example).")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(f"Training config {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise InputError(f"Training config {path} must be a mapping of sections, got {type(raw).__name__}.")
    return apply_overrides(raw, overrides, source=str(path))


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested dict plus ``dotted.key=value`` overrides."""
    import copy

    import yaml

    raw = copy.deepcopy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise InputError(f"Override {override!r} must look like section.key=value (e.g. run.max_steps=10).")
        parts = key.strip().split(".")
        _field_type(TrainConfig, parts, key)  # unknown keys fail here, with the valid ones listed
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"Override {override!r}: {part} is not a section.")
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return _build(TrainConfig, raw, prefix="", source=source)


def _field_type(cls: type, parts: list[str], key: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    if parts[0] not in fields:
        raise InputError(f"Unknown config key {key!r}; valid keys here: {', '.join(sorted(fields))}.")
    kind = hints[parts[0]]
    if len(parts) == 1:
        return kind
    if not dataclasses.is_dataclass(kind):
        raise InputError(f"Unknown config key {key!r}: {parts[0]} is not a section.")
    return _field_type(kind, parts[1:], key)


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise InputError(f"{source}: section {prefix.rstrip('.') or '(top)'} must be a mapping, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise InputError(f"{source}: unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys: "
                         f"{', '.join(prefix + n for n in sorted(names))}.")
    values = {}
    for name, value in raw.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value or {}, f"{prefix}{name}.", source)
        else:
            values[name] = _coerce(value, kind, prefix + name, source)
    return cls(**values)


def _coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``kind`` (ints are accepted for floats)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, key, source)
            except InputError as error:
                errors.append(str(error))
        raise InputError(errors[0])
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise InputError(f"{source}: {key}={value!r} must be one of {typing.get_args(kind)}.")
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (str, bool) and isinstance(value, kind):
        return value
    raise InputError(f"{source}: {key}={value!r} must be of type {getattr(kind, '__name__', kind)}.")
