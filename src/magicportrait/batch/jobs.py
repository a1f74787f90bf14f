"""A batch's job file (CSV or JSONL), read and validated as a whole before any work starts.

One row per job. Columns (CSV header / JSON keys):

- ``source`` (required): the portrait image;
- ``driving`` (required): a driving video, or a saved motion ``aligned_head.npz`` of this portrait;
- ``name``: the job's output folder ``OUT/<name>/`` (default: ``<source stem>__<driving stem>``, numbered when
  two rows would share it);
- any option of ``magicportrait animate``, by its flag name with or without the dashes (``face``, ``face_box``,
  ``backend``, ``seed``, ``steps``, ``edit_yaw`` or ``edit-yaw``, ``pose_mode``, ``max_frames``, ...). An empty
  cell (or a missing key) keeps the batch command's value; booleans are ``true``/``false`` (also ``1``/``0``,
  ``yes``/``no``).

Relative ``source`` / ``driving`` paths are relative to the job file's folder (option paths, e.g. ``weights``,
to the current folder, as on the command line). Every row is checked (files exist and have the right kind,
option names and values are valid, names are unique and usable as folder names) and all problems are reported
together: :class:`JobFileError` lists every bad row (the CLI exits with status 2 and runs nothing), or with
``skip_invalid`` the valid rows run and the bad ones are listed.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magicportrait.errors import InputError, MagicPortraitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MOTION_SUFFIX = ".npz"
PATH_COLUMNS = ("source", "driving")
EXTRA_CELLS = "\0extra"  # a CSV row's cells beyond its header (no column can have this name)
RESERVED = ("name", *PATH_COLUMNS, EXTRA_CELLS)
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
MAX_LISTED = 50  # bad rows shown in full in an error report


@dataclass(frozen=True)
class Job:
    """One validated row: where its inputs are, its own options and the complete config it runs with."""

    row: int  # 1-based data row (CSV: the line after the header is row 1)
    name: str
    source: Path
    driving: Path | None  # the driving video (None when the row gives a saved motion)
    motion: Path | None
    options: dict[str, str]  # the row's own option cells, as written
    config: Any  # AnimateConfig

    def status_fields(self) -> dict[str, Any]:
        """What its ``status.json`` says about the row (beside the state)."""
        return {"row": self.row, "source": str(self.source), "driving": str(self.driving or self.motion)}


@dataclass(frozen=True)
class BadRow:
    row: int
    name: str
    problem: str

    def __str__(self) -> str:
        where = "header" if self.row == 0 else f"row {self.row}{f' ({self.name})' if self.name else ''}"
        return f"{where}: {self.problem}"


class JobFileError(InputError):
    """Some rows of a job file are invalid (the message lists every one)."""

    def __init__(self, path: Path, bad: list[BadRow], total: int) -> None:
        self.bad = bad
        lines = [str(row) for row in bad[:MAX_LISTED]]
        if len(bad) > MAX_LISTED:
            lines.append(f"... and {len(bad) - MAX_LISTED} more")
        rows = len({item.row for item in bad if item.row})
        what = f"{rows} of {total} rows" + (" and the header" if any(not item.row for item in bad) else "")
        if not rows:
            what = "the header"
        super().__init__(f"{what} of {path} {'are' if rows else 'is'} invalid; nothing was run. Fix them, or pass "
                         f"--skip-invalid to run the valid rows:\n  " + "\n  ".join(lines))


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting (a row's bad option is a report line, not an exit)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


def option_parser(defaults: dict[str, Any]) -> argparse.ArgumentParser:
    """The ``animate`` options as a parser whose defaults are the batch command's values (``defaults``: argparse
    destinations -> values, e.g. from :func:`~magicportrait.cli.args.args_from_config`)."""
    from magicportrait.cli.args import add_config_arguments
    from magicportrait.pipelines.animate import AnimateConfig

    parser = _Parser(prog="job row", add_help=False)
    add_config_arguments(parser, AnimateConfig, skip=("write_preview",))
    parser.set_defaults(**defaults)
    return parser


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV (with a header) or JSONL file, cells as strings (empty cells dropped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such job file. Give a CSV (with a header row) or a JSONL file, one job per "
                         "row; see the README, 'Batch runs'.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the job file as UTF-8 text ({error}).") from None
    rows = _jsonl_rows(path, text) if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else _csv_rows(text)
    if not rows:
        raise InputError(f"{path}: no jobs in the file (a CSV needs a header row and one row per job).")
    return rows


def _csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(line for line in text.splitlines() if line.strip())
    rows = []
    for raw in reader:
        extra = raw.pop(None, None)  # cells beyond the header
        row = {key.strip(): (value or "").strip() for key, value in raw.items() if key}
        if extra:
            row[EXTRA_CELLS] = ",".join(extra)
        rows.append(row)
    return rows


def _jsonl_rows(path: Path, text: str) -> list[dict[str, str]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}, line {number}: not JSON ({error.msg}); each line must be one object.") from None
        if not isinstance(value, dict):
            raise InputError(f"{path}, line {number}: expected a JSON object, got {type(value).__name__}.")
        rows.append({str(key): _cell(item) for key, item in value.items()})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_jobs(path: str | Path, defaults: dict[str, Any], skip_invalid: bool = False,
              ) -> tuple[list[Job], list[BadRow]]:
    """Every row of ``path`` validated into a :class:`Job`; raises :class:`JobFileError` listing every bad row
    unless ``skip_invalid`` (then the bad rows are returned beside the good jobs)."""
    path = Path(path)
    rows = read_rows(path)
    parser = option_parser(defaults)
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    unknown = sorted({key for row in rows for key in row if key not in RESERVED and _dest(key) not in actions})
    names = _names(rows)
    jobs, bad = [], [BadRow(0, "", f"unknown column {key!r}: not an animate option (see `magicportrait batch "
                                   f"--help`); no row can run with it.") for key in unknown]
    for number, (row, name) in enumerate(zip(rows, names, strict=True), start=1):
        problems = _row_problems(number, name, row, path.parent, parser, actions)
        if isinstance(problems, Job):
            jobs.append(problems)
        else:
            bad += [BadRow(number, name, problem) for problem in problems]
    repeated = {name for name, count in Counter(names).items() if count > 1}  # invalid rows claim names too
    for job in [job for job in jobs if job.name in repeated]:
        bad.append(BadRow(job.row, job.name, f"the name {job.name!r} is used by more than one row; names must be "
                                             "unique (they are the output folders)."))
    jobs = [job for job in jobs if job.name not in repeated]
    bad.sort(key=lambda item: item.row)
    if unknown:
        jobs = []
    if bad and not skip_invalid:
        raise JobFileError(path, bad, len(rows))
    return jobs, bad


def _names(rows: list[dict[str, str]]) -> list[str]:
    """Each row's name: its ``name`` cell, else ``<source stem>__<driving stem>`` (numbered where repeated)."""
    given = [row.get("name", "") for row in rows]
    derived = [f"{Path(row.get('source', '')).stem}__{Path(row.get('driving', '')).stem}" for row in rows]
    counts, seen, names = Counter(derived), Counter(), []
    for name, default in zip(given, derived, strict=True):
        if name:
            names.append(name)
            continue
        seen[default] += 1
        names.append(f"{default}__{seen[default]}" if counts[default] > 1 else default)
    return names


