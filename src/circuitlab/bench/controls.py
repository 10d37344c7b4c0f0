"""Controls, seed spread, validations and faithfulness summaries of a results table (docs/bench.md).

- Controls: every control cell is paired with the real cell of the same (model or trained twin, task,
  pruner, objective, pruning seed); its node and edge counts are divided by the real cell's only when
  both circuits reached the target. A control that did not reach it is reported as not reached, with
  the loss and k it ended at; it never enters a ratio (its row's size is the whole model, which says
  nothing about the control).
- Seed spread: circuit nodes over pruning seeds and training seeds of one (model group, task, pruner,
  objective), as min, max, max/min and the coefficient of variation.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from .analysis import full_model_solves, geo, primary


def _real_key(r: dict) -> tuple:
    model = r["twin"] if r["control"] == "random_init" else r["model_id"]
    return (model, r["task"], r["pruner"], r["objective"], r["prune_seed"])


def ratio(control: dict, real: dict, unit: str) -> float | None:
    """Control size / real size, or None unless both circuits reached the target."""
    if not (control["reached"] and real["reached"]):
        return None
    return max(control[unit], 1) / max(real[unit], 1)


def control_pairs(rows: list[dict]) -> list[dict[str, Any]]:
    """Each done control cell beside its real cell: sizes, ratios, test losses, reached flags."""
    real = {_real_key(r): r for r in primary(rows)}
    out = []
    for r in rows:
        if r["status"] != "done" or r["control"] == "none":
            continue
        base = real.get(_real_key(r))
        if base is None:
            continue
        out.append({"control": r["control"], "model_id": base["model_id"], "task": r["task"], "pruner": r["pruner"],
                    "real_nodes": base["nodes"], "real_edges": base["edges"], "real_loss": base["loss"],
                    "real_reached": base["reached"], "nodes": r["nodes"], "edges": r["edges"], "loss": r["loss"],
                    "reached": r["reached"], "k": r["k"], "train_loss": r["train_loss"],
                    "bisection": sorted(tuple(x) for x in r.get("bisection") or ()),
                    "node_ratio": ratio(r, base, "nodes"), "edge_ratio": ratio(r, base, "edges"),
                    "solved": full_model_solves(base) and base["reached"]})
    return out


def control_summary(rows: list[dict]) -> list[dict[str, Any]]:
    """Per control: how many pairs, how many control circuits reached the target, geomean ratios."""
    by: dict[str, list[dict]] = defaultdict(list)
    for p in control_pairs(rows):
        by[p["control"]].append(p)
    out = []
    for control, pairs in sorted(by.items()):
        solved = [p for p in pairs if p["solved"]]
        both = [p for p in solved if p["node_ratio"] is not None]
        missed = [p for p in pairs if not p["reached"]]
        out.append({"control": control, "pairs": len(pairs), "on_solved_tasks": len(solved),
                    "reached": sum(p["reached"] for p in pairs), "in_ratio": len(both),
                    "node_ratio": geo(p["node_ratio"] for p in both) if both else None,
                    "edge_ratio": geo(p["edge_ratio"] for p in both) if both else None,
                    "mean_loss_change": (statistics.fmean(p["loss"] - p["real_loss"] for p in both)
                                         if both else None),
                    # not reached: the train loss and k the search ended at, the lowest train loss over
                    # every k it evaluated and the size-against-loss curve (empty in older tables)
                    "not_reached": [{"task": p["task"], "model_id": p["model_id"], "k": p["k"],
                                     "train_loss": p["train_loss"], "test_loss": p["loss"],
                                     "best": list(min(p["bisection"], key=lambda x: x[1])) if p["bisection"]
                                     else [p["k"], p["train_loss"]],
                                     "size_loss_curve": [list(x) for x in p["bisection"]]} for p in missed],
                    "best_train_loss_not_reached": min((n["best"][1] for n in _best(missed)), default=None)})
    return out


def seed_spread(rows: list[dict]) -> list[dict[str, Any]]:
    """Circuit nodes over pruning seeds and training seeds, per (group, density, width, steps, task, method)."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in primary(rows):
        if r["kind"] == "trained":
            by[(r["group"], r["density"], r["width"], r["train_steps"], r["task"], r["pruner"], r["objective"])].append(r)
    out = []
    for (group, density, width, steps, task, pruner, objective), rs in sorted(by.items(), key=str):
        nodes = [r["nodes"] for r in rs]
        out.append({"group": group, "density": density, "width": width, "train_steps": steps, "task": task,
                    "pruner": pruner, "objective": objective, "n": len(rs),
                    "train_seeds": len({r["train_seed"] for r in rs}), "prune_seeds": len({r["prune_seed"] for r in rs}),
                    "reached": sum(r["reached"] for r in rs), "nodes": sorted(nodes), "min": min(nodes),
                    "max": max(nodes), "spread": max(nodes) / max(min(nodes), 1),
                    "cv": statistics.pstdev(nodes) / statistics.fmean(nodes) if len(nodes) > 1 else 0.0})
    return out


