"""``circuitlab bench report DIR``: PNG figures and ``report.md`` from ``DIR/results.csv`` alone.

Figures (matplotlib, Agg): ``pareto_PRUNER-OBJECTIVE.png`` (one panel per task: validation loss
against circuit nodes per model, coloured by arm, with each arm's fit over its loss range: the paper's
Figure 3, over one fixed task per panel) and ``faithfulness_TASK.png`` (MIB faithfulness against the fraction of nodes kept,
signed ranking, one line per model, and the same against the nodes kept relative to the circuit's
size, 0.25x-4x; the edge curve is the node curve re-parametrised and is not drawn). ``report.md`` holds the matched-loss table, the
controls, seed spread, CPR/CMD per pruner and the circuits that beat their full model. Every number in
them comes from the results table, which pandas or the csv module read without circuitlab.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CircuitlabError
from ..files import write_bytes, write_json
from . import analysis, controls
from .table import MODELS, RESULTS, read_table


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _table(header: list[str], lines: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in lines]
    return "\n".join(out)


def _label(m: dict) -> str:
    return "dense" if m["sparsity"] == "dense" else f"{m['group']} d={m['density']:g}"


def pareto_figure(rows: list[dict], pruner: str, objective: str, path: Path) -> Path:
    """One panel per task: circuit nodes against validation loss, one point per model (geometric mean
    over pruning seeds) of the cells that enter the comparison, and each arm's fit over its loss range."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    cells, _ = analysis.arm_cells(rows)
    arms = {arm: by for (arm, p, o), by in cells.items() if (p, o) == (pruner, objective)}
    tasks = sorted({t for by in arms.values() for t in by})
    cols = min(4, max(len(tasks), 1))
    nrows = max(1, math.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False, sharex=True, sharey=True)
    handles: dict[str, Any] = {}
    for ax, task in zip(axes.flat, tasks, strict=False):
        for arm, by in sorted(arms.items(), key=str):
            pts = analysis._points(by.get(task, {}), "nodes")
            if not pts:
                continue
            label = "dense" if arm == ("dense",) else f"{arm[0]} d={arm[1]:g}"
            color = f"C{sorted(arms, key=str).index(arm)}"
            line = handles[label] = ax.plot([math.exp(p[2]) for p in pts], [p[0] for p in pts], "o", color=color,
                                            label=label)[0]
            a, b, lo, hi = analysis.fit(pts)
            ys = np.linspace(lo, hi, 20)
            ax.plot(np.exp(a + b * ys), ys, "-", color=line.get_color(), alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation loss (nats/token)")
    for ax in axes[-1]:
        ax.set_xlabel("circuit nodes")
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=8, loc="lower right")
    fig.suptitle(f"Circuit size against pretraining loss per task ({pruner}, {objective}; cells that enter "
                 "the comparison)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def faithfulness_figure(rows: list[dict], task: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, near) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    chosen = [r for r in analysis.primary(rows) if r["task"] == task and r["f_nodes_signed"]]
    seen = set()
    for r in sorted(chosen, key=lambda r: (r["model_id"], r["pruner"], r["prune_seed"])):
        key = (r["model_id"], r["pruner"], r["objective"])
        if key in seen:  # first pruning seed only
            continue
        seen.add(key)
        ax.plot(r["curve_fractions"], r["f_nodes_signed"], marker=".", label=f"{r['model_id']} {r['pruner']}")
        if r.get("f_circuit"):
            near.plot(r["circuit_factors"], r["f_circuit"], marker=".")
    ax.set_xscale("log")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("fraction of nodes kept (top by signed score)")
    ax.grid(alpha=0.3)
    ax.set_ylabel("faithfulness f(C) (MIB)")
    if seen:  # a task with no curve (none stored) has nothing to label
        ax.legend(fontsize=6)
    near.set_xscale("log", base=2)
    near.axhline(1.0, color="grey", lw=0.8)
    near.axvline(1.0, color="grey", lw=0.8, ls=":")
    near.set_xlabel("nodes kept / circuit size (same ranking)")
    near.grid(alpha=0.3)
    if not any(r.get("f_circuit") for r in chosen):
        near.text(0.5, 0.5, "not in this table", transform=near.transAxes, ha="center")
    fig.suptitle(f"Faithfulness curves: {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _iv(iv) -> str:
    return f"[{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else "n/a"


def _matched_md(lines: list[dict]) -> str:
    if not lines:
        return "No sparse arm has a cell that enters the comparison."
    out = [f"Interval: {lines[0]['unit']}, {lines[0]['n_boot']} resamples.", ""]
    for x in lines:
        left = ", ".join(f"{n} ({why})" for why, n in sorted(x["left_out"].items())) or "none"
        out += [f"### {x['group']} d={_fmt(x['density'])} w={x['width']}, {x['pruner']} / {x['objective']}", "",
                f"{x['sparse_seeds']} sparse and {x['dense_seeds']} dense training seeds enter. Cells left out of "
                f"the comparison (rule: full-model test loss <= target - {_fmt(x['margin'])}): {left}.", "",
                f"**Pooled over {len(x['tasks'])} task{'' if len(x['tasks']) == 1 else 's'}: nodes {_fmt(x['node_ratio'])} {_iv(x['node_interval'])}, "
                f"edges {_fmt(x['edge_ratio'])} {_iv(x['edge_interval'])}** "
                f"(resamples without a ratio: {x['node_resamples_without_ratio']}). "
                f"Tasks where the sparse circuits are larger: {', '.join(x['sparse_worse']) or 'none'}.", ""]
        rows = []
        for p in x["per_task"]:
            n, e = x.get("node_per_task", {}).get(p["task"]), x.get("edge_per_task", {}).get(p["task"])
            if n is None:
                rows.append([p["task"], "n/a", "n/a", "n/a", "n/a", "n/a", p["status"]])
                continue
            rows.append([p["task"], f"[{_fmt(n['overlap'][0])}, {_fmt(n['overlap'][1])}]", _fmt(n["ratio"]),
                         _iv(n["interval"]), _fmt(e["ratio"]), _iv(e["interval"]), "ok"])
        out += [_table(["task", "loss overlap", "node ratio", "95% interval", "edge ratio", "95% interval",
                        "status"], rows), ""]
    return "\n".join(out)


def build_markdown(rows: list[dict], n_boot: int) -> tuple[str, dict]:
    matched = analysis.matched_loss(rows, n_boot=n_boot)
    ctl = controls.control_summary(rows)
    spread = controls.seed_spread(rows)
    sets = controls.seed_sets(rows)
    swaps = controls.interchange_summary(rows)
    faith = controls.faithfulness_summary(rows)
    beats = controls.beats_full_model(rows)
    md = ["# Benchmark report", "",
          f"{len(rows)} cells, {sum(r['status'] == 'done' for r in rows)} pruned. "
          "Ratios are dense / sparse circuit size at matched validation loss (> 1: sparse circuits are smaller), "
          "at the midpoint of the overlap of the arms' loss ranges, from a fit of log size against loss per task "
          "and arm.",
          "", "## Matched-loss comparison", "", _matched_md(matched), "", "## Controls", "",
          "Size ratio = control circuit / real circuit, over the pairs where both reached the target on solved "
          "tasks. A control that did not reach the target is not reached: it enters no ratio; its lowest train "
          "loss (at the k the search ended at) is shown.", "",
          _table(["control", "pairs", "on solved tasks", "control reached", "pairs in ratio", "node ratio",
                  "edge ratio", "mean test-loss change", "not reached: lowest train loss"],
                 [[c["control"], c["pairs"], c["on_solved_tasks"], c["reached"], c["in_ratio"], c["node_ratio"],
                   c["edge_ratio"], c["mean_loss_change"], c["best_train_loss_not_reached"]] for c in ctl]), "",
          "## Faithfulness (MIB CPR / CMD) and validations", "",
          "CMD under the current rule (signed ranking for a mask's keep-logits), recomputed from the stored "
          "curves. Necessity: test loss with the circuit ablated from the full model; random ablation: the same "
          "with as many random nodes ablated (mean of >= 3 draws; n/a where the table predates it); random kept "
          "alone: a random same-size set kept by itself (a sufficiency baseline).", "",
          _table(["pruner", "objective", "models", "cells", "CPR nodes", "CMD nodes", "beat full model",
                  "necessity", "random ablation", "necessity > random ablation", "random kept alone"],
                 [[f["pruner"], f["objective"], f["models"], f["cells"], f["cpr_nodes"], f["cmd_nodes"],
                   f["beats_full_model"], f["necessity"], f["necessity_random"], f["necessity_above_random"],
                   f["random_kept_alone"]] for f in faith]), "",
          "Around the circuit and faithfulness to the model (test pairs; n/a where the table predates them): "
          "max f and overshoot (area of f above 1 against log2 of the size factor) of the curve at 0.25x-4x "
          "the circuit's size; the circuit's test loss minus the full model's; KL from the full model's "
          "two-answer distribution to the circuit's.", "",
          _table(["pruner", "objective", "models", "max f (0.25x-4x)", "overshoot", "loss gap to full model",
                  "KL to full model"],
                 [[f["pruner"], f["objective"], f["models"], f["max_f_circuit"], f["overshoot_circuit"],
                   f["loss_gap_to_full"], f["kl_to_full"]] for f in faith]), "",
          f"Circuits whose test loss is below their full model's by more than 0.05: {len(beats)}.", "",
          "## Seed spread (circuit nodes)", "",
          _table(["group", "density", "width", "steps", "task", "pruner", "train seeds", "prune seeds", "reached",
                  "min", "max", "max/min", "CV"],
                 [[s["group"], s["density"], s["width"], s["train_steps"], s["task"], s["pruner"], s["train_seeds"],
                   s["prune_seeds"], s["reached"], s["min"], s["max"], s["spread"], s["cv"]] for s in spread]), "",
          "## Circuits across pruning seeds (which nodes)", "",
          "Per model and task, the circuits of its pruning seeds compared node by node: mean pairwise Jaccard, "
          "the core (nodes kept by at least half of the seeds) and the union; averaged over the models (training "
          "seeds) of each step budget. Reached circuits only; n/a: the table has no node names.", "",
          _table(["group", "steps", "task", "pruner", "models", "seeds", "mean Jaccard", "min Jaccard", "core",
                  "union", "median size"],
                 [[s["group"], s["train_steps"], s["task"], s["pruner"], s["models"], s["seeds"], s["jaccard_mean"],
                   s["jaccard_min"], s["core_mean"], s["union_mean"], s["size_median"]] for s in sets])
          if sets else "n/a", "",
          "## Interchange", "",
          "Patching a circuit's nodes from the other prompt of each test pair: how often the prediction moves to "
          "the other prompt's answer, for the circuit and for random node sets of its size (mean of >= 3 draws).",
          "",
          _table(["group", "pruner", "objective", "cells", "interchange accuracy", "random sets", "mean shift",
                  "cells above random"],
                 [[w["group"], w["pruner"], w["objective"], w["cells"], w["accuracy"], w["random_accuracy"],
                   w["shift"], f"{w['above_random']} of {w['with_random']}"] for w in swaps]) if swaps else "n/a", ""]
    return "\n".join(md), {"matched_summary": _matched_md(matched), "matched_loss": matched, "controls": ctl,
                           "seed_spread": spread, "seed_sets": sets, "interchange": swaps, "faithfulness": faith,
                           "beats_full_model": beats}


def _models_md(out: Path) -> str:
    import csv

    path = out / MODELS
    if not path.exists():
        return ""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))

    def names(column: str, r: dict) -> str:  # empty: not recorded (older tables, docs without intervals)
        if not r.get(column):
            return "n/a"
        return ", ".join(t.partition(":")[2] for t in json.loads(r[column]))

    lines = [[r["model_id"], r["kind"], float(r["val_loss"]) if r["val_loss"] else None, r["n_solved"],
              names("solved", r), names("borderline", r)] for r in rows]
    return ("## Models\n\nSolved: the tasks pruned, whose full-model test accuracy has a 95% Wilson interval "
            "not wholly below the spec's min_accuracy (the rule of circuitlab prune). Borderline: those whose "
            "interval contains the threshold, so another machine's model may fall on the other side; they are "
            "pruned and flagged.\n\n"
            + _table(["model", "kind", "val loss", "tasks solved", "solved", "borderline"], lines) + "\n\n")


