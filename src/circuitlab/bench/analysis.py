"""What a results table says: matched-loss ratios with bootstrap intervals, controls, seed spread, CPR/CMD.

Everything here reads only the rows of ``results.csv`` (``table.read_table``). Definitions (docs/bench.md):

- A (model, task) is **solved** when the full model's verdict on the task is ``solved`` or
  ``borderline`` (``circuitlab.tasks.verdict``: the 95% Wilson interval of its test accuracy against
  the spec's ``prune.min_accuracy``, the rule of ``circuitlab prune``) and the circuit reached the
  target loss on the train pairs. A model's size on a task set is the geometric mean over
  the tasks of its circuit size (itself the geometric mean over pruning seeds).
- **Matched loss**: for a sparse model at validation loss L, take the nearest dense models with loss
  >= L and <= L (same pruner and objective), keep the tasks all three solve, and interpolate the dense
  size at L linearly in (log loss, log size). The ratio is dense / sparse (> 1: sparse circuits are
  smaller). When no dense model lies on one side of L, the sweep does not bracket it and no ratio is
  given. The interval resamples tasks, and pruning seeds within each task, with replacement; models of
  one group that differ only in training seed are combined by a geometric mean (and resampled too).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np


def full_model_solves(r: dict) -> bool:
    """The full model solves the row's task: its verdict (the ``verdict`` column) is not ``unsolved``.

    Tables written before that column judge the point accuracy against the cell's own
    ``min_accuracy`` (its prune config)."""
    if r.get("verdict"):
        return r["verdict"] != "unsolved"
    threshold = (r.get("prune_config") or {}).get("min_accuracy", 0.0)
    return (r["full_model_accuracy"] or 0) >= threshold


def _gm(values) -> float:
    """Geometric mean of counts (a count of 0 counts as 1)."""
    return geo(max(float(v), 1.0) for v in values)


def geo(values) -> float:
    """Geometric mean of positive numbers (ratios)."""
    vals = [float(v) for v in values]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else math.nan


def primary(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "done" and r["control"] == "none"]


def sizes(rows: list[dict]) -> dict[tuple, dict[str, dict[str, list[int]]]]:
    """(model_id, pruner, objective) -> task -> {"nodes": [per seed], "edges": [...]}, solved tasks only."""
    out: dict[tuple, dict] = defaultdict(lambda: defaultdict(lambda: {"nodes": [], "edges": []}))
    for r in primary(rows):
        if r["kind"] == "trained" and r["reached"] and full_model_solves(r):
            cell = out[(r["model_id"], r["pruner"], r["objective"])][r["task"]]
            cell["nodes"].append(r["nodes"])
            cell["edges"].append(r["edges"])
    return out


def models(rows: list[dict]) -> dict[str, dict]:
    keys = ("model_id", "group", "kind", "sparsity", "density", "width", "train_steps", "train_seed", "val_loss")
    return {r["model_id"]: {k: r[k] for k in keys} for r in rows}


def _interp(loss: float, lo: tuple[float, float], hi: tuple[float, float]) -> float:
    """Size at ``loss`` on the line through (log loss, log size) points ``lo`` and ``hi``."""
    (l1, s1), (l2, s2) = lo, hi
    if math.isclose(l1, l2):
        return math.exp((math.log(s1) + math.log(s2)) / 2)
    t = (math.log(loss) - math.log(l1)) / (math.log(l2) - math.log(l1))
    return math.exp(math.log(s1) + t * (math.log(s2) - math.log(s1)))


def _bracket(loss: float, dense: list[dict]) -> tuple[dict | None, dict | None]:
    above = [d for d in dense if d["val_loss"] >= loss]
    below = [d for d in dense if d["val_loss"] <= loss]
    return (min(above, key=lambda d: d["val_loss"]) if above else None,
            max(below, key=lambda d: d["val_loss"]) if below else None)


def _ratio(args: tuple, unit: str, pick) -> float:
    """Dense size over sparse size at the sparse model's loss; ``args`` is (loss, sparse sizes, upper
    dense sizes, lower dense sizes, upper dense loss, lower dense loss, tasks)."""
    loss, sparse_sizes, hi_sizes, lo_sizes, hi_loss, lo_loss, tasks = args
    s = _gm(pick(sparse_sizes[t][unit]) for t in tasks)
    dh = _gm(pick(hi_sizes[t][unit]) for t in tasks)
    dl = _gm(pick(lo_sizes[t][unit]) for t in tasks)
    return _interp(loss, (lo_loss, dl), (hi_loss, dh)) / s


def matched_one(model: dict, dense: list[dict], by: dict, pruner: str, objective: str) -> dict[str, Any]:
    """The matched-loss comparison of one sparse model against the dense sweep."""
    mine = by.get((model["model_id"], pruner, objective), {})
    base = {"model_id": model["model_id"], "group": model["group"], "density": model["density"],
            "val_loss": model["val_loss"], "pruner": pruner, "objective": objective}
    scored = [d for d in dense if by.get((d["model_id"], pruner, objective))]
    hi, lo = _bracket(model["val_loss"], scored)
    if hi is None or lo is None:
        span = [d["val_loss"] for d in scored]
        where = f"[{min(span):.3f}, {max(span):.3f}]" if span else "(no dense model with a solved task)"
        return {**base, "status": f"not bracketed: dense validation losses span {where}, "
                                  f"this model's is {model['val_loss']:.3f}"}
    hs, ls = by[(hi["model_id"], pruner, objective)], by[(lo["model_id"], pruner, objective)]
    tasks = sorted(set(mine) & set(hs) & set(ls))
    if not tasks:
        return {**base, "status": f"no task solved by this model and both dense neighbours "
                                  f"({lo['model_id']}, {hi['model_id']})"}
    args = (model["val_loss"], mine, hs, ls, hi["val_loss"], lo["val_loss"], tasks)
    return {**base, "status": "ok", "dense_below": lo["model_id"], "dense_above": hi["model_id"], "tasks": tasks,
            "node_ratio": _ratio(args, "nodes", _gm), "edge_ratio": _ratio(args, "edges", _gm),
            "_args": args}


def _boot_one(args, rng, unit: str) -> float:
    loss, mine, hs, ls, hl, ll, tasks = args
    chosen = [tasks[i] for i in rng.integers(0, len(tasks), len(tasks))]

    def pick(values):
        return _gm(values[i] for i in rng.integers(0, len(values), len(values)))

    return _ratio((loss, mine, hs, ls, hl, ll, chosen), unit, pick)


def matched_loss(rows: list[dict], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """One line per sparse model group (training seeds combined) and pruner/objective."""
    by = sizes(rows)
    ms = [m for m in models(rows).values() if m["kind"] == "trained"]
    dense = [m for m in ms if m["sparsity"] == "dense"]
    pairs = sorted({(r["pruner"], r["objective"]) for r in primary(rows)})
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in (m for m in ms if m["sparsity"] != "dense"):
        for pruner, objective in pairs:
            key = (m["group"], m["density"], m["width"], m["train_steps"], pruner, objective)
            groups[key].append(matched_one(m, dense, by, pruner, objective))
    rng = np.random.default_rng(seed)
    out = []
    for (group, density, width, steps, pruner, objective), lines in sorted(groups.items(), key=str):
        ok = [x for x in lines if x["status"] == "ok"]
        line = {"group": group, "density": density, "width": width, "train_steps": steps, "pruner": pruner,
                "objective": objective, "models": [x["model_id"] for x in lines],
                "val_loss": [x["val_loss"] for x in lines], "status": [x["status"] for x in lines],
                "n_ok": len(ok), "tasks": sorted({t for x in ok for t in x["tasks"]})}
        for unit in ("node", "edge"):
            if not ok:
                line[f"{unit}_ratio"] = line[f"{unit}_interval"] = None
                continue
            line[f"{unit}_ratio"] = geo(x[f"{unit}_ratio"] for x in ok)
            boots = [geo(_boot_one(ok[i]["_args"], rng, unit + "s") for i in rng.integers(0, len(ok), len(ok)))
                     for _ in range(n_boot)]
            line[f"{unit}_interval"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
        out.append(line)
    return out
