"""Build argparse options from configuration dataclasses, so defaults and help live only in the dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal, get_args, get_origin

from magicportrait.config import HELP_GROUPS, flag, unwrap_optional


def argument_group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The ``--help`` section ``title`` of ``parser`` (created on first use)."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def order_groups(parser: argparse.ArgumentParser) -> None:
    """Show the help sections in :data:`~magicportrait.config.HELP_GROUPS` order (others after, as added)."""
    rank = {title: index for index, title in enumerate(HELP_GROUPS)}
    builtin = parser._action_groups[:2]  # positional arguments, options (-h)
    named = sorted(parser._action_groups[2:], key=lambda group: rank.get(group.title, len(rank)))
    parser._action_groups[:] = builtin + named


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type, skip: tuple[str, ...] = (),
                         prefix: str = "", group: str | None = None) -> None:
    """Add ``--field-name`` for every field with help metadata; nested configs are flattened, shared names merged.

    A nested config field with ``metadata["prefix"]`` (e.g. ``"flame_"``) gets prefixed flags
    (``--flame-chunk-size``), so its names cannot clash with the outer config's. ``skip`` names fields not
    offered (as their argparse destination, i.e. with the prefix: ``"write_preview"``, ``"flame_threads"``);
    they keep their defaults. Each flag goes to the help section of its field (``cli_field_groups``), else of
    its class (``cli_group``), else of the enclosing config. Defaults are those of a default instance, so an outer
    config can change a nested one's defaults (``field(default_factory=...)``).
    """
    _add_fields(parser, config_class, skip, prefix, group or getattr(config_class, "cli_group", None),
                config_class())
    order_groups(parser)


def _add_fields(parser: argparse.ArgumentParser, config_class: type, skip: tuple[str, ...], prefix: str,
                group: str | None, defaults: Any) -> None:
    hints = typing.get_type_hints(config_class)
    field_groups = getattr(config_class, "cli_field_groups", {})
    for item in dataclasses.fields(config_class):
        dest = prefix + item.name
        if dest in skip:
            continue
        annotation, _ = unwrap_optional(hints[item.name])
        if dataclasses.is_dataclass(annotation):
            title = field_groups.get(item.name) or getattr(annotation, "cli_group", None) or group
            _add_fields(parser, annotation, skip, prefix + item.metadata.get("prefix", ""), title,
                        getattr(defaults, item.name))
            continue
        title = field_groups.get(item.name, group)
        if "help" not in item.metadata:
            continue
        name = flag(item.name, prefix)
        if name in parser._option_string_actions:  # a field shared by two configs (e.g. show_progress): one flag
            continue
        _add_flag(argument_group(parser, title) if title else parser, name, item, annotation,
                  getattr(defaults, item.name))


def _add_flag(target: Any, name: str, item: dataclasses.Field, annotation: Any, default: Any) -> None:
    text = item.metadata["help"]
    if annotation is bool:
        target.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=text)
    elif get_origin(annotation) is Literal:
        target.add_argument(name, choices=get_args(annotation), default=default, help=f"{text} (default: {default})")
    else:
        target.add_argument(name, type=annotation, default=default, metavar=item.name.upper(),
                            help=f"{text} (default: {default})")


def config_from_args(config_class: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """Instantiate ``config_class`` (and nested configs) from parsed arguments with the same field names."""
    hints = typing.get_type_hints(config_class)
    values = {}
    for item in dataclasses.fields(config_class):
        annotation, _ = unwrap_optional(hints[item.name])
        if dataclasses.is_dataclass(annotation):
            values[item.name] = config_from_args(annotation, args, prefix + item.metadata.get("prefix", ""))
        elif hasattr(args, prefix + item.name):
            values[item.name] = getattr(args, prefix + item.name)
    return config_class(**values)


def args_from_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """The argparse destinations and values of a config instance (nested ones flattened): the inverse of
    :func:`config_from_args`, e.g. a parser's defaults taken from a config built in Python."""
    hints = typing.get_type_hints(type(config))
    values: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        annotation, _ = unwrap_optional(hints[item.name])
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(annotation):
            values.update(args_from_config(value, prefix + item.metadata.get("prefix", "")))
        else:
            values[prefix + item.name] = value
    return values


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