def _jaccard(a: set, b: set) -> float:
    return 1.0 if not (a or b) else len(a & b) / len(a | b)


def seed_sets(rows: list[dict], core_share: float = 0.5) -> list[dict[str, Any]]:
    """Which nodes the circuits of one model and task keep across pruning seeds (``prune --seeds`` for the
    bench): per (group, steps, task, method), over the trained models with at least two reached seeds, the
    mean pairwise node Jaccard between seeds, and the core (nodes kept by at least ``core_share`` of a
    model's seeds) and union sizes, each averaged over the models (training seeds). Rows without node
    names (tables written before the ``kept_nodes`` column) are left out."""
    per_model: dict[tuple, list[dict]] = defaultdict(list)
    for r in primary(rows):
        if r["kind"] == "trained" and r["reached"] and r.get("kept_nodes") is not None:
            per_model[(r["group"], r["train_steps"], r["task"], r["pruner"], r["objective"], r["model_id"])].append(r)
    by: dict[tuple, list[dict]] = defaultdict(list)
    for (group, steps, task, pruner, objective, _), rs in per_model.items():
        sets = [set(r["kept_nodes"]) for r in sorted(rs, key=lambda r: r["prune_seed"])]
        if len(sets) < 2:
            continue
        counts: dict[str, int] = defaultdict(int)
        for s_ in sets:
            for name in s_:
                counts[name] += 1
        pairs = [_jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]]
        by[(group, steps, task, pruner, objective)].append({
            "seeds": len(sets), "jaccard": statistics.fmean(pairs), "jaccard_min": min(pairs),
            "core": sum(c >= core_share * len(sets) - 1e-12 for c in counts.values()), "union": len(counts),
            "sizes": sorted(len(s_) for s_ in sets)})
    out = []
    for (group, steps, task, pruner, objective), ms in sorted(by.items(), key=str):
        out.append({"group": group, "train_steps": steps, "task": task, "pruner": pruner, "objective": objective,
                    "models": len(ms), "seeds": sorted({m["seeds"] for m in ms}),
                    "jaccard_mean": statistics.fmean(m["jaccard"] for m in ms),
                    "jaccard_min": min(m["jaccard_min"] for m in ms),
                    "core_mean": statistics.fmean(m["core"] for m in ms),
                    "union_mean": statistics.fmean(m["union"] for m in ms),
                    "size_median": statistics.median(x for m in ms for x in m["sizes"])})
    return out


