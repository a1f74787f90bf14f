"""Where batch work runs: in this process, in a pool of local processes, or on a Ray cluster.

An engine maps a worker over items. The worker is made by a picklable factory once per worker process (or Ray
actor) and then called once per item, so whatever it loads (a diffusion pipeline, a tracker, a head model) is
loaded once per worker, not once per item. Results come back as items complete, in any order.

The worker itself turns an item's ordinary failure into its result (a failed job's status); the engine only deals
with workers that die (killed, out of memory, a crash in native code): the item that was running is given to
another worker, at most ``max_retries`` more times, and then reported as a :class:`TaskFailure`. The pool keeps
its size: a dead local process is replaced, a dead Ray actor is restarted by Ray.

Ray is optional (``pip install "magicportrait[ray]"``). ``address=None`` starts a private local Ray instance for
the run (and stops it after); ``auto`` or ``HOST:PORT`` joins a running cluster, whose nodes must have this
package installed and see the same input and output paths (a shared file system).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from magicportrait.config import BATCH, check_at_least, check_choices, option
from magicportrait.errors import DependencyError

logger = logging.getLogger(__name__)
WorkerFactory = Callable[[], Callable[[Any], Any]]


@dataclass
class EngineConfig:
    """Where the work runs and how many workers share it."""

    cli_group: ClassVar[str] = BATCH

    engine: Literal["local", "ray"] = option("local", "local: this machine (--workers processes); ray: a Ray cluster "
                                                      "(--address), one worker (actor) per GPU or CPU.")
    workers: int | None = option(None, "Workers in parallel, each with its own loaded models (local: processes, "
                                       "default 1; ray: actors, default one per GPU, or per CPU without GPUs).")
    address: str | None = option(None, "Ray cluster to join: auto or HOST:PORT (default: start a local Ray "
                                       "instance for this run).")
    gpus_per_worker: float | None = option(None, "GPUs per Ray worker (default: 1 when the cluster has GPUs, else "
                                                 "0: CPU workers).")
    max_retries: int = option(2, "How many more times an item runs when its worker process dies (killed, out of "
                                 "memory); then it is reported as failed.")

    def __post_init__(self) -> None:
        check_choices(self)
        check_at_least(self, 1, "workers")
        check_at_least(self, 0, "gpus_per_worker", "max_retries")


@dataclass(frozen=True)
class TaskFailure:
    """An item whose worker died on it more than ``max_retries`` times (or could not start)."""

    message: str


def run_tasks(factory: WorkerFactory, items: Sequence[Any], config: EngineConfig) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` for every item, as they complete: ``factory()(item)``, or a :class:`TaskFailure`."""
    if not items:
        return iter(())
    if config.engine == "ray":
        return _ray_tasks(factory, items, config)
    workers = min(config.workers or 1, len(items))
    if workers == 1:
        return _in_process(factory, items)
    return _pool_tasks(factory, items, workers, config.max_retries)


def _in_process(factory: WorkerFactory, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
    worker = factory()
    try:
        for index, item in enumerate(items):
            yield index, worker(item)
    finally:
        _close(worker)


def _close(worker: Any) -> None:
    close = getattr(worker, "close", None)
    if callable(close):
        close()


# ------------------------------------------------------------------------------------------ local processes

_WORKER: Any = None
_WORKER_ERROR: str | None = None


def share_cores(threads: int) -> None:
    """This process's torch and OpenCV use ``threads`` threads (workers share the machine's cores)."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _init_process(factory: WorkerFactory, threads: int) -> None:
    """Runs once per pool process: its share of the cores, then the worker (a failure is kept, not raised: a
    raising initializer would only say that the pool broke)."""
    global _WORKER, _WORKER_ERROR
    share_cores(threads)
    try:
        _WORKER = factory()
    except Exception as error:  # noqa: BLE001 - reported with every item this process is given
        _WORKER_ERROR = f"the worker could not start: {type(error).__name__}: {error}"


def _call_process_worker(item: Any) -> Any:
    if _WORKER_ERROR is not None:
        return TaskFailure(_WORKER_ERROR)
    return _WORKER(item)


def _pool_tasks(factory: WorkerFactory, items: Sequence[Any], workers: int,
                max_retries: int) -> Iterator[tuple[int, Any]]:
    """A spawn pool (fork would copy MediaPipe's and torch's threads) fed one item per worker at a time, so a
    process that dies takes down only the items that were running; those go to a fresh pool."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    queue, attempts = deque(range(len(items))), Counter()
    context = multiprocessing.get_context("spawn")
    while queue:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process,
                                 initargs=(factory, threads)) as pool:
            running: dict[Any, int] = {}
            broken = False
            while (queue or running) and not broken:
                while queue and len(running) < workers:
                    index = queue.popleft()
                    running[pool.submit(_call_process_worker, items[index])] = index
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    try:
                        yield index, future.result()
                    except BrokenProcessPool:
                        broken = True
                        yield from _retry_or_fail(index, attempts, max_retries, queue, "its worker process died")
            for future, index in running.items():  # the pool broke under these too
                future.cancel()
                yield from _retry_or_fail(index, attempts, max_retries, queue, "its worker process died")


