"""One batch worker: runs jobs one after another in its process, keeping what is expensive to load.

Kept between jobs: the generator pipelines (the diffusion weights and text embedding, or the geometric generator),
their head model, the face tracker, the paper's encoders and the prepared portraits (a portrait in several rows is
tracked and fitted once; :class:`~magicportrait.pipelines.run_cache.RunCache`), and the evaluation networks. Jobs
that differ only in per-run options (motion edits, sampler, seed, face) share one pipeline; options that change
what is loaded (weights, FLAME, the tracker) load another, and the least recently used is dropped beyond
:data:`MAX_PIPELINES`.

Each job writes ``OUT/<name>/`` as ``animate`` does (atomically: a failed job leaves its earlier result, or
nothing, plus its ``status.json``). No exception escapes a job: it becomes the job's ``failed`` status.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from magicportrait.batch.jobs import Job
from magicportrait.batch.status import (
    DONE,
    FAILED,
    REWRITTEN_FIELDS,
    RUNNING,
    is_finished,
    read_status,
    write_status,
)
from magicportrait.errors import MagicPortraitError

logger = logging.getLogger(__name__)
MAX_PIPELINES = 2
GPU_IF_ANY = "gpu_if_any"
# The real-photo protocol (docs/metrics.md): identity, relative pose, expression, motion transfer, artefacts.
EVALUATION_METRICS = ("csim", "apd", "aed", "motion_transfer", "artefact_frames", "duplication")


@dataclass(frozen=True)
class WorkerFactory:
    """Makes a :class:`BatchWorker` in the worker's own process (picklable, for process pools and Ray)."""

    output_dir: Path
    evaluate: bool = False
    # e.g. "cuda:1": every job's networks there (one GPU per process); "gpu_if_any": on the GPU this worker was
    # given, if any (a Ray actor sees only the GPUs it was assigned); None: each job's own --device
    device: str | None = None

    def __call__(self) -> BatchWorker:
        device = self.device
        if device == GPU_IF_ANY:
            import torch

            device = "cuda" if torch.cuda.is_available() else None
        return BatchWorker(self.output_dir, self.evaluate, device)


class BatchWorker:
    """Runs :class:`Job` s into ``output_dir`` (see the module docstring); call it with a job, get its status."""

    def __init__(self, output_dir: str | Path, evaluate: bool = False, device: str | None = None) -> None:
        from magicportrait.pipelines.run_cache import RunCache

        self.output_dir = Path(output_dir)
        self.evaluate = evaluate
        self.device = device
        self.cache = RunCache()
        self._pipelines: OrderedDict[str, Any] = OrderedDict()
        self._evaluator = None

    def __call__(self, job: Job) -> dict[str, Any]:
        finished = read_status(self.output_dir, job.name)
        if self.evaluate and is_finished(self.output_dir, job.name, finished):  # done earlier, not evaluated
            with job_log_prefix(job.name):
                kept = {key: value for key, value in finished.items() if key not in REWRITTEN_FIELDS}
                return write_status(self.output_dir, job.name, **kept, **self._evaluated(job))
        started = time.perf_counter()
        common = {**job.status_fields(), "options": job.options}
        write_status(self.output_dir, job.name, state=RUNNING, **common)
        with job_log_prefix(job.name):
            fields = self._attempt(job)
        seconds = round(time.perf_counter() - started, 3)
        return write_status(self.output_dir, job.name, **common, **fields, seconds=seconds)

    def _attempt(self, job: Job) -> dict[str, Any]:
        """The job's final status fields: done (with its metrics when evaluating) or failed (with the error)."""
        try:
            result, backend = self._run(job)
            fields = {"state": DONE, "backend": backend, "frames": result.num_frames, "fps": result.fps}
        except MagicPortraitError as error:
            fields = {"state": FAILED, "error": str(error)}
        except Exception as error:  # noqa: BLE001 - one job's bug must not stop the others; its trace is kept
            logger.debug("Job %s failed:\n%s", job.name, traceback.format_exc())
            fields = {"state": FAILED, "error": f"{type(error).__name__}: {error}"}
        if self.evaluate and fields["state"] == DONE:
            fields.update(self._evaluated(job))
        return fields

    def _evaluated(self, job: Job) -> dict[str, Any]:
        """``{"metrics": ...}``, or ``{"evaluation_error": ...}`` when the evaluation fails (the result stays)."""
        try:
            return {"metrics": self._evaluate(job)}
        except Exception as error:  # noqa: BLE001 - a result the evaluation cannot read is still a result
            logger.warning("Evaluating %s failed: %s", job.name, error)
            return {"evaluation_error": f"{type(error).__name__}: {error}"}

    def close(self) -> None:
        self.cache.close()
        self._pipelines.clear()

    # ------------------------------------------------------------------------------------------ internals

    def _run(self, job: Job):
        config = self._on_device(job.config)
        pipeline = self._pipeline(config)
        result = pipeline.run(job.source, job.driving, self.output_dir / job.name, motion=job.motion)
        return result, result.backend

    def _on_device(self, config):
        """The job's config with its networks on this worker's device (when the worker has one)."""
        if self.device is None:
            return config
        guide = replace(config.guide, device=self.device)
        return replace(config, guide=guide, generation=replace(config.generation, device=self.device))

    def _pipeline(self, config):
        """The loaded pipeline for ``config`` (loaded on first use), with ``config`` as its per-run options."""
        from magicportrait.pipelines.animate import load_pipeline

        key = pipeline_key(config)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            pipeline = load_pipeline(config)
            pipeline.cache = self.cache
            self._pipelines[key] = pipeline
            while len(self._pipelines) > MAX_PIPELINES:
                self._pipelines.popitem(last=False)
        self._pipelines.move_to_end(key)
        pipeline.config = config
        return pipeline

    def _evaluate(self, job: Job) -> dict[str, Any]:
        """The real-photo protocol's metrics of the job's result (written to ``OUT/<name>/metrics/`` too)."""
        from magicportrait.evaluation.suite import EvaluationConfig, Evaluator
        from magicportrait.pipelines.evaluate import evaluate_files

        if job.driving is None:
            return {"note": "a saved motion without a driving video: nothing to compare the motion with"}
        config = EvaluationConfig(metrics=",".join(EVALUATION_METRICS), pose="relative", write_plots=False,
                                  show_progress=False, device=self.device or "cpu")
        self._evaluator = self._evaluator or Evaluator(config)
        folder = self.output_dir / job.name
        report, _ = evaluate_files(folder, job.driving, job.source, None, folder / "metrics", config,
                                   self._evaluator)
        return {**report.values, "face_lost": report.info.get("face_lost")}


@contextmanager
def job_log_prefix(name: str) -> Iterator[None]:
    """The package's log lines name the job while it runs (``b: 4 faces found ...``): jobs interleave."""
    previous = logging.getLogRecordFactory()

    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.startswith("magicportrait"):
            record.msg = f"{name}: {record.msg}"
        return record

    logging.setLogRecordFactory(make_record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def pipeline_key(config) -> str:
    """What a loaded pipeline depends on: the generator and its weights, the head model, the devices."""
    backend = config.resolved_backend()
    loaded = (backend, config.guide.head, config.guide.device)
    if backend == "diffusion":
        generation = config.generation
        loaded += (config.weights_path(), config.sd15, config.vae, config.motion_module, config.prompt,
                   generation.device, generation.torch_dtype)
    return repr(loaded)
