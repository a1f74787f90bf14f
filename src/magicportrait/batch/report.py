"""A batch's summary over every job of the job file (whichever shard or worker ran it): ``summary.csv``,
``summary.md`` and, with ``--evaluate``, contact sheets of the results.

Shards write into the same folder, each rewriting the summary when it ends, under a lock: the last shard to end
sees every job's final status. The contact sheet shows one row per finished job: the portrait, then the driving
frame and the result at three moments (a sixth, half and five sixths of the way through).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from magicportrait.batch.jobs import Job
from magicportrait.batch.status import DONE, FAILED, read_status
from magicportrait.batch.worker import EVALUATION_METRICS

SUMMARY_METRICS = (*EVALUATION_METRICS, "face_lost")
COLUMNS = ("name", "row", "state", "seconds", "backend", "frames", "source", "driving", "error", *SUMMARY_METRICS)
NOT_RUN = "not run"
JOBS_PER_SHEET = 40
SHEET_MOMENTS = (1 / 6, 1 / 2, 5 / 6)
LOCK_NAME = ".summary.lock"


def job_rows(output_dir: Path, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """One row per job: its status (``not run`` when it has none) and, after ``--evaluate``, its metrics."""
    rows = []
    for job in jobs:
        status = read_status(output_dir, job.name) or {"state": NOT_RUN}
        metrics = status.get("metrics") or {}
        row = {"name": job.name, "row": job.row, "source": str(job.source), "driving": str(job.driving or job.motion),
               **{key: status.get(key) for key in ("state", "seconds", "backend", "frames", "error")},
               **{name: metrics.get(name) for name in SUMMARY_METRICS}}
        rows.append(row)
    return rows


def write_summary(output_dir: Path, jobs: Sequence[Job], contact_sheet: bool) -> dict[str, Path]:
    """``summary.csv`` and ``summary.md`` (and the contact sheets) of every job, written atomically under a lock."""
    from magicportrait.io.atomic import atomic_path

    with _locked(output_dir):
        rows = job_rows(output_dir, jobs)
        files = {"summary_csv": output_dir / "summary.csv", "summary_md": output_dir / "summary.md"}
        with atomic_path(files["summary_csv"]) as path:
            path.write_text(_csv(rows))
        with atomic_path(files["summary_md"]) as path:
            path.write_text(_markdown(rows))
        if contact_sheet:
            files.update(write_contact_sheets(output_dir, [row for row in rows if row["state"] == DONE]))
    return files


@contextmanager
def _locked(output_dir: Path, wait_s: float = 120.0):
    """The summary's own lock (not the job folders'): another shard writing its summary is waited for."""
    from magicportrait.errors import OutputError
    from magicportrait.io.output import FolderLock

    lock, deadline = FolderLock(output_dir, LOCK_NAME), time.monotonic() + wait_s
    while True:
        try:
            lock.acquire()
            break
        except OutputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield
    finally:
        lock.release()


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in COLUMNS})
    return buffer.getvalue()


def _markdown(rows: list[dict[str, Any]]) -> str:
    counts = {state: sum(row["state"] == state for row in rows) for state in (DONE, FAILED, "running", NOT_RUN)}
    lines = [f"# Batch summary: {len(rows)} jobs", "",
             ", ".join(f"{count} {state}" for state, count in counts.items() if count), ""]
    metrics = [name for name in SUMMARY_METRICS if any(row.get(name) is not None for row in rows)]
    lines += ["| " + " | ".join(["job", "state", "seconds", "frames", *metrics]) + " |",
              "|---|---|---|---|" + "---|" * len(metrics)]
    for row in rows:
        cells = [row["name"], row["state"], _number(row.get("seconds"), 1), str(row.get("frames") or ""),
                 *(_number(row.get(name), 3) for name in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    if metrics:
        means = [_number(_mean(row.get(name) for row in rows), 3) for name in metrics]
        lines.append("| **mean** | | | | " + " | ".join(means) + " |")
    failures = [row for row in rows if row["state"] == FAILED]
    if failures:
        lines += ["", "## Failed", ""] + [f"- {row['name']} (row {row['row']}): {row['error']}" for row in failures]
    return "\n".join(lines) + "\n"


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{digits}f}"


def _mean(values) -> float | None:
    numbers = [float(value) for value in values if value is not None and not math.isnan(float(value))]
    return float(np.mean(numbers)) if numbers else None


# ---------------------------------------------------------------------------------------------- contact sheet


def write_contact_sheets(output_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """``contact_sheet.png`` (then ``contact_sheet_2.png`` ... every :data:`JOBS_PER_SHEET` jobs)."""
    from magicportrait.io.atomic import atomic_path
    from magicportrait.io.contact_sheet import stack_blocks
    from magicportrait.io.image import save_image

    files = {}
    for page, start in enumerate(range(0, len(rows), JOBS_PER_SHEET), start=1):
        blocks = [block for row in rows[start:start + JOBS_PER_SHEET] if (block := _sheet_block(output_dir, row))
                  is not None]
        if not blocks:
            continue
        name = "contact_sheet.png" if page == 1 else f"contact_sheet_{page}.png"
        with atomic_path(output_dir / name) as path:
            save_image(path, stack_blocks(blocks))
        files[name.removesuffix(".png")] = output_dir / name
    return files


def _sheet_block(output_dir: Path, row: dict[str, Any]) -> np.ndarray | None:
    """source | driving, result at three moments, with the job's name and metrics above."""
    from magicportrait.io.contact_sheet import caption, tile
    from magicportrait.io.image import load_image

    folder = output_dir / row["name"]
    result = folder / "result_crop.mp4" if (folder / "result_crop.mp4").is_file() else folder / "result.mp4"
    frames = int(row.get("frames") or 0)
    if not result.is_file() or not frames:
        return None
    moments = sorted({min(frames - 1, int(frames * moment)) for moment in SHEET_MOMENTS})
    results = _frames_at(result, moments)
    driving = _driving_crops(folder, Path(row["driving"]), moments)
    cells = [tile(load_image(folder / "source.png") if (folder / "source.png").is_file() else
                  load_image(row["source"]), label="source")]
    for index, moment in enumerate(moments):
        if index < len(driving):
            cells.append(tile(driving[index], label=f"driving {moment}"))
        cells.append(tile(results[index], label=f"result {moment}"))
    strip = np.hstack(cells)
    scores = "  ".join(f"{name} {_number(row.get(name), 2)}" for name in SUMMARY_METRICS
                       if row.get(name) is not None)
    return np.vstack([caption(f"{row['name']}   {scores}", strip.shape[1]), strip])


def _driving_crops(folder: Path, driving: Path, moments: list[int]) -> list[np.ndarray]:
    """The driving face crops (the grid's second panel), else the driving video's frames; none for a motion."""
    grid = folder / "grid.mp4"
    if grid.is_file():
        return [frame[:, frame.shape[0]:2 * frame.shape[0]] for frame in _frames_at(grid, moments)]
    return _frames_at(driving, moments) if driving.suffix != ".npz" else []


def _frames_at(path: Path, indices: list[int]) -> list[np.ndarray]:
    from magicportrait.io.video import iter_frames

    wanted, found = set(indices), []
    for index, frame in enumerate(islice(iter_frames(path), max(indices) + 1)):
        if index in wanted:
            found.append(frame)
    return found
