"""``--dry-run``: the cells of a spec and an estimated time for each, from step costs measured here.

For every distinct model shape the estimate times (in CPU seconds, so the figures describe this machine
running the bench alone, however busy it is now), with the spec's thread count:
two training steps (forward, backward, AdamW, the schedule's masks), one mask-optimisation step of the
pruner (masked forward and backward over ``2 * batch_pairs`` prompts) and one masked pass over the
train prompts, in pairs that share ``SHARED_PREFIX`` of their tokens (each pair runs as one packed
row, ``tasks.packing``), the mask step in the cells' ``PruneConfig.mask_dtype``. A model costs ``steps x train step`` (zero when cached); a cell costs
``attempts x mask steps x mask step + evaluations x train pass`` (bisection, validations and the 42
faithfulness-curve passes, the test passes scaled by n_test / n_train). Prompts are taken as
``PROMPT_TOKENS`` long. Cells of models not evaluated yet are listed as if every task were solved (an
upper bound), or as if the first ``assume_solved`` tasks were; the wall time is a list-scheduling
simulation over the workers.
"""

from __future__ import annotations

import heapq
import time
from typing import Any

import attrs

from ..config import ModelConfig, PruneConfig, TrainConfig
from .documents import CellDocument, ModelDocument
from .plan import Cell, ModelSpec, cells_for, model_specs
from .spec import BenchSpec
from .work import cell_path, model_cache_dir, model_path, read_done

PROMPT_TOKENS = 32  # typical task prompt length in tokens (the standard sets run 10-60)
MASK_DTYPE = attrs.fields(PruneConfig).mask_dtype.default  # bench cells keep PruneConfig's default
SHARED_PREFIX = 0.7  # share of a prompt the two prompts of a pair share (python suite: 0.72 on average)
BISECTION_EVALS = 16  # train-set passes of the bisection (walk up x1.3, then halve)
ATTEMPTS = 1.3  # mask trainings per cell on average (a collapsed mask is retrained)
TEST_PASSES = 6 + 42  # validations + faithfulness curves (2 levels x 2 rankings x 10 points + full, empty)


def _time(fn, repeats: int = 2) -> float:
    """CPU seconds per call: with one thread this is the wall time on an otherwise idle machine, and it
    stays so when other jobs share the cores (wall time would count their turns too)."""
    fn()  # warm-up
    t0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - t0) / repeats


def measure(shape: ModelConfig, train: TrainConfig, spec: BenchSpec) -> dict[str, float]:
    """Seconds of one training step, one mask step and one masked pass over the train prompts."""
    import torch

    from .. import plugins
    from ..model.gpt import GPT
    from ..plugins import calls
    from ..prune.evaluator import Evaluator
    from ..tasks.types import TaskBatch
    from ..train.loop import make_optimizer, train_step

    old = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        gen = torch.Generator().manual_seed(0)
        model = GPT(shape)
        opt = make_optimizer(model, train)
        schedule = calls.build_schedule(plugins.get("sparsity", train.sparsity), train)  # errors name the plugin
        x = torch.randint(0, shape.vocab_size, (train.batch_size, shape.n_ctx), generator=gen)
        step = _time(lambda: train_step(model, model, opt, schedule, x, x, train.steps - 1, torch.device("cpu")))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        rows = 2 * spec.prune.n_train
        ids = torch.randint(0, shape.vocab_size, (rows, PROMPT_TOKENS), generator=gen)
        ids[1::2, : int(SHARED_PREFIX * PROMPT_TOKENS)] = ids[0::2, : int(SHARED_PREFIX * PROMPT_TOKENS)]
        batch = TaskBatch(ids=ids, last=torch.full((rows,), PROMPT_TOKENS - 1), target=ids[:, 0], contrast=ids[:, 1])
        ev = Evaluator(model, batch, torch.zeros(_nodes(shape)))
        gate = torch.ones(ev.num_nodes, requires_grad=True)
        minibatch = torch.arange(min(rows, 2 * spec.prune.batch_pairs))

        def mask_step():
            ev.last_logits(gate, minibatch, dtype=MASK_DTYPE).logsumexp(-1).mean().backward()

        mask = _time(mask_step)
        with torch.no_grad():
            full_pass = _time(lambda: ev.diffs(gate.detach()), repeats=1)
    finally:
        torch.set_num_threads(old)
    return {"train_step": step, "mask_step": mask, "train_pass": full_pass}


