"""Outputs appear whole or not at all: write to a temporary name beside the target, rename at the end.

Temporary files and folders are created with the usual modes (0666 / 0777 less the umask, i.e. 0644 / 0755 with
the common umask 022), not the owner-only 0600 / 0700 of :mod:`tempfile`: they become the user's output files.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from magicportrait.errors import OutputError

_TRIES = 100  # random names tried before giving up (a clash is already unlikely on the first)


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


def make_temp_file(directory: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """Create a new empty file ``<directory>/<prefix><random><suffix>`` with mode 0666 less the umask."""
    for _ in range(_TRIES):
        path = Path(directory) / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"No free temporary name {prefix}*{suffix} in {directory}")


def make_temp_dir(directory: str | os.PathLike, prefix: str) -> Path:
    """Create a new empty folder ``<directory>/<prefix><random>`` with mode 0777 less the umask."""
    for _ in range(_TRIES):
        path = Path(directory) / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"No free temporary folder name {prefix}* in {directory}")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file path in the target's folder; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = make_temp_file(path.parent, prefix=f".{path.stem}-", suffix=suffix or path.suffix or ".tmp")
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
    tmp = make_temp_dir(path.parent, prefix=f".{path.name}-")
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
    """Yield an empty staging folder; on success its entries replace the earlier result in ``directory``.

    The folder is locked for the whole block and replaced as a whole (see :mod:`magicportrait.io.output`): entries
    an earlier run wrote go, the user's own files stay. On failure ``directory`` is untouched (and removed again if
    this call created it): no half-written outputs. A run that must hold the lock from before its slow work starts
    uses :func:`magicportrait.io.output.output_folder` and its ``stage()`` instead.
    """
    from magicportrait.io.output import output_folder

    with output_folder(directory) as folder, folder.stage() as stage:
        yield stage
