"""Each job's ``OUT/<name>/status.json`` and what a rerun does with it.

States: ``running`` (written when the job starts: a job left in it was interrupted), ``done``, ``failed``. A rerun
skips ``done`` jobs whose result is still there, runs again the interrupted ones and those never started, and the
failed ones only with ``retry_failed`` (their error is kept in the summary until then).

The file is replaced atomically; besides the state it records the seconds the job took, the generator, the frame
count, the error message, when and where (host, process) it ran and, with ``--evaluate``, its metrics.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

STATUS_NAME = "status.json"
RUNNING, DONE, FAILED = "running", "done", "failed"
RESULT_NAME = "result.mp4"
REWRITTEN_FIELDS = ("name", "updated", "host", "pid", "metrics", "evaluation_error")  # set anew by each write


def status_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / name / STATUS_NAME


def read_status(output_dir: Path, name: str) -> dict[str, Any] | None:
    """The job's status, or None when it never started (or its file is unreadable: it then runs again)."""
    path = status_path(output_dir, name)
    try:
        status = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return status if isinstance(status, dict) else None


def write_status(output_dir: Path, name: str, **fields: Any) -> dict[str, Any]:
    """Write the job's status (with the time and this process's host and pid) and return it."""
    from magicportrait.io.atomic import atomic_path

    status = {"name": name, **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "host": socket.gethostname(), "pid": os.getpid()}
    path = status_path(output_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(status, indent=2, default=str) + "\n")
    return status


def is_finished(output_dir: Path, name: str, status: dict[str, Any] | None) -> bool:
    """Done, with its result still in place."""
    return bool(status) and status.get("state") == DONE and (Path(output_dir) / name / RESULT_NAME).is_file()


def needs_run(output_dir: Path, name: str, status: dict[str, Any] | None, retry_failed: bool,
              evaluate: bool = False) -> bool:
    """Whether a rerun has work for the job with ``status``: not finished (a failed one only with
    ``retry_failed``), or finished without the metrics ``evaluate`` asks for (the worker then only evaluates it)."""
    if is_finished(output_dir, name, status):
        return evaluate and not status.get("metrics")
    return not (status and status.get("state") == FAILED and not retry_failed)
