"""What reaches the console: our messages, not the libraries' start-up chatter.

- :func:`console` (the CLI runs each command in it): log levels, library loggers, Python warnings and progress
  bars for the ``-v`` / default / ``-q`` verbosity.
- :func:`native_stderr_captured`: MediaPipe's C++ code (TFLite, absl logging) writes lines such as
  ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` straight to file descriptor 2, which no Python
  setting reaches (``GLOG_minloglevel`` / ``TF_CPP_MIN_LOG_LEVEL`` do not silence them either). While the
  capture is held, fd 2 goes to a temporary file; when the last holder releases it, the known chatter becomes
  DEBUG log records (shown with ``-v``) and everything else, e.g. an error message, is written to stderr.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

logger = logging.getLogger(__name__)

QUIET, NORMAL, VERBOSE = -1, 0, 1
LIBRARY_WARNINGS = (FutureWarning, UserWarning, DeprecationWarning)
LIBRARY_LOGGERS = ("absl", "diffusers", "transformers", "huggingface_hub", "accelerate", "ray")
# diffusers and transformers set their loggers' levels from these when they are imported.
LIBRARY_ENVIRONMENT = {"DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error"}
QUIET_ENVIRONMENT = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # bars without a show_progress
# Lines the native libraries print in normal operation (TFLite's INFO lines, absl's I/W records and its note,
# Ray's note on its token authentication).
NATIVE_CHATTER = re.compile(
    r"^(INFO: Created TensorFlow Lite .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|Token authentication is enabled for this Ray cluster\..*"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] .*)$")


@contextmanager
def console(verbosity: int = NORMAL) -> Iterator[None]:
    """Console settings for the block (the CLI runs each command in one; all are restored afterwards).

    VERBOSE (``-v``): our DEBUG messages, library warnings and the native libraries' log lines. NORMAL: our INFO
    messages and warnings; library loggers and Python warnings from libraries only at error level. QUIET
    (``-q``): errors only, and no progress bars.
    """
    level = {QUIET: logging.ERROR, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}[verbosity]
    logging.basicConfig(format="%(levelname)s: %(message)s")  # a stderr handler, unless the root has one
    loggers = {name: logging.getLogger(name) for name in ("magicportrait", *([] if verbosity >= VERBOSE
                                                                           else LIBRARY_LOGGERS))}
    saved_levels = {name: item.level for name, item in loggers.items()}
    environment = {**LIBRARY_ENVIRONMENT, **(QUIET_ENVIRONMENT if verbosity <= QUIET else {})}
    saved_environment = {name: os.environ.get(name) for name in environment}
    with warnings.catch_warnings():
        for name, item in loggers.items():
            item.setLevel(level if name == "magicportrait" else max(level, logging.ERROR))
        if verbosity < VERBOSE:
            for category in LIBRARY_WARNINGS:  # e.g. diffusers' and transformers' deprecation notes
                warnings.filterwarnings("ignore", category=category)
            for name, value in environment.items():
                os.environ.setdefault(name, value)  # a user's own setting wins
        try:
            yield
        finally:
            for name, item in loggers.items():
                item.setLevel(saved_levels[name])
            for name, value in saved_environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class _Capture:
    """fd 2 redirected to a temporary file while at least one holder has it (holders may release in any order)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._saved: int | None = None
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        with self._lock:
            self._holders += 1
            if self._holders > 1:
                return
            _flush()
            try:
                self._saved = os.dup(2)
            except OSError:  # no fd 2 (a daemon): nothing to capture
                return
            self._file = tempfile.TemporaryFile()
            os.dup2(self._file.fileno(), 2)

    def release(self, show_all: bool = False) -> None:
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders or self._saved is None:
                return
            _flush()
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._file.seek(0)
            text = self._file.read().decode(errors="replace")
            self._file.close()
            self._saved = self._file = None
        _replay(text, show_all)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def _replay(text: str, show_all: bool) -> None:
    """Captured output: known chatter as DEBUG records, the rest (all of it after a failure) to stderr."""
    kept = []
    for line in text.splitlines(keepends=True):
        if not show_all and NATIVE_CHATTER.match(line.rstrip("\r\n")):
            logger.debug("%s", line.rstrip())
        else:
            kept.append(line)
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


_CAPTURE = _Capture()


def hold_native_stderr() -> None:
    """Start (or join) capturing fd 2; pair with :func:`release_native_stderr`."""
    _CAPTURE.acquire()


def release_native_stderr(failed: bool = False) -> None:
    """Leave the capture; the last holder restores fd 2 and shows what was captured (all of it if ``failed``)."""
    _CAPTURE.release(show_all=failed)


@contextmanager
def native_stderr_captured():
    """Capture fd 2 for the block (see the module docstring); on an exception everything captured is shown."""
    hold_native_stderr()
    try:
        yield
    except BaseException:
        release_native_stderr(failed=True)
        raise
    release_native_stderr()


class QuietStart:
    """``factory(*args, **kwargs)`` (e.g. a MediaPipe graph), with fd 2 captured until its first ``process()``.

    Native graphs log from their own threads while they start, until the first result is out, so the capture
    spans both. Everything captured is shown if the construction or that first call fails.
    """

    def __init__(self, factory, *args, **kwargs) -> None:
        self._held = True
        hold_native_stderr()
        try:
            self._inner = factory(*args, **kwargs)
        except BaseException:
            self._release(failed=True)
            raise

    def process(self, *args, **kwargs):
        if not self._held:
            return self._inner.process(*args, **kwargs)
        try:
            result = self._inner.process(*args, **kwargs)
        except BaseException:
            self._release(failed=True)
            raise
        self._release()
        return result

    def close(self) -> None:
        self._release()
        self._inner.close()

    def __enter__(self) -> QuietStart:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        self._release()  # never leave fd 2 captured, even for a graph that was neither used nor closed

    def _release(self, failed: bool = False) -> None:
        if getattr(self, "_held", False):
            self._held = False
            release_native_stderr(failed)
