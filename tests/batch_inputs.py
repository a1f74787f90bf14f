"""Job files for the batch tests (``tests/batch``): the options that keep a job small, and a writer."""

from __future__ import annotations

from pathlib import Path

EXAMPLE_FRAMES = 12  # the example the batch tests' fixture writes
FAST = ["--size", "128", "--max-frames", "8", "--no-write-grid"]  # each job ~1 s with the geometric generator


def write_jobs(folder: Path, rows: list[str], name: str = "jobs.csv", header: str = "source,driving,name") -> Path:
    path = Path(folder) / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path
