"""What a results table says: matched-loss ratios with bootstrap intervals, controls, seed spread, CPR/CMD.

Everything here reads only the rows of ``results.csv`` (``table.read_table``). Definitions (docs/bench.md):

- A (model, task) is **solved** when the full model's verdict on the task is ``solved`` or
  ``borderline`` (``circuitlab.tasks.verdict``: the 95% Wilson interval of its test accuracy against
  the spec's ``prune.min_accuracy``, the rule of ``circuitlab prune``) and the circuit reached the
  target loss on the train pairs. A model's size on a task set is the geometric mean over
  the tasks of its circuit size (itself the geometric mean over pruning seeds).
- A cell **enters the comparison** when its task is solved and its full model's test loss is at most
  the target loss minus ``TARGET_MARGIN``: a circuit cannot be asked to reach a loss its own model
  misses. Cells left out for that are counted (``left_out``), never pruned to another target.
- **Matched loss**, per task, arm (a sparse group and density, or the dense models) and pruner/objective:
  fit log circuit size against validation loss over the arm's models, each model one point (the mean
  log size over its pruning seeds), training seeds as replicates. The line's slope is fitted only when
  the arm has at least two step budgets on the task; with one budget the fit is the mean (a slope
  across seed replicates at one budget would fit noise). The arms are compared at the midpoint of the
  overlap of their loss ranges (the losses of the models that enter), never outside it; a task whose
  ranges do not overlap has no ratio. The ratio is dense / sparse (> 1: sparse circuits are smaller).
  The pooled ratio is the geometric mean over the tasks with a ratio.
- **Interval** (``hierarchical_bootstrap``): each resample draws the tasks (shared by both arms and
  every seed), then each arm's training seeds (shared by every task: a seed is one model per budget),
  then, for every drawn (model, task), its pruning seeds, all with replacement; the fits and the overlap
  are recomputed. 95% percentile intervals of the per-task and the pooled ratio.
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


#: A cell enters the matched-loss comparison only when its full model's test loss is at most
#: target_loss - TARGET_MARGIN (the rule of docs/bench.md, "Targets the model meets").
TARGET_MARGIN = 0.05


def enters(r: dict, margin: float | None = TARGET_MARGIN) -> str | None:
    """Why a primary trained cell stays out of the comparison, or None when it enters (``margin`` None:
    no target rule, as the runs before it)."""
    if not full_model_solves(r):
        return "task not solved"
    if margin is not None and (r["full_model_loss"] is None or r["full_model_loss"] > r["target_loss"] - margin):
        return "full model not below target - margin"
    if not r["reached"]:
        return "target not reached"
    return None


def _arm(m: dict) -> tuple:
    return ("dense",) if m["sparsity"] == "dense" else (m["group"], m["density"], m["width"])


def arm_cells(rows: list[dict], margin: float | None = TARGET_MARGIN) -> tuple[dict, dict]:
    """((arm, pruner, objective) -> task -> train_seed -> model_id -> point, left-out counts).

    A point is {"loss", "steps", "nodes": [per pruning seed], "edges": [...]}."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    left: dict[str, int] = defaultdict(int)
    for r in primary(rows):
        if r["kind"] != "trained":
            continue
        why = enters(r, margin)
        if why is not None:
            left[why] += 1
            continue
        seeds = out[(_arm(r), r["pruner"], r["objective"])][r["task"]][r["train_seed"]]
        point = seeds.setdefault(r["model_id"], {"loss": r["val_loss"], "steps": r["train_steps"],
                                                 "nodes": [], "edges": []})
        point["nodes"].append(math.log(max(r["nodes"], 1)))
        point["edges"].append(math.log(max(r["edges"], 1)))
    return out, dict(left)


def fit(points: list[tuple[float, int, float]]) -> tuple[float, float, float, float] | None:
    """(intercept, slope, lowest loss, highest loss) of log size against loss over (loss, steps, log size)
    points; the slope is 0 unless the points span at least two step budgets."""
    if not points:
        return None
    x = np.array([p[0] for p in points])
    y = np.array([p[2] for p in points])
    if len({p[1] for p in points}) < 2 or np.ptp(x) == 0:
        return float(y.mean()), 0.0, float(x.min()), float(x.max())
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope), float(x.min()), float(x.max())


def compare(sparse: tuple | None, dense: tuple | None) -> dict[str, Any]:
    """log(dense / sparse) at the midpoint and the ends of the overlap of two fits' loss ranges."""
    if sparse is None or dense is None:
        return {"status": "no model of " + ("the sparse arm" if sparse is None else "the dense arm") + " enters"}
    lo, hi = max(sparse[2], dense[2]), min(sparse[3], dense[3])
    if lo > hi:
        return {"status": f"no overlap: sparse losses [{sparse[2]:.3f}, {sparse[3]:.3f}], "
                          f"dense [{dense[2]:.3f}, {dense[3]:.3f}]"}

    def log_ratio(loss: float) -> float:
        return (dense[0] + dense[1] * loss) - (sparse[0] + sparse[1] * loss)

    mid = (lo + hi) / 2
    return {"status": "ok", "overlap": [lo, hi], "at": mid, "log_ratio": log_ratio(mid),
            "ends": [math.exp(log_ratio(lo)), math.exp(log_ratio(hi))]}


def _points(seeds: dict, unit: str, draw_seeds=None, rng=None) -> list[tuple[float, int, float]]:
    """One (loss, steps, mean log size) per model; with ``rng``, seeds drawn as ``draw_seeds`` and
    pruning seeds resampled for every drawn model."""
    chosen = list(seeds) if draw_seeds is None else draw_seeds
    out = []
    for s in chosen:
        for p in seeds.get(s, {}).values():
            vals = p[unit]
            if rng is not None:
                vals = [vals[i] for i in rng.integers(0, len(vals), len(vals))]
            out.append((p["loss"], p["steps"], sum(vals) / len(vals)))
    return out


