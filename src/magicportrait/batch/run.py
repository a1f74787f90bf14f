"""``magicportrait batch JOBS -o OUT``: every row of a job file reenacted into ``OUT/<name>/``, resumably.

1. The job file is read and every row validated (:mod:`magicportrait.batch.jobs`); nothing runs if a row is bad
   (unless ``skip_invalid``).
2. This process's shard of the rows is picked (``shard_index`` of ``num_shards``; defaults from Slurm's array
   variables or from ``RANK`` / ``WORLD_SIZE`` as torchrun and accelerate set them): row ``i`` (from 0) belongs to
   shard ``i % num_shards``, so shards partition the rows and never write the same folder.
3. Jobs already done are skipped, failed ones too unless ``retry_failed``; the rest run on the engine
   (:mod:`magicportrait.batch.engines`: here, local processes or Ray), each worker keeping its models loaded
   (:mod:`magicportrait.batch.worker`).
4. ``summary.csv`` / ``summary.md`` (and contact sheets with ``evaluate``) are written over every row of the file.

Python::

    from magicportrait.batch import BatchConfig, run_batch
    summary = run_batch("jobs.csv", "out/", BatchConfig(evaluate=True))
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tqdm.auto import tqdm

from magicportrait.batch.engines import EngineConfig, TaskFailure, run_tasks
from magicportrait.batch.jobs import BadRow, Job, load_jobs
from magicportrait.batch.report import write_summary
from magicportrait.batch.status import DONE, FAILED, needs_run, read_status, write_status
from magicportrait.batch.worker import GPU_IF_ANY, WorkerFactory
from magicportrait.config import BATCH, check_at_least, option
from magicportrait.errors import InputError

logger = logging.getLogger(__name__)
SHARD_VARIABLES = (("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"), ("RANK", "WORLD_SIZE"))


@dataclass
class BatchConfig:
    """Options of ``magicportrait batch`` (beside the ``animate`` options every row starts from)."""

    cli_group: ClassVar[str] = BATCH

    retry_failed: bool = option(False, "Run failed jobs again (a rerun always skips finished jobs and redoes "
                                       "interrupted ones).")
    skip_invalid: bool = option(False, "Run the valid rows when some are invalid (they are listed), instead of "
                                       "running nothing.")
    evaluate: bool = option(False, "Evaluate each result (CSIM, relative pose, expression, motion transfer, "
                                   "artefacts, face lost) and write a contact sheet of all results.")
    shard_index: int | None = option(None, "This process's shard (from 0); default: $SLURM_ARRAY_TASK_ID (less "
                                           "$SLURM_ARRAY_TASK_MIN), else $RANK, else 0.")
    num_shards: int | None = option(None, "How many shards share the rows; default: $SLURM_ARRAY_TASK_COUNT, else "
                                          "$WORLD_SIZE, else 1.")
    show_progress: bool = option(True, "Show progress bars.")
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        check_at_least(self, 0, "shard_index")
        check_at_least(self, 1, "num_shards")
        index, count = self.shard()
        if index >= count:
            raise InputError(f"--shard-index {index} is not below --num-shards {count} (shards count from 0).")

    def shard(self) -> tuple[int, int]:
        """(index, count) of this process's shard: the options, else the scheduler's environment, else (0, 1)."""
        index, count = self.shard_index, self.num_shards
        for index_name, count_name in SHARD_VARIABLES:
            if index is None and count is None and os.environ.get(index_name) and os.environ.get(count_name):
                offset = int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0)) if index_name.startswith("SLURM") else 0
                index, count = int(os.environ[index_name]) - offset, int(os.environ[count_name])
        return (0 if index is None else index), (1 if count is None else count)


@dataclass
class BatchSummary:
    """What a batch run did (its shard) and the summary files (over every row)."""

    output_dir: Path
    jobs: list[Job]
    ran: dict[str, dict[str, Any]]  # name -> final status of the jobs this run ran
    skipped_done: list[str]
    skipped_failed: list[str]
    invalid: list[BadRow]
    files: dict[str, Path]

    @property
    def failed(self) -> list[str]:
        return [name for name, status in self.ran.items() if status.get("state") != DONE]


def run_batch(jobs_file: str | Path, output_dir: str | Path, config: BatchConfig | None = None,
              animate_config=None, defaults: dict[str, Any] | None = None) -> BatchSummary:
    """Run the job file's rows (this process's shard) into ``output_dir``; see the module docstring.

    Every row starts from ``animate_config`` (an ``AnimateConfig``; default: the defaults), or from ``defaults``
    (argparse destinations -> values, as the CLI passes them), and overrides it with its own cells.
    """
    from magicportrait.cli.args import args_from_config
    from magicportrait.io.atomic import ensure_writable_dir
    from magicportrait.pipelines.animate import AnimateConfig

    config = config or BatchConfig()
    if config.engine.engine == "ray":
        from magicportrait.batch.engines import import_ray

        import_ray()  # not installed: say so before anything is written
    if defaults is None:
        defaults = args_from_config(animate_config or AnimateConfig())
    defaults = {**defaults, "show_progress": False}  # one progress bar: the batch's
    jobs, invalid = load_jobs(jobs_file, defaults, config.skip_invalid)
    for bad in invalid:
        logger.warning("Skipping invalid %s", bad)
    output_dir = ensure_writable_dir(output_dir)
    index, count = config.shard()
    mine = [job for position, job in enumerate(jobs) if position % count == index]
    statuses = {job.name: read_status(output_dir, job.name) for job in mine}
    todo = [job for job in mine if needs_run(output_dir, job.name, statuses[job.name], config.retry_failed,
                                             config.evaluate)]
    waiting = {job.name for job in todo}
    done = [job.name for job in mine if job.name not in waiting and statuses[job.name]["state"] == DONE]
    failed = [job.name for job in mine if job.name not in waiting and job.name not in done]
    logger.info("%d jobs%s: %d to run, %d already done, %d failed before (--retry-failed runs them).", len(mine),
                f" in shard {index} of {count}" if count > 1 else "", len(todo), len(done), len(failed))
    ran = _run(todo, output_dir, config)
    files = write_summary(output_dir, jobs, contact_sheet=config.evaluate)
    return BatchSummary(output_dir, jobs, ran, done, failed, invalid, files)


def _run(todo: list[Job], output_dir: Path, config: BatchConfig) -> dict[str, dict[str, Any]]:
    device = GPU_IF_ANY if config.engine.engine == "ray" else _process_device()
    factory = WorkerFactory(output_dir, config.evaluate, device)
    ran: dict[str, dict[str, Any]] = {}
    with tqdm(total=len(todo), desc="batch", unit="job", disable=not config.show_progress) as progress:
        for index, result in run_tasks(factory, todo, config.engine):
            job = todo[index]
            if isinstance(result, TaskFailure):  # its worker died: the job never wrote its final status
                result = write_status(output_dir, job.name, state=FAILED, **job.status_fields(),
                                      error=result.message)
            ran[job.name] = result
            if result.get("state") != DONE:
                logger.warning("%s failed: %s", job.name, result.get("error"))
            progress.update(1)
            progress.set_postfix(failed=sum(status.get("state") != DONE for status in ran.values()))
    return ran


def _process_device() -> str | None:
    """One GPU per process under torchrun / accelerate (``LOCAL_RANK``) when CUDA is there; else the jobs' own."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.set_device(int(local_rank))
    return f"cuda:{int(local_rank)}"
