"""Running one measurement in a fresh Python process, so that its peak memory (VmHWM) is its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
MARKER = "BENCH_CHILD_RESULT "


def peak_rss_mib() -> float:
    """The peak resident size of this process (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def call_in_child(module: str, function: str, *args) -> dict:
    """``benchmarks/<module>.py``'s ``function(*args)`` (JSON-able arguments and result) in a fresh process."""
    code = (f"import json, sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import {module} as m; "
            f"print({MARKER!r} + json.dumps(m.{function}(*json.loads({json.dumps(args)!r}))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{module}.{function}{args} failed:\n{done.stderr[-3000:]}")
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith(MARKER))[len(MARKER):])
