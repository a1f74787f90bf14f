"""Outputs appear whole or not at all: write to a temporary name beside the target, rename at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from magicportrait.errors import OutputError


def ensure_writable_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` (and parents) and check that files can be created in it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".mp-write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise OutputError(f"Cannot write to {directory}: {exc.strerror or exc}. Choose another output path.") from exc
    return directory


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file path in the target's folder; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=suffix or path.suffix or ".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_output_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success move each entry it holds into ``directory``.

    Entries of ``directory`` with the same names are replaced; anything else already there is left alone.
    On failure the staging folder is deleted and ``directory`` is untouched: no half-written outputs.
    """
    directory = ensure_writable_dir(directory)
    stage = Path(tempfile.mkdtemp(dir=directory, prefix=".staging-"))
    try:
        yield stage
        for entry in sorted(stage.iterdir()):
            target = directory / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
