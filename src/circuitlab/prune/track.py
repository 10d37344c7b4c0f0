"""Circuits over training: prune the same tasks at every kept checkpoint of a run, and the final model.

``circuitlab train --keep-checkpoints EVERY`` keeps the weights every EVERY steps as run folders
``RUN/checkpoints/step-NNNNNN`` (``train.checkpoint.keep_weights``); each is pruned like the run
itself (``pipeline.prune_model``, so its circuits are ordinary circuit documents under
``OUT/step-NNNNNN/``), the final model last. Per task and checkpoint the track holds the validation
loss of the weights (measured when they were kept), the full model's test accuracy, the circuit's
size and test loss, and the Jaccard similarity of its nodes with the final model's circuit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..config import PruneConfig
from ..errors import CircuitlabError
from ..files import read_json, write_json
from ..log import logger
from .seeds import jaccard

TRACK_KIND = "circuitlab-track"


def kept_checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """(step, run folder) of every kept checkpoint of ``run``, then the final model; a run without
    kept checkpoints is a one-line error."""
    from ..train.checkpoint import KEPT
    from ..train.runs import read_run

    info = read_run(run)
    found = []
    for folder in sorted((info.path / KEPT).glob("step-*")):
        if (folder / "model.safetensors").exists() and (folder / "config.json").exists():
            found.append((int(read_json(folder / "config.json", "checkpoint config")["final"]["steps"]), folder))
    if not found:
        raise CircuitlabError(f"run {str(info.path)!r} has no kept checkpoints; train it with "
                              "'circuitlab train ... --keep-checkpoints EVERY' to keep them")
    final_steps = (info.meta.get("final") or {}).get("steps") or info.train.steps
    return [*sorted(found), (int(final_steps), info.path)]


def _nodes(row: dict) -> list[str] | None:
    try:
        return read_json(Path(row["file"]), "circuit")["nodes"]
    except (KeyError, CircuitlabError, OSError):
        return None


def track_circuits(run: str | Path, config: PruneConfig, out: str | Path) -> dict[str, Any]:
    """Prune ``config``'s tasks at every kept checkpoint of ``run`` and the final model (see the module).

    Writes ``OUT/step-NNNNNN/`` per checkpoint, ``OUT/track.json`` and ``OUT/track.png``; returns the
    track document: one row per task and checkpoint."""
    from .pipeline import prune_model

    out = Path(out)
    points = kept_checkpoints(run)
    summaries = []
    for step, folder in points:
        logger.info(f"checkpoint at step {step}: {folder}")
        t0 = time.perf_counter()
        summary = prune_model(folder, config, out / f"step-{step:06d}",
                              extra_provenance={"checkpoint": {"step": step, "folder": str(folder)}})
        val = (read_json(folder / "config.json", "run config").get("final") or {}).get("val_loss")
        summaries.append((step, val, summary, time.perf_counter() - t0))
    final_nodes = {r["task"]: _nodes(r) for r in summaries[-1][2]["tasks"]}
    rows = []
    for step, val, summary, _ in summaries:
        for r in summary["tasks"]:
            nodes, last = _nodes(r), final_nodes.get(r["task"])
            rows.append({"task": r["task"], "step": step, "val_loss": val,
                         "full_model_accuracy": r["full_model_accuracy"], "full_model_loss": r["full_model_loss"],
                         "nodes": r["nodes"], "edges": r["edges"], "loss": r["loss"], "reached": r["reached"],
                         "jaccard_final": None if nodes is None or last is None else jaccard(nodes, last),
                         "file": r["file"]})
        for s in summary["skipped"]:
            rows.append({"task": s["task"], "step": step, "val_loss": val, "full_model_accuracy": s.get("accuracy"),
                         "full_model_loss": s.get("loss"), "nodes": None, "edges": None, "loss": None,
                         "reached": None, "jaccard_final": None, "skipped": s["reason"]})
    doc = {"kind": TRACK_KIND, "model": str(points[-1][1]), "steps": [s for s, _ in points],
           "target_loss": config.target_loss, "rows": rows,
           "seconds_per_checkpoint": [round(t, 2) for *_, t in summaries], "out": str(out)}
    write_json(out / "track.json", doc)
    plot_track(doc, out / "track.png")
    return doc


def plot_track(doc: dict, path: Path) -> Path:
    """Per task: circuit nodes and Jaccard with the final circuit against the training step."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import write_figure

    tasks = list(dict.fromkeys(r["task"] for r in doc["rows"]))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.5))
    for task in tasks:
        rows = [r for r in doc["rows"] if r["task"] == task and r["nodes"] is not None]
        ax.plot([r["step"] for r in rows], [r["nodes"] for r in rows], marker="o", label=task)
        bx.plot([r["step"] for r in rows], [r["jaccard_final"] for r in rows], marker="o", label=task)
    ax.set_xlabel("training step")
    ax.set_ylabel("circuit nodes")
    bx.set_xlabel("training step")
    bx.set_ylabel("Jaccard with the final circuit")
    bx.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=6)
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path