def _row_problems(number: int, name: str, row: dict[str, str], folder: Path, parser: argparse.ArgumentParser,
                  actions: dict[str, argparse.Action]) -> Job | list[str]:
    """The row's :class:`Job`, or every problem it has (each check runs, so one report lists them all)."""
    problems, values = [], {}
    checks = {"name": lambda: _check_name(name, row),
              "source": lambda: _path(row, "source", folder, IMAGE_SUFFIXES, "an image"),
              "driving": lambda: _path(row, "driving", folder, (*_video_suffixes(), MOTION_SUFFIX),
                                       "a video or a motion .npz"),
              "config": lambda: _config(_options(row), parser, actions)}
    for key, check in checks.items():
        try:
            values[key] = check()
        except MagicPortraitError as error:
            problems.append(str(error))
    if problems:
        return problems
    driving = values["driving"]
    is_motion = driving.suffix.lower() == MOTION_SUFFIX
    return Job(row=number, name=name, source=values["source"], driving=None if is_motion else driving,
               motion=driving if is_motion else None, options=_options(row), config=values["config"])


def _options(row: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in row.items() if key not in RESERVED and value != ""}


def _check_name(name: str, row: dict[str, str]) -> None:
    extra = row.get(EXTRA_CELLS)
    if extra is not None:
        raise InputError(f"more cells than the header has columns ({extra!r}).")
    if not SAFE_NAME.match(name) or name in (".", ".."):
        raise InputError(f"name {name!r} cannot be a folder name; use letters, digits, '.', '_', '+' and '-' "
                         "(not starting with '.' or '-').")


def _video_suffixes() -> tuple[str, ...]:
    from magicportrait.io.video import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


def _path(row: dict[str, str], column: str, folder: Path, suffixes: tuple[str, ...], kind: str) -> Path:
    value = row.get(column, "")
    if not value:
        raise InputError(f"no {column} (every row needs a source image and a driving video or motion).")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        raise InputError(f"{column} {value} does not exist ({path}).")
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{column} {value} is not {kind} ({', '.join(suffixes)}).")
    return path


def _config(options: dict[str, str], parser: argparse.ArgumentParser, actions: dict[str, argparse.Action]):
    """The row's AnimateConfig: the batch command's values with the row's cells parsed like their flags."""
    from magicportrait.cli.args import config_from_args
    from magicportrait.pipelines.animate import AnimateConfig

    argv = []
    for key, value in options.items():
        action = actions.get(_dest(key))
        if action is None:  # reported once for the whole file
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(_bool_flag(action, key, value))
        else:
            argv += [action.option_strings[0], value]
    config = config_from_args(AnimateConfig, parser.parse_args(argv))
    _check_assets(config)
    return config


def _check_assets(config) -> None:
    """The files the row's models load exist (a wrong path fails now, not in every job)."""
    from magicportrait.io.assets import WEIGHTS, resolve_asset

    head = config.guide.head
    for resolve in (head.flame_path, head.flame_texture_path, head.flame_eyelids_path, head.encoders.weight_paths):
        resolve()  # raises, naming the flag, when a configured file is missing
    if config.resolved_backend() == "diffusion" and resolve_asset(WEIGHTS, config.weights) is None:
        raise InputError("backend diffusion needs the released weights: pass --weights DIR (or a weights column), "
                         "or use backend geometric.")


def _dest(column: str) -> str:
    """The argparse destination a column names: ``edit-yaw``, ``--edit-yaw`` and ``edit_yaw`` are one option."""
    return column.strip().lstrip("-").replace("-", "_")


def _bool_flag(action: argparse.Action, key: str, value: str) -> str:
    text = value.strip().lower()
    if text in TRUE:
        return action.option_strings[0]
    if text in FALSE:
        return action.option_strings[1]  # --no-...
    raise InputError(f"{key} must be true or false, got {value!r}.")