def _retry_or_fail(index: int, attempts: Counter, max_retries: int, queue: deque,
                   what: str) -> Iterator[tuple[int, Any]]:
    attempts[index] += 1
    if attempts[index] > max_retries:
        yield index, TaskFailure(f"{what} {attempts[index]} times (--max-retries {max_retries}).")
    else:
        logger.warning("Item %d: %s; running it again (attempt %d).", index, what, attempts[index] + 1)
        queue.appendleft(index)


# ------------------------------------------------------------------------------------------------ Ray


def import_ray():
    try:
        import ray
    except ImportError:
        raise DependencyError('--engine ray needs Ray: pip install "magicportrait[ray]" (or pip install ray), '
                              "or use --engine local.") from None
    return ray


class RayWorker:
    """A Ray actor holding one worker (made once, in the actor's process)."""

    def __init__(self, factory: WorkerFactory, threads: int) -> None:
        share_cores(threads)
        self.worker, self.error = None, None
        try:
            self.worker = factory()
        except Exception as error:  # noqa: BLE001 - reported with each item, as the local pool does
            self.error = f"the worker could not start: {type(error).__name__}: {error}"

    def pid(self) -> int:
        return os.getpid()

    def run(self, item: Any) -> Any:
        return TaskFailure(self.error) if self.error else self.worker(item)


def _ray_tasks(factory: WorkerFactory, items: Sequence[Any], config: EngineConfig) -> Iterator[tuple[int, Any]]:
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        from magicportrait.console import native_stderr_captured

        with native_stderr_captured():  # Ray's start-up notes (shown if it fails)
            ray.init(address=config.address, include_dashboard=False,
                     log_to_driver=logger.isEnabledFor(logging.DEBUG), configure_logging=False)
    try:
        yield from _ray_pool(ray, factory, items, config)
    finally:
        if started:
            ray.shutdown()


def ray_pool_size(ray, config: EngineConfig) -> tuple[int, float, int]:
    """(workers, GPUs per worker, CPU threads per worker) on the connected cluster."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_worker = config.gpus_per_worker if config.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    default = int(gpus // per_worker) if per_worker else cpus
    workers = max(1, config.workers or default)
    return workers, per_worker, max(1, cpus // workers)


def _ray_pool(ray, factory: WorkerFactory, items: Sequence[Any], config: EngineConfig) -> Iterator[tuple[int, Any]]:
    workers, gpus, threads = ray_pool_size(ray, config)
    workers = min(workers, len(items))
    actor_class = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=0)(RayWorker)
    actors = [actor_class.remote(factory, threads) for _ in range(workers)]
    logger.info("Ray: %d workers (%g GPU each) on %s.", workers, gpus, config.address or "a local instance")
    queue, idle, attempts = deque(range(len(items))), deque(actors), Counter()
    running: dict[Any, tuple[int, Any]] = {}
    try:
        while queue or running:
            while queue and idle:
                index, actor = queue.popleft(), idle.popleft()
                running[actor.run.remote(items[index])] = (index, actor)
            (done,), _ = ray.wait(list(running), num_returns=1)
            index, actor = running.pop(done)
            idle.append(actor)  # a dead actor is restarted by Ray (max_restarts) and takes the next item
            try:
                yield index, ray.get(done)
            except ray.exceptions.RayActorError:
                yield from _retry_or_fail(index, attempts, config.max_retries, queue, "its Ray worker died")
            except ray.exceptions.RayTaskError as error:
                yield index, TaskFailure(f"the Ray worker failed: {error.cause!r}")
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
