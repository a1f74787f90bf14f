"""Helpers for the configuration dataclasses that the CLI (and later the UI) are built from.

Each stage keeps its own config dataclass beside its code; defaults live only there. A field's help text
sits in its metadata so the CLI can show it without repeating it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with a default and a help text (plus extra metadata such as ``short="-s"``)."""
    return field(default=default, metadata={"help": help, **metadata})