def _nodes(shape: ModelConfig) -> int:
    from ..model.nodes import NodeSpace

    return NodeSpace.from_config(shape).num_nodes


def _mask_steps(spec: BenchSpec, pruner: str) -> int:
    from .. import plugins

    return spec.prune.steps or getattr(plugins.get("pruner", pruner).factory, "steps", 200)


def cell_seconds(spec: BenchSpec, cell: Cell, costs: dict[str, float]) -> float:
    test_pass = costs["train_pass"] * spec.prune.n_test / spec.prune.n_train
    return (ATTEMPTS * _mask_steps(spec, cell.pruner) * costs["mask_step"]
            + BISECTION_EVALS * costs["train_pass"] + TEST_PASSES * test_pass + 1.0)


def _schedule(models: list[tuple[float, str]], cells: list[tuple[str, float]], workers: int) -> float:
    """Wall time of training ``models`` (seconds, id), longest first, then their ``cells`` (model id,
    seconds) once their model is ready, each on the first free of ``workers`` processes."""
    free = [0.0] * workers
    ready: dict[str, float] = {}
    for seconds, mid in sorted(models, reverse=True):
        start = heapq.heappop(free)
        ready[mid] = start + seconds
        heapq.heappush(free, ready[mid])
    end = max(ready.values(), default=0.0)
    for when, seconds in sorted((ready.get(mid, 0.0), s) for mid, s in cells):
        start = max(heapq.heappop(free), when)
        heapq.heappush(free, start + seconds)
        end = max(end, start + seconds)
    return end


def _model_cells(spec: BenchSpec, m: ModelSpec, docs: dict[str, dict], all_tasks: list[str]) -> list[Cell]:
    if m.kind == "init":
        twin = docs.get(m.twin)
        return cells_for(spec, m, [], twin["solved"] if twin else all_tasks)
    doc = docs.get(m.model_id)
    return cells_for(spec, m, doc["solved"] if doc else all_tasks)


def dry_run(spec: BenchSpec, out: str, workers: int, assume_solved: int | None = None) -> dict[str, Any]:
    """Every model and cell of ``spec`` with its state (done, cached, to run) and estimated seconds."""
    models = model_specs(spec)
    docs = {m.model_id: d.to_json() for m in models
            if (d := read_done(model_path(out, m.model_id), ModelDocument)) is not None}
    costs: dict[tuple, dict[str, float]] = {}
    model_rows, cell_rows, model_jobs, cell_jobs = [], [], [], []
    for m in models:
        key = (m.shape, m.train.sparsity, m.train.batch_size)
        if key not in costs:
            costs[key] = measure(m.shape, m.train, spec)
        cached = (model_cache_dir(m) / "model.safetensors").exists()
        seconds = 0.0 if cached or m.kind == "init" else m.train.steps * costs[key]["train_step"] * 1.05
        model_rows.append({**m.describe(), "state": "cached" if cached else "to train", "seconds": seconds,
                           "evaluated": m.model_id in docs})
        model_jobs.append((seconds, m.model_id))
        for cell in _model_cells(spec, m, docs, list(spec.tasks)[:assume_solved]):
            done = read_done(cell_path(out, cell), CellDocument) is not None
            s = 0.0 if done else cell_seconds(spec, cell, costs[key])
            cell_rows.append({"cell_id": cell.cell_id, "state": "done" if done else "to run", "seconds": s,
                              "exact": m.model_id in docs or (m.kind == "init" and m.twin in docs)})
            cell_jobs.append((m.twin if m.kind == "init" else m.model_id, s))
    return {"kind": "circuitlab-bench-dry-run", "spec": spec.source, "workers": workers, "threads": spec.threads,
            "step_costs": [{"shape": {"d_model": k[0].d_model, "n_layer": k[0].n_layer, "n_ctx": k[0].n_ctx},
                            "sparsity": k[1], **v} for k, v in costs.items()],
            "models": model_rows, "cells": cell_rows,
            "total_seconds": sum(r["seconds"] for r in model_rows) + sum(r["seconds"] for r in cell_rows),
            "wall_seconds": _schedule(model_jobs, cell_jobs, workers),
            "assume_solved": assume_solved,
            "upper_bound": assume_solved is None and not all(r["exact"] for r in cell_rows)}