def write_report(out: str | Path, n_boot: int = 2000) -> dict[str, Any]:
    out = Path(out)
    if not (out / RESULTS).exists():
        raise CircuitlabError(f"{str(out / RESULTS)!r} does not exist; run 'circuitlab bench SPEC --out {out}' first")
    rows = read_table(out / RESULTS)
    figures = []
    for pruner, objective in sorted({(r["pruner"], r["objective"]) for r in analysis.primary(rows)}):
        figures.append(str(pareto_figure(rows, pruner, objective, out / f"pareto_{pruner}-{objective}.png")))
    for task in sorted({r["task"] for r in analysis.primary(rows)}):
        figures.append(str(faithfulness_figure(rows, task, out / f"faithfulness_{task.replace(':', '-')}.png")))
    md, doc = build_markdown(rows, n_boot)
    md = md.replace("## Matched-loss comparison", _models_md(out) + "## Matched-loss comparison", 1)
    md += "\n## Figures\n\n" + "\n".join(f"![{Path(f).stem}]({Path(f).name})" for f in figures) + "\n"
    write_bytes(out / "report.md", md.encode())
    doc = {"kind": "circuitlab-bench-report", "markdown": str(out / "report.md"), "figures": figures, **doc}
    write_json(out / "report.json", doc)
    return doc
