"""Build argparse options from configuration dataclasses, so defaults and help live only in the dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type, skip: tuple[str, ...] = (),
                         prefix: str = "", defaults: Any = None) -> None:
    """Add ``--field-name`` for every field with help metadata; nested configs are flattened, shared names merged.

    A nested config field with ``metadata["prefix"]`` (e.g. ``"flame_"``) gets prefixed flags
    (``--flame-chunk-size``), so its names cannot clash with the outer config's. Defaults are those of a default
    instance, so an outer config can change a nested one's defaults (``field(default_factory=...)``).
    """
    hints = typing.get_type_hints(config_class)
    defaults = config_class() if defaults is None else defaults
    for item in dataclasses.fields(config_class):
        if item.name in skip:
            continue
        annotation, _ = _unwrap_optional(hints[item.name])
        if dataclasses.is_dataclass(annotation):
            add_config_arguments(parser, annotation, skip, prefix + item.metadata.get("prefix", ""),
                                 getattr(defaults, item.name))
            continue
        if "help" not in item.metadata:
            continue
        flag = "--" + (prefix + item.name).replace("_", "-")
        if flag in parser._option_string_actions:  # a field shared by two configs (e.g. show_progress): one flag
            continue
        default = getattr(defaults, item.name)
        if annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=item.metadata["help"])
        elif get_origin(annotation) is Literal:
            parser.add_argument(flag, choices=get_args(annotation), default=default,
                                help=f"{item.metadata['help']} (default: {default})")
        else:
            parser.add_argument(flag, type=annotation, default=default, metavar=item.name.upper(),
                                help=f"{item.metadata['help']} (default: {default})")


def config_from_args(config_class: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """Instantiate ``config_class`` (and nested configs) from parsed arguments with the same field names."""
    hints = typing.get_type_hints(config_class)
    values = {}
    for item in dataclasses.fields(config_class):
        annotation, _ = _unwrap_optional(hints[item.name])
        if dataclasses.is_dataclass(annotation):
            values[item.name] = config_from_args(annotation, args, prefix + item.metadata.get("prefix", ""))
        elif hasattr(args, prefix + item.name):
            values[item.name] = getattr(args, prefix + item.name)
    return config_class(**values)
