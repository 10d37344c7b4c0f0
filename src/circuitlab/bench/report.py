"""``circuitlab bench report DIR``: PNG figures and ``report.md`` from ``DIR/results.csv`` alone.

Figures (matplotlib, Agg): ``pareto_PRUNER-OBJECTIVE.png`` (validation loss against geometric-mean
circuit nodes and edges per model, coloured by schedule and density, dense sweep joined by a line: the
paper's Figure 3) and ``faithfulness_TASK.png`` (MIB faithfulness against the fraction of nodes and of
edges kept, signed ranking, one line per model). ``report.md`` holds the matched-loss table, the
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = analysis.sizes(rows)
    ms = analysis.models(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, unit in zip(axes, ("nodes", "edges"), strict=True):
        series: dict[str, list[tuple[float, float]]] = {}
        for (mid, p, o), tasks in by.items():
            if (p, o) != (pruner, objective) or not tasks or ms[mid]["kind"] != "trained":
                continue
            size = analysis._gm(analysis._gm(t[unit]) for t in tasks.values())
            series.setdefault(_label(ms[mid]), []).append((size, ms[mid]["val_loss"]))
        for label, pts in sorted(series.items()):
            pts.sort(key=lambda p: p[1])
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-" if label == "dense" else "o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel(f"geometric-mean circuit {unit} (solved tasks)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (nats/token)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Circuit size against pretraining loss ({pruner}, {objective})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def faithfulness_figure(rows: list[dict], task: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    chosen = [r for r in analysis.primary(rows) if r["task"] == task and r["f_nodes_signed"]]
    seen = set()
    for r in sorted(chosen, key=lambda r: (r["model_id"], r["pruner"], r["prune_seed"])):
        key = (r["model_id"], r["pruner"], r["objective"])
        if key in seen:  # first pruning seed only
            continue
        seen.add(key)
        for ax, level in zip(axes, ("nodes", "edges"), strict=True):
            f = r[f"f_{level}_signed"]
            if f:
                ax.plot(r["curve_fractions"], f, marker=".", label=f"{r['model_id']} {r['pruner']}")
    for ax, level in zip(axes, ("nodes", "edges"), strict=True):
        ax.set_xscale("log")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel(f"fraction of {level} kept (top by signed score)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("faithfulness f(C) (MIB)")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"Faithfulness curves: {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _matched_md(lines: list[dict]) -> str:
    rows = []
    for x in lines:
        ni, ei = x["node_interval"], x["edge_interval"]
        status = "ok" if x["n_ok"] == len(x["models"]) else "; ".join(dict.fromkeys(s for s in x["status"] if s != "ok"))
        rows.append([x["group"], x["density"], x["pruner"], ", ".join(_fmt(v) for v in x["val_loss"]),
                     len(x["tasks"]), _fmt(x["node_ratio"]), f"[{_fmt(ni[0])}, {_fmt(ni[1])}]" if ni else "n/a",
                     _fmt(x["edge_ratio"]), f"[{_fmt(ei[0])}, {_fmt(ei[1])}]" if ei else "n/a", status])
    return _table(["group", "density", "pruner", "val loss", "tasks", "node ratio", "95% interval", "edge ratio",
                   "95% interval", "status"], rows)


def build_markdown(rows: list[dict], n_boot: int) -> tuple[str, dict]:
    matched = analysis.matched_loss(rows, n_boot=n_boot)
    ctl = controls.control_summary(rows)
    spread = controls.seed_spread(rows)
    faith = controls.faithfulness_summary(rows)
    beats = controls.beats_full_model(rows)
    md = ["# Benchmark report", "",
          f"{len(rows)} cells, {sum(r['status'] == 'done' for r in rows)} pruned. "
          "Ratios are dense / sparse circuit size at matched validation loss (> 1: sparse circuits are smaller).",
          "", "## Matched-loss comparison", "", _matched_md(matched), "", "## Controls", "",
          "Size ratio = control circuit / real circuit on solved tasks (an unreached control counts as the whole "
          "model).", "",
          _table(["control", "pairs", "on solved tasks", "control reached", "node ratio", "edge ratio",
                  "mean test-loss change"],
                 [[c["control"], c["pairs"], c["on_solved_tasks"], c["reached"], c["node_ratio"], c["edge_ratio"],
                   c["mean_loss_change"]] for c in ctl]), "",
          "## Faithfulness (MIB CPR / CMD) and validations", "",
          _table(["pruner", "objective", "models", "cells", "CPR nodes", "CMD nodes", "CPR edges", "CMD edges",
                  "beat full model", "necessity", "random same size", "necessity > random"],
                 [[f["pruner"], f["objective"], f["models"], f["cells"], f["cpr_nodes"], f["cmd_nodes"],
                   f["cpr_edges"], f["cmd_edges"], f["beats_full_model"], f["necessity"], f["random_loss"],
                   f["necessity_above_random"]] for f in faith]), "",
          f"Circuits whose test loss is below their full model's by more than 0.05: {len(beats)}.", "",
          "## Seed spread (circuit nodes)", "",
          _table(["group", "density", "width", "steps", "task", "pruner", "train seeds", "prune seeds", "reached",
                  "min", "max", "max/min", "CV"],
                 [[s["group"], s["density"], s["width"], s["train_steps"], s["task"], s["pruner"], s["train_seeds"],
                   s["prune_seeds"], s["reached"], s["min"], s["max"], s["spread"], s["cv"]] for s in spread]), ""]
    for x in matched:
        x.pop("_args", None)
    return "\n".join(md), {"matched_loss": matched, "controls": ctl, "seed_spread": spread, "faithfulness": faith,
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
