"""Pruning several tasks at once: one worker process per core, one task per worker at a time.

Why processes, and not one batched forward with per-task gates (issue 13 asked which is faster): a
task's circuit search is a long chain of small, dependent steps (200 mask updates on 64-prompt
minibatches, then a bisection whose next k depends on the last loss), and on the ``small`` model
each step's matrices are small enough that one core is about as fast as two (``PruneConfig.threads``
is 1 for that reason). Batching tasks into one forward would make every step wait for the slowest
task's bisection; separate processes keep every task's computation exactly as it is alone (same
seeded generator, same single-threaded kernels), so the circuits are bit-identical to a sequential
run, and the cores are busy as long as tasks are left. benchmarks/prune.py measures both.

Only the parent writes files (circuit documents, the store): workers return ``Circuit`` records
through the pool's pipe. That pickles data between two processes of this same run, never a file
a user received.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import attrs

from ..config import PruneConfig
from ..log import logger


@attrs.frozen(kw_only=True)
class TaskJob:
    """One task to prune: its place in the task list, its encoded pairs, ablation values and provenance."""

    index: int
    task: str
    suite: str
    train: Any  # TaskBatch
    test: Any  # TaskBatch
    values: Any  # (num_nodes,) tensor
    provenance: dict


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


_worker: dict[str, Any] = {}


def _init_worker(run: str, config: PruneConfig, log_level: int) -> None:
    import torch

    from .. import plugins
    from ..train.runs import load_model

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and terminates the pool
    logger.setLevel(log_level)
    torch.set_num_threads(config.threads or 1)
    model, _, _ = load_model(run, device=torch.device(config.device))
    _worker.update(model=model, config=config, mask_entry=plugins.get("pruner", config.pruner),
                   objective_entry=plugins.get("objective", config.objective))


def _prune_in_worker(job: TaskJob) -> tuple[int, Any]:
    from .search import prune_task

    w = _worker
    circuit = prune_task(w["model"], job.train, job.test, job.values, w["config"], task=job.task, suite=job.suite,
                         provenance=job.provenance, progress=True, mask_entry=w["mask_entry"],
                         objective_entry=w["objective_entry"])
    return job.index, circuit


def prune_tasks(model, run: str, jobs: list[TaskJob], config: PruneConfig, mask_entry, objective_entry) -> Iterator[tuple[int, Any]]:
    """(index, Circuit) for every job, as each finishes: in this process with one worker, else in a pool
    of spawned worker processes (``worker_count``). A pool is terminated on any exception here, an
    interrupt included, so no worker outlives the command."""
    from .search import prune_task

    n = worker_count(config, len(jobs))
    if n <= 1:
        for job in jobs:
            yield job.index, prune_task(model, job.train, job.test, job.values, config, task=job.task,
                                        suite=job.suite, provenance=job.provenance, progress=True,
                                        mask_entry=mask_entry, objective_entry=objective_entry)
        return
    import multiprocessing

    logger.info(f"pruning {len(jobs)} tasks in {n} worker processes")
    pool = multiprocessing.get_context("spawn").Pool(
        n, initializer=_init_worker, initargs=(str(run), config, logger.getEffectiveLevel() or logging.INFO))
    try:
        yield from pool.imap_unordered(_prune_in_worker, jobs)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
