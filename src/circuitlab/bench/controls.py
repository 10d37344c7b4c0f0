"""Controls, seed spread, validations and faithfulness summaries of a results table (docs/bench.md).

- Controls: every control cell is paired with the real cell of the same (model or trained twin, task,
  pruner, objective, pruning seed); its node and edge counts are divided by the real cell's. An
  unreached control circuit counts as the whole model (its row is the full model), so its ratio is a
  lower bound of what the control would need.
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
                    "reached": r["reached"], "node_ratio": max(r["nodes"], 1) / max(base["nodes"], 1),
                    "edge_ratio": max(r["edges"], 1) / max(base["edges"], 1),
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
        out.append({"control": control, "pairs": len(pairs), "on_solved_tasks": len(solved),
                    "reached": sum(p["reached"] for p in pairs),
                    "node_ratio": geo(p["node_ratio"] for p in solved) if solved else None,
                    "edge_ratio": geo(p["edge_ratio"] for p in solved) if solved else None,
                    "mean_loss_change": (statistics.fmean(p["loss"] - p["real_loss"] for p in solved)
                                         if solved else None)})
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


def faithfulness_summary(rows: list[dict]) -> list[dict[str, Any]]:
    """Per pruner and objective: mean CPR and CMD (nodes and edges) over the real cells, and validations."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in primary(rows):
        by[(r["pruner"], r["objective"], r["sparsity"] == "dense")].append(r)

    def mean(rs, key):
        vals = [r[key] for r in rs if r[key] is not None and math.isfinite(r[key])]
        return statistics.fmean(vals) if vals else None

    out = []
    for (pruner, objective, dense), rs in sorted(by.items()):
        out.append({"pruner": pruner, "objective": objective, "models": "dense" if dense else "sparse",
                    "cells": len(rs), "cpr_nodes": mean(rs, "cpr_nodes"), "cmd_nodes": mean(rs, "cmd_nodes"),
                    "cpr_edges": mean(rs, "cpr_edges"), "cmd_edges": mean(rs, "cmd_edges"),
                    "beats_full_model": sum(bool(r["beats_full_model"]) for r in rs),
                    "necessity": mean(rs, "necessity"), "random_loss": mean(rs, "random_loss"),
                    "necessity_above_random": sum((r["necessity"] or 0) > (r["random_loss"] or 0) for r in rs)})
    return out


def beats_full_model(rows: list[dict]) -> list[dict[str, Any]]:
    return [{"cell_id": r["cell_id"], "task": r["task"], "model_id": r["model_id"], "control": r["control"],
             "loss": r["loss"], "full_model_loss": r["full_model_loss"]}
            for r in rows if r["status"] == "done" and r["beats_full_model"]]
