"""Pruning several tasks at once: one worker process per core, one task per worker at a time.

Why processes, and not one batched forward with per-task gates (a natural question: which is faster?): a
task's circuit search is a long chain of small, dependent steps (200 mask updates on 64-prompt
minibatches, then a bisection whose next k depends on the last loss), and on the ``small`` model
each step's matrices are small enough that one core is about as fast as two (``PruneConfig.threads``
is 1 for that reason). Batching tasks into one forward would make every step wait for the slowest
task's bisection; separate processes keep every task's computation exactly as it is alone (same
seeded generator, same single-threaded kernels), so the circuits are bit-identical to a sequential
run, and the cores are busy as long as tasks are left. benchmarks/prune.py measures both.

Only the parent writes files (circuit documents, the store): workers return ``Circuit`` records
through the pool's pipe, and errors as one-line ``CircuitlabError`` messages. That pickles data between two processes of this same run, never a file
a user received.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ..config import PruneConfig
from ..errors import CircuitlabError
from ..log import logger
from .search import TaskData


@attrs.frozen(kw_only=True)
class TaskJob:
    """One task to prune: its place in the task list, its prepared data (``prune.task.prepare_task``),
    and its settings when they differ from the pool's (another pruning seed, excluded nodes)."""

    index: int
    data: TaskData
    config: PruneConfig | None = None


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count, where Linux has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(config: PruneConfig, n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` tasks: ``config.jobs``, else one per core, never more than tasks.

    On CUDA one process keeps the device; the GPU is the parallel part there."""
    if config.device.startswith("cuda"):
        return 1
    wanted = config.jobs if config.jobs is not None else available_cores()
    return max(1, min(wanted, n_jobs))


def _shareable(*entries) -> bool:
    """Spawned workers build their own registry from entry points: a plugin registered in this
    process only (``make_registry(extra_plugins=...)``) does not exist there."""
    return all(getattr(e, "dist", "") != "(in-process)" for e in entries)


_worker: dict[str, Any] = {}


def _init_worker(run: str, config: PruneConfig, log_level: int) -> None:
    """Load the model once per worker. A failure is kept and reported by the first task, as one
    picklable error, so the parent prints one line instead of the pool retrying forever."""
    sys.stdout = sys.stderr  # as the parent's CLI does for --json: stdout carries one JSON document only
    try:
        import torch

        from .. import plugins
        from ..train.runs import load_model

        logger.setLevel(log_level)
        if config.threads:
            torch.set_num_threads(config.threads)
        model, _, _ = load_model(run, device=torch.device(config.device))  # logits only: no tokenizer
        import torch._dynamo  # noqa: F401 - torch.optim imports it on first use (about 1 s): here, while the parent prepares tasks
        _worker.update(model=model, config=config, mask_entry=plugins.get("pruner", config.pruner),
                       objective_entry=plugins.get("objective", config.objective))
    except BaseException as exc:  # noqa: BLE001 - reported by _prune_in_worker
        _worker["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, CircuitlabError) else str(exc)


def _prune_in_worker(job: TaskJob) -> tuple[int, Any]:
    from .search import search_circuit

    w = _worker
    if "error" in w:
        raise CircuitlabError(f"a pruning worker could not start: {w['error']}")
    index = job.index
    try:
        circuit = search_circuit(w["model"], job.data, job.config or w["config"], progress=True,
                                 mask_entry=w["mask_entry"], objective_entry=w["objective_entry"])
    except CircuitlabError as exc:  # re-raised as its plain message: every error class unpickles from that
        raise CircuitlabError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a plugin's or torch's error, as one picklable line
        raise CircuitlabError(f"pruning {job.data.suite}:{job.data.task} failed in a worker: {type(exc).__name__}: {exc}") from None
    return index, circuit


@contextlib.contextmanager
def _sigint_ignored():
    """Workers started inside this block ignore SIGINT from their first instruction (a disposition of
    SIG_IGN survives exec, and Python then leaves it alone); the parent handles ^C and stops them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def prune_tasks(model, run: str, jobs: Iterable[TaskJob], config: PruneConfig, mask_entry, objective_entry, *,
                count: int | None = None) -> Iterator[tuple[int, Any]]:
    """(index, Circuit) for every job, as each finishes: in this process with one worker, else in
    spawned worker processes (``worker_count``). Either way each task goes through
    ``search.search_circuit``, the last step of ``prune.task.prune_task``. Use with ``contextlib.closing``:
    on any exception, an interrupt included, or when closed early, the workers are killed, so none
    outlives the command.

    ``jobs`` may be a lazy iterable, with ``count`` the most jobs it can yield: each job goes to the
    workers as soon as it is made, so workers start (interpreter, torch, the model) and prune the first
    tasks while the caller still prepares the rest (``pipeline.prune_model``)."""
    from .search import search_circuit

    if count is None:
        jobs = list(jobs)
        count = len(jobs)
    n = worker_count(config, count)
    if n > 1 and not _shareable(mask_entry, objective_entry):
        logger.info("pruning in one process: the pruner or objective is registered in this process only")
        n = 1
    if n <= 1:
        for job in list(jobs):  # every task prepared (and its verdict printed) before the first search
            yield job.index, search_circuit(model, job.data, job.config or config, progress=True,
                                            mask_entry=mask_entry, objective_entry=objective_entry)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(str(run), config, logger.getEffectiveLevel() or logging.INFO))

    def finished(pending, timeout=None):
        """Yield the results of the futures done within ``timeout`` (None: wait for the first), the
        circuits before any error, so that an error still leaves them to the caller; return those left."""
        done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: f.exception() is not None):
            yield future.result()
        return pending

    try:
        pending: set = set()
        started = False
        for job in jobs:  # made between submissions, with ^C handled as usual
            if not started:
                logger.info(f"pruning in {n} worker processes")
                started = True
            with _sigint_ignored():  # a worker spawned by this submission ignores SIGINT
                pending.add(pool.submit(_prune_in_worker, job))
            # circuits finished while this task was prepared go to the caller before the next one is,
            # so an interrupt during a later preparation keeps them
            pending = yield from finished(pending, timeout=0)
        while pending:
            pending = yield from finished(pending)
    except BrokenProcessPool:
        raise CircuitlabError("a pruning worker process died (out of memory?); rerun with --jobs 1, "
                              "which keeps the circuits finished so far") from None
    finally:
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:  # shutdown() lets running tasks finish; an error or ^C here must not wait
            if proc.is_alive():
                proc.kill()
        for proc in processes:
            proc.join()
