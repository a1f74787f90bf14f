"""Helpers for the configuration dataclasses that the CLI (and later the UI) are built from.

Each stage keeps its own config dataclass beside its code; defaults live only there. A field's help text
sits in its metadata so the CLI can show it without repeating it.

Every config validates itself in ``__post_init__`` with the ``check_*`` helpers below, so a bad value fails
when the config is made (before any work starts), for CLI and Python callers alike, with an
:class:`~magicportrait.errors.InputError` naming the CLI flag: ``--smoothing must be between 0 and 1, got 2.``
A config nested under a flag prefix (``FlameFitConfig`` -> ``--flame-...``) names it in ``cli_prefix``.

``--help`` sections: a config class's ``cli_group`` (one of :data:`HELP_GROUPS`) holds its fields, nested
configs inherit the enclosing one unless they name their own, and ``cli_field_groups`` moves single fields.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal

from magicportrait.errors import InputError

# Titles of the CLI's --help sections, in the order they are shown.
INPUT = "input"
FACE = "face choice and tracking"
MOTION = "motion"
MOTION_EDIT = "motion editing"
HEAD_MODEL = "head model / FLAME"
GUIDANCE = "guidance maps"
GENERATOR = "generator and weights"
GEOMETRIC = "geometric generator"
SAMPLER = "diffusion sampler"
EVALUATION = "evaluation"
DATASET = "dataset preparation"
BATCH = "batch runs"
OUTPUT = "output"
HELP_GROUPS = (INPUT, FACE, MOTION, MOTION_EDIT, HEAD_MODEL, GUIDANCE, GENERATOR, GEOMETRIC, SAMPLER, EVALUATION,
               DATASET, BATCH, OUTPUT)


def option(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with a default and a help text (plus extra metadata such as ``short="-s"``)."""
    return field(default=default, metadata={"help": help, **metadata})


def flag(name: str, prefix: str = "") -> str:
    """The CLI flag of a config field: ``flag("smoothing")`` is ``--smoothing``, with a prefix ``--flame-...``."""
    return "--" + (prefix + name).replace("_", "-")


def field_flag(config: Any, name: str) -> str:
    """The flag of field ``name`` of ``config``, honouring its class's ``cli_prefix``."""
    return flag(name, getattr(config, "cli_prefix", ""))


def _show(value: Any) -> str:
    if isinstance(value, float):  # 2.0 -> "2", but never rounded: 0.2000001 stays itself
        short = f"{value:g}"
        return short if math.isnan(value) or float(short) == value else repr(value)
    return repr(value) if isinstance(value, str) else str(value)


def _expected(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        if not (low_open or high_open):
            return f"between {_show(low)} and {_show(high)}"
        return f"in {'(' if low_open else '['}{_show(low)}, {_show(high)}{')' if high_open else ']'}"
    if low is not None:
        if low_open:
            return "positive" if low == 0 else f"greater than {_show(low)}"
        return f"at least {_show(low)}"
    return f"below {_show(high)}" if high_open else f"at most {_show(high)}"


def check_range(config: Any, name: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """Field ``name`` is within ``[low, high]`` (an open end with ``low_open``/``high_open``); None passes.

    Raises:
        InputError: ``--name must be between low and high, got value.`` (NaN never passes).
    """
    value = getattr(config, name)
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or (isinstance(value, float) and math.isnan(value)):
        raise InputError(f"{field_flag(config, name)} must be {_expected(low, high, low_open, high_open)}, "
                         f"got {_show(value)}.")


def check_positive(config: Any, *names: str) -> None:
    """Each named field is > 0."""
    for name in names:
        check_range(config, name, 0, low_open=True)


def check_at_least(config: Any, minimum: float, *names: str) -> None:
    """Each named field is >= ``minimum``."""
    for name in names:
        check_range(config, name, minimum)


def check_choice(config: Any, name: str, choices: tuple[Any, ...]) -> None:
    """Field ``name`` is one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise InputError(f"{field_flag(config, name)} must be one of {', '.join(map(str, choices))}; "
                         f"got {_show(value)}.")


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(annotation, False)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


@functools.cache
def _literal_fields(config_class: type) -> tuple[tuple[str, tuple[Any, ...], bool], ...]:
    """(name, choices, optional) of every ``Literal[...]`` (or ``Literal[...] | None``) field."""
    hints = typing.get_type_hints(config_class)
    found = []
    for item in dataclasses.fields(config_class):
        annotation, optional = unwrap_optional(hints[item.name])
        if typing.get_origin(annotation) is Literal:
            found.append((item.name, typing.get_args(annotation), optional))
    return tuple(found)


def check_choices(config: Any) -> None:
    """Every ``Literal`` field of ``config`` holds one of its choices (argparse checks them for the CLI; Python
    callers bypass it)."""
    for name, choices, optional in _literal_fields(type(config)):
        if not (optional and getattr(config, name) is None):
            check_choice(config, name, choices)


def check_device(config: Any, name: str = "device") -> None:
    """Field ``name`` names a torch device this machine has (``cpu`` passes without importing torch)."""
    value = getattr(config, name)
    if value == "cpu":
        return
    import torch

    where = field_flag(config, name)
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{where} {value!r} is not a torch device; use e.g. cpu, cuda, cuda:1 or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{where} {value}: torch {torch.__version__} sees no CUDA device here; use {where} cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"{where} {value}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{where} {value}: MPS is not available here; use {where} cpu.")
