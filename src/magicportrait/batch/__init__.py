"""Many reenactments from a job file, resumable, on this machine, on a Ray cluster or on several GPUs
(``magicportrait batch``; see :mod:`magicportrait.batch.run`).

- ``jobs``: the job file (CSV / JSONL) read and validated; ``status``: each job's ``status.json``;
- ``worker``: one worker running jobs with its models kept loaded; ``engines``: where workers run (in this process,
  local processes, Ray actors; also used by ``prepare``), independent of the pipelines;
- ``report``: ``summary.csv``, ``summary.md``, contact sheets; ``run``: :func:`run_batch`, which ties them together.

Names are imported on first use (``magicportrait.batch.engines`` loads no pipeline).
"""

from __future__ import annotations

from magicportrait._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BatchConfig": "run", "BatchSummary": "run", "run_batch": "run", "EngineConfig": "engines",
    "TaskFailure": "engines", "run_tasks": "engines", "Job": "jobs", "JobFileError": "jobs", "load_jobs": "jobs",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
