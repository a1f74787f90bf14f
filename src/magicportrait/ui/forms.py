"""The web UI's forms, made from the same config dataclasses as the CLI: one field per flag, with the flag's
default and help text, and the values sent back by the page turned into validated configs (no second set of
defaults). No Gradio here, so the forms are tested without a browser.

Server-side paths (FLAME, weights, motion module) are the one kind of value a page must not choose freely when the
server is reachable by others: :class:`PathPolicy` fixes them at launch, and refuses a typed path that climbs out
of its folder (``..``) or is not the kind of file the field asks for, on any server.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from magicportrait.cli.args import config_from_args
from magicportrait.config import flag, unwrap_optional
from magicportrait.errors import InputError
from magicportrait.io.assets import ASSETS, Asset

PATH_ASSETS = {asset.flag.removeprefix("--").replace("-", "_"): asset for asset in ASSETS}


@dataclass(frozen=True)
class FormField:
    """One option of a config as a form field: its argparse destination ``name`` (``geometric_blend``), the flag,
    its kind (bool, int, float, text, choice or path), default, help text and choices."""

    name: str
    flag: str
    kind: Literal["bool", "int", "float", "text", "choice", "path"]
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    optional: bool = False
    ui_range: tuple[float, float] | None = None


def form_fields(config_class: type, names: tuple[str, ...] | None = None) -> list[FormField]:
    """The fields of ``config_class`` (nested configs flattened with their flag prefixes, as the CLI does), in
    declaration order; only those whose destination is in ``names`` when given."""
    fields: list[FormField] = []
    _collect(config_class, config_class(), "", fields)
    if names is None:
        return fields
    by_name = {item.name: item for item in fields}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"{config_class.__name__} has no option {', '.join(missing)}.")
    return [by_name[name] for name in names]


def _collect(config_class: type, defaults: Any, prefix: str, out: list[FormField]) -> None:
    hints = typing.get_type_hints(config_class)
    for item in dataclasses.fields(config_class):
        annotation, optional = unwrap_optional(hints[item.name])
        name = prefix + item.name
        if dataclasses.is_dataclass(annotation):
            _collect(annotation, getattr(defaults, item.name), prefix + item.metadata.get("prefix", ""), out)
            continue
        if "help" not in item.metadata or any(field.name == name for field in out):
            continue
        default = getattr(defaults, item.name)
        kind, choices = _kind(name, annotation)
        out.append(FormField(name, flag(name), kind, default, item.metadata["help"], choices, optional,
                             getattr(config_class, "ui_ranges", {}).get(item.name)))


def _kind(name: str, annotation: Any) -> tuple[str, tuple[Any, ...]]:
    if name in PATH_ASSETS:
        return "path", ()
    if annotation is bool:
        return "bool", ()
    if get_origin(annotation) is Literal:
        return "choice", get_args(annotation)
    return {int: "int", float: "float"}.get(annotation, "text"), ()


def build_config(config_class: type, fields: list[FormField], values: list[Any] | tuple[Any, ...]) -> Any:
    """``config_class`` with ``fields`` set to the page's ``values`` (the rest at their defaults), validated by the
    config itself (an :class:`InputError` names the flag)."""
    settings = {field.name: field.default for field in form_fields(config_class)}  # the outer config's defaults
    settings.update({field.name: _value(field, value) for field, value in zip(fields, values, strict=True)})
    return config_from_args(config_class, argparse.Namespace(**settings))


UNSET_CHOICE = "default"
"""The page's entry for an optional choice left unset (the config then picks, e.g. by tracker or backend)."""


def choice_options(field: FormField) -> list[Any]:
    """A choice field's page options: its choices, after :data:`UNSET_CHOICE` when it may stay unset."""
    return [UNSET_CHOICE, *field.choices] if field.optional else list(field.choices)


def _value(field: FormField, value: Any) -> Any:
    """A page value as the config expects it: blank text -> None, whole numbers as int, checked numbers."""
    if field.kind == "choice" and field.optional and value in (UNSET_CHOICE, "", None):
        return None
    if field.kind in ("text", "path"):
        value = (value or "").strip()
        return value or (None if field.optional else "")
    if isinstance(value, str) and field.kind in ("int", "float"):
        value = value.strip()
    if value is None or value == "":
        if field.optional:
            return None
        raise InputError(f"{field.flag} needs a value.")
    if field.kind in ("int", "float"):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{field.flag} takes a number, got {value!r}.") from None
    if field.kind == "int":
        number = float(value)
        if not number.is_integer():
            raise InputError(f"{field.flag} takes a whole number, got {value}.")
        return int(number)
    if field.kind == "float":
        return float(value)
    return value


class PathPolicy:
    """What a page may put in the server-side path fields (FLAME, weights, ...).

    ``editable``: whether the page may choose them (a server on localhost, for the person at that machine); off
    (a server beyond localhost, or shared), they keep the values ``fixed`` at launch and any other value sent is
    refused. Editable or not, a path must not climb with ``..`` and must be the kind of thing the field takes.
    """

    def __init__(self, editable: bool, fixed: dict[str, str | None] | None = None) -> None:
        self.editable = editable
        self.fixed = {name: (fixed or {}).get(name) for name in PATH_ASSETS}

    def check(self, name: str, value: str | None) -> str | None:
        """The path to use for field ``name`` given the page's ``value`` (blank: none), or InputError."""
        asset = PATH_ASSETS[name]
        value = (value or "").strip() or None
        if not self.editable:
            if value != self.fixed[name]:
                raise InputError(f"{asset.flag} is fixed by the server ({asset.what}); it cannot be changed from "
                                 "the page.")
            return value
        if value is None:
            return None
        return str(checked_user_path(value, asset))


def checked_user_path(value: str, asset: Asset) -> Path:
    """``value`` as a path to ``asset``, refused when it climbs with ``..`` or is not such a file / folder."""
    path = Path(value).expanduser()
    if ".." in path.parts:
        raise InputError(f"{asset.flag}: paths with '..' are refused; give the {asset.what}'s full path.")
    if not (path.is_dir() if asset.is_dir else path.is_file()):
        kind = "folder" if asset.is_dir else "file"
        raise InputError(f"{asset.flag}: {value} is not an existing {kind}; give the {asset.what}'s path.")
    return path.resolve()
