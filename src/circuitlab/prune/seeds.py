"""Seed distributions: one task pruned with several pruning seeds, and what their circuits share.

A circuit is one answer from one pruning seed (the mask's initialisation and minibatch order). With
``PruneConfig.seeds = N`` a task is pruned with seeds ``seed, seed + 1, ..., seed + N - 1`` (in the
worker processes of ``prune.parallel``, side by side with the other tasks); the circuit document is
seed ``seed``'s circuit (so ``N = 1`` is the plain prune), with the distribution under ``"seeds"``:

- ``frequency``: per node, the share of seeds whose circuit keeps it (nodes kept by none are left out);
- ``core``: the nodes kept by at least ``core_share`` of the seeds (default 0.5: a majority; 1.0 asks
  for the nodes every seed keeps); ``union``: the nodes any seed keeps;
- ``sizes``, ``losses``, ``train_losses``, ``reached``: per seed; ``jaccard``: the N x N matrix of
  node-set Jaccard similarities (two empty circuits count as identical), with its off-diagonal mean
  and minimum.
"""

from __future__ import annotations

import collections
import contextlib
import statistics
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ..config import PruneConfig
from .circuit import Circuit
from .parallel import TaskJob
from .search import TaskData


def seed_configs(config: PruneConfig) -> list[PruneConfig]:
    """One config per pruning seed: ``config`` itself first, then seeds ``seed + 1`` ... ."""
    return [config] + [attrs.evolve(config, seed=config.seed + i) for i in range(1, config.seeds)]


def seed_jobs(job: TaskJob, config: PruneConfig) -> list[TaskJob]:
    """The jobs of one task, one per pruning seed (all with the task's index)."""
    return [attrs.evolve(job, config=c) for c in seed_configs(config)]


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|a & b| / |a | b|; 1 for two empty sets."""
    a, b = set(a), set(b)
    return 1.0 if not (a or b) else len(a & b) / len(a | b)


def circuit_seed(circuit: Circuit) -> int:
    return int(circuit.provenance["prune_config"]["seed"])


def seed_distribution(circuits: list[Circuit], core_share: float = 0.5) -> dict[str, Any]:
    """The ``"seeds"`` document of circuits of one task pruned with different seeds (see the module)."""
    n = len(circuits)
    counts: collections.Counter = collections.Counter()
    order: dict[str, int] = {}
    for c in circuits:
        counts.update(c.node_names)
        order.update(zip(c.node_names, c.kept.nonzero().flatten().tolist(), strict=True))
    names = sorted(counts, key=lambda name: (-counts[name], order[name]))
    frequency = {name: counts[name] / n for name in names}
    matrix = [[jaccard(a.node_names, b.node_names) for b in circuits] for a in circuits]
    off = [matrix[i][j] for i in range(n) for j in range(i + 1, n)]
    sizes = [c.node_count for c in circuits]
    return {"n": n, "seeds": [circuit_seed(c) for c in circuits], "core_share": core_share,
            "core": [name for name in names if frequency[name] >= core_share - 1e-12],
            "union": names, "frequency": frequency, "sizes": sizes,
            "size_min": min(sizes), "size_median": statistics.median(sizes), "size_max": max(sizes),
            "edges": [c.edge_count for c in circuits], "losses": [c.loss for c in circuits],
            "train_losses": [c.train_loss for c in circuits], "reached": [c.reached for c in circuits],
            "jaccard": matrix, "jaccard_mean": statistics.fmean(off) if off else None,
            "jaccard_min": min(off) if off else None}


def collect_seeds(finished: Iterable[tuple[int, Circuit]], config: PruneConfig
                  ) -> Iterator[tuple[int, Circuit, dict | None]]:
    """(index, circuit of seed ``config.seed``, ``"seeds"`` document or None for one seed) per task,
    as soon as all of a task's seeds have finished, whatever order the workers finish in."""
    groups: dict[int, list[Circuit]] = collections.defaultdict(list)
    for i, circuit in finished:
        if config.seeds == 1:
            yield i, circuit, None
            continue
        groups[i].append(circuit)
        if len(groups[i]) == config.seeds:
            circuits = sorted(groups.pop(i), key=circuit_seed)
            yield i, circuits[0], seed_distribution(circuits, config.core_share)


def seeds_row(doc: dict[str, Any] | None) -> dict[str, Any]:
    """The summary row's seed figures of a circuit document (none for one seed)."""
    s = (doc or {}).get("seeds")
    if not s:
        return {}
    return {"seeds": {"n": s["n"], "core": len(s["core"]), "union": len(s["union"]), "size_min": s["size_min"],
                      "size_median": s["size_median"], "size_max": s["size_max"], "jaccard_mean": s["jaccard_mean"]}}


def _prune_jobs(model, run, jobs: list[TaskJob], config: PruneConfig) -> Iterator[tuple[int, Circuit]]:
    """(index, Circuit) for each job: the one place seed runs and backup rounds prune a task (checkpoint
    tracks prune through ``pipeline.prune_model``); ``prune.parallel`` runs the jobs in worker processes
    when ``run`` is a run folder, else in this process."""
    from .. import plugins
    from .parallel import prune_tasks

    mask_entry, objective_entry = plugins.get("pruner", config.pruner), plugins.get("objective", config.objective)
    pool = config if run is not None else attrs.evolve(config, jobs=1)  # workers load the model from its folder
    jobs = [job if job.config is not None else attrs.evolve(job, config=config) for job in jobs]
    with contextlib.closing(prune_tasks(model, run, jobs, pool, mask_entry, objective_entry)) as finished:
        yield from finished


@attrs.frozen(kw_only=True)
class SeedCircuits:
    """One task's circuits over pruning seeds: ``circuits[0]`` is seed ``config.seed``'s."""

    circuits: tuple[Circuit, ...]
    distribution: dict[str, Any] = attrs.field(repr=False)

    @property
    def circuit(self) -> Circuit:
        return self.circuits[0]


def prune_seeds(model, train, test, values, config: PruneConfig, *, task: str = "task", run=None,
                provenance: dict | None = None) -> SeedCircuits:
    """Prune one task (encoded ``train``/``test`` pairs, ablation ``values``; ``task`` named ``SUITE:TASK``
    or bare) with ``config.seeds`` seeds.

    With ``run`` (the model's run folder) the seeds are pruned in worker processes (``config.jobs``);
    without, one after the other in this process."""
    suite, _, name = task.rpartition(":")  # "SUITE:TASK" or a bare task name
    job = TaskJob(index=0, data=TaskData(train=train, test=test, values=values, task=name, suite=suite,
                                       provenance=provenance or {}))
    circuits = sorted((c for _, c in _prune_jobs(model, run, seed_jobs(job, config), config)), key=circuit_seed)
    return SeedCircuits(circuits=tuple(circuits), distribution=seed_distribution(circuits, config.core_share))