def _interval(draws: list[float]) -> list[float] | None:
    if not draws:
        return None
    return [math.exp(float(np.percentile(draws, 2.5))), math.exp(float(np.percentile(draws, 97.5)))]


def hierarchical_bootstrap(sparse: dict, dense: dict, tasks: list[str], unit: str, n_boot: int,
                           rng: np.random.Generator) -> tuple[dict[str, list[float]], list[float], int]:
    """Per-task and pooled log-ratio draws: tasks, then each arm's training seeds (shared across tasks),
    then pruning seeds per drawn (model, task), all with replacement. Returns (per task draws, pooled
    draws, resamples where no drawn task had a ratio)."""
    s_seeds = sorted({s for t in tasks for s in sparse.get(t, {})})
    d_seeds = sorted({s for t in tasks for s in dense.get(t, {})})
    per_task: dict[str, list[float]] = {t: [] for t in tasks}
    pooled: list[float] = []
    empty = 0
    for _ in range(n_boot):
        drawn_tasks = [tasks[i] for i in rng.integers(0, len(tasks), len(tasks))]
        ss = [s_seeds[i] for i in rng.integers(0, len(s_seeds), len(s_seeds))]
        ds = [d_seeds[i] for i in rng.integers(0, len(d_seeds), len(d_seeds))]
        here: dict[str, float | None] = {}
        for t in tasks:
            c = compare(fit(_points(sparse.get(t, {}), unit, ss, rng)), fit(_points(dense.get(t, {}), unit, ds, rng)))
            here[t] = c["log_ratio"] if c["status"] == "ok" else None
            if here[t] is not None:
                per_task[t].append(here[t])
        vals = [here[t] for t in drawn_tasks if here[t] is not None]
        if vals:
            pooled.append(sum(vals) / len(vals))
        else:
            empty += 1
    return per_task, pooled, empty


def matched_loss(rows: list[dict], n_boot: int = 2000, seed: int = 0,
                 margin: float | None = TARGET_MARGIN) -> list[dict[str, Any]]:
    """One line per sparse arm and pruner/objective: per-task and pooled dense / sparse size ratios at
    matched validation loss, with hierarchical bootstrap intervals (module docstring)."""
    cells, left = arm_cells(rows, margin)
    rng = np.random.default_rng(seed)
    out = []
    # every sparse arm with a primary cell, also one whose cells are all left out
    arms = {(_arm(r), r["pruner"], r["objective"]) for r in primary(rows) if r["kind"] == "trained"}
    for arm, pruner, objective in sorted(arms, key=str):
        if arm == ("dense",):
            continue
        sparse = cells.get((arm, pruner, objective), {})
        dense = cells.get((("dense",), pruner, objective), {})
        tasks = sorted(set(sparse) | set(dense))
        group, density, width = arm
        ids = sorted({m for t in sparse.values() for s in t.values() for m in s})
        line: dict[str, Any] = {"group": group, "density": density, "width": width, "pruner": pruner,
                                "objective": objective, "models": ids, "n_ok": len(ids),
                                "val_loss": sorted({p["loss"] for t in sparse.values() for s in t.values()
                                                    for p in s.values()}),
                                "sparse_seeds": len({s for t in sparse.values() for s in t}),
                                "dense_seeds": len({s for t in dense.values() for s in t}),
                                "left_out": left, "margin": margin, "n_boot": n_boot, "unit": UNIT}
        per_task = {t: {u: compare(fit(_points(sparse.get(t, {}), u)), fit(_points(dense.get(t, {}), u)))
                        for u in ("nodes", "edges")} for t in tasks}
        ok = [t for t in tasks if per_task[t]["nodes"]["status"] == "ok"]
        line["tasks"] = ok
        line["status"] = (["ok"] if ok else sorted({c["nodes"]["status"] for c in per_task.values()})
                          or ["no cell of this arm or the dense arm enters the comparison"])
        line["per_task"] = []
        for unit, key in (("nodes", "node"), ("edges", "edge")):
            draws, pooled, empty = hierarchical_bootstrap(sparse, dense, ok, unit, n_boot, rng) if ok else ({}, [], 0)
            line[f"{key}_ratio"] = math.exp(sum(per_task[t][unit]["log_ratio"] for t in ok) / len(ok)) if ok else None
            line[f"{key}_interval"] = _interval(pooled)
            line[f"{key}_resamples_without_ratio"] = empty
            for t in ok:
                c = per_task[t][unit]
                line[f"{key}_per_task"] = line.get(f"{key}_per_task", {}) | {t: {
                    "ratio": math.exp(c["log_ratio"]), "interval": _interval(draws[t]), "at_loss": c["at"],
                    "overlap": c["overlap"], "ratio_at_ends": c["ends"], "resamples": len(draws[t])}}
        line["per_task"] = [{"task": t, **{k: v for k, v in per_task[t]["nodes"].items() if k != "log_ratio"}}
                            for t in tasks]
        line["sparse_worse"] = [t for t in ok if per_task[t]["nodes"]["log_ratio"] < 0]
        out.append(line)
    return out


#: What the interval resamples (stated in the report and docs/bench.md).
UNIT = ("hierarchical bootstrap: tasks (shared by both arms and all seeds), then each arm's training seeds "
        "(shared by all tasks), then pruning seeds per model and task; 95% percentile interval")