def interchange_summary(rows: list[dict]) -> list[dict[str, Any]]:
    """Interchange accuracy of the reached circuits against random node sets of their size, per group and
    method (trained models, primary cells with the figures): means over cells, and in how many cells the
    circuit's accuracy is above the random sets' mean."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in primary(rows):
        if r["kind"] == "trained" and r["reached"] and r.get("interchange_accuracy") is not None:
            by[(r["group"], r["pruner"], r["objective"])].append(r)
    out = []
    for (group, pruner, objective), rs in sorted(by.items(), key=str):
        rand = [r for r in rs if r.get("random_interchange_accuracy") is not None]
        out.append({"group": group, "pruner": pruner, "objective": objective, "cells": len(rs),
                    "accuracy": statistics.fmean(r["interchange_accuracy"] for r in rs),
                    "random_accuracy": statistics.fmean(r["random_interchange_accuracy"] for r in rand) if rand else None,
                    "shift": statistics.fmean(r["interchange_shift"] for r in rs if r["interchange_shift"] is not None)
                    if any(r["interchange_shift"] is not None for r in rs) else None,
                    "above_random": sum(r["interchange_accuracy"] > r["random_interchange_accuracy"] for r in rand),
                    "with_random": len(rand)})
    return out


def _effect_scores(pruner: str) -> bool:
    """Whether a pruner's scores are signed effects (CMD ranks them by |score|, as MIB) or keep-logits."""
    from .. import plugins

    try:
        return bool(getattr(plugins.get("pruner", pruner).factory, "score_only", False))
    except Exception:  # a pruner not installed here: its scores are read as keep-logits
        return False


def cmd(r: dict) -> float | None:
    """CMD (nodes) of a row under the current rule, from its stored curves: the signed curve for a mask's
    keep-logits, the absolute one for effect scores. Older tables stored CMD from the absolute ranking
    of keep-logits (0.749 on MIB's grid whatever the circuit); this recomputes it."""
    from ..prune.faithfulness import area_from_1

    curve = r["f_nodes_absolute"] if _effect_scores(r["pruner"]) else r["f_nodes_signed"]
    if not curve or not r["curve_fractions"]:
        return None
    return area_from_1(r["curve_fractions"], curve)


def _best(pairs: list[dict]) -> list[dict]:
    return [{"best": min(p["bisection"], key=lambda x: x[1]) if p["bisection"] else (p["k"], p["train_loss"])}
            for p in pairs]


def faithfulness_summary(rows: list[dict]) -> list[dict[str, Any]]:
    """Per pruner and objective: mean CPR and CMD (nodes) over the real cells, and validations."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in primary(rows):
        by[(r["pruner"], r["objective"], r["sparsity"] == "dense")].append(r)

    def mean(rs, key):
        vals = [r[key] for r in rs if r[key] is not None and math.isfinite(r[key])]
        return statistics.fmean(vals) if vals else None

    out = []
    for (pruner, objective, dense), rs in sorted(by.items()):
        rs = [{**r, "cmd_nodes": cmd(r)} for r in rs]
        with_random = [r for r in rs if r.get("necessity_random") is not None]
        out.append({"pruner": pruner, "objective": objective, "models": "dense" if dense else "sparse",
                    "cells": len(rs), "cpr_nodes": mean(rs, "cpr_nodes"), "cmd_nodes": mean(rs, "cmd_nodes"),
                    "beats_full_model": sum(bool(r["beats_full_model"]) for r in rs),
                    "necessity": mean(rs, "necessity"),
                    # ablating a random same-size node set from the full model; absent from older tables
                    "necessity_random": mean(with_random, "necessity_random") if with_random else None,
                    "necessity_above_random": (sum(r["necessity"] > r["necessity_random"] for r in with_random)
                                               if with_random else None),
                    "random_kept_alone": mean(rs, "random_loss"),
                    # the circuit-relative curve (0.25x-4x the circuit's size); absent from older tables
                    "max_f_circuit": mean(rs, "max_f_circuit") if rs[0].get("max_f_circuit") is not None else None,
                    "overshoot_circuit": (mean(rs, "overshoot_circuit")
                                          if rs[0].get("overshoot_circuit") is not None else None),
                    # older tables: the circuit's recorded test loss minus the full model's
                    "loss_gap_to_full": mean(rs, "loss_gap_to_full") if rs[0].get("loss_gap_to_full") is not None
                    else statistics.fmean(r["loss"] - r["full_model_loss"] for r in rs),
                    "kl_to_full": mean(rs, "kl_to_full") if rs[0].get("kl_to_full") is not None else None})
    return out


def beats_full_model(rows: list[dict]) -> list[dict[str, Any]]:
    return [{"cell_id": r["cell_id"], "task": r["task"], "model_id": r["model_id"], "control": r["control"],
             "loss": r["loss"], "full_model_loss": r["full_model_loss"]}
            for r in rows if r["status"] == "done" and r["beats_full_model"]]
