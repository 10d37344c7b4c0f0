"""The results table: one CSV row per cell, with provenance columns, readable without circuitlab.

``results.csv`` is rebuilt by the client from the cell files (``cells/*.json``), keyed by cell id, so
no cell is ever counted twice. Lists (faithfulness curves) and records (plugins, prune config) are JSON
strings in their cells. ``pandas.read_csv("results.csv")`` or the ``csv`` module read it back;
``read_table`` here turns the JSON columns back into lists.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..files import write_bytes

RESULTS = "results.csv"
#: Columns that differ between two runs of the same cells (timings, worker names, cache paths).
VOLATILE = ("seconds", "prune_seconds", "worker", "run", "cell_file")
JSON_COLUMNS = ("curve_fractions", "f_nodes_signed", "f_nodes_absolute", "ce_nodes_signed", "ce_nodes_absolute",
                "f_edges_signed", "f_edges_absolute", "ce_edges_signed", "ce_edges_absolute",
                "plugins", "prune_config", "circuit_factors", "f_circuit", "bisection", "kept_nodes")
#: The parts of a cell's circuit document that its table row reads (the rest stays in the cell file).
TABLE_CIRCUIT_KEYS = ("bisection", "nodes")
_MODEL = ("model_id", "group", "kind", "preset", "sparsity", "density", "width", "train_steps", "train_seed",
          "val_loss", "config_hash", "twin")
_RESULT = ("reached", "nodes", "edges", "weight_edges", "residual_edges", "k", "loss", "accuracy", "train_loss",
           "target_loss", "full_model_loss", "full_model_accuracy", "sufficiency", "necessity", "random_loss",
           "beats_full_model", "prune_seconds", "necessity_random", "loss_gap_to_full", "kl_to_full",
           "interchange_accuracy", "interchange_shift", "random_interchange_accuracy", "random_interchange_shift")
COLUMNS = (
    "cell_id", *_MODEL, "task", "pruner", "objective", "control", "prune_seed", "ablation", "freeze_norm",
    "nonsense", "status", "reason", "real_task_accuracy", "verdict", *_RESULT, "all_ablated",
    "cpr_nodes", "cmd_nodes", "cpr_edges", "cmd_edges", "m_full", "m_empty", "ce_full", "ce_empty",
    "total_nodes", "total_edges", *JSON_COLUMNS[:9], "circuit_factors", "f_circuit", "max_f_circuit",
    "overshoot_circuit", "bisection", "kept_nodes", "seconds",
    "circuitlab_version", "torch_version", "plugins", "corpus_hash", "pairs_sha256", "prune_config", "spec_hash",
    "run", "worker", "cell_file",
)


def _curves(f: dict) -> dict[str, Any]:
    row = {"curve_fractions": f["fractions"], "m_full": f["m_full"], "m_empty": f["m_empty"],
           "ce_full": f["ce_full"], "ce_empty": f["ce_empty"]}
    for level in ("nodes", "edges"):
        if level not in f:
            continue
        row[f"cpr_{level}"] = f[level]["cpr"]
        row[f"cmd_{level}"] = f[level]["cmd"]
        row[f"total_{level}"] = f[level]["total"]
        for rank in ("signed", "absolute"):
            row[f"f_{level}_{rank}"] = f[level][rank]["f"]
            row[f"ce_{level}_{rank}"] = f[level][rank]["ce"]
    if "circuit_relative" in f:
        c = f["circuit_relative"]
        row.update({"circuit_factors": c["factors"], "f_circuit": c["f"], "max_f_circuit": c["max_f"],
                    "overshoot_circuit": c["overshoot"]})
    return row


def cell_row(doc: dict, cell_file: str = "") -> dict[str, Any]:
    """The table row of one cell file."""
    cell, model, config = doc["cell"], doc["model"], doc["prune_config"]
    row: dict[str, Any] = {"cell_id": doc["cell_id"], **{k: model.get(k) for k in _MODEL},
                           "task": cell["task"], "pruner": cell["pruner"], "objective": cell["objective"],
                           "control": cell["control"], "prune_seed": cell["seed"], "ablation": config["ablation"],
                           "freeze_norm": config["freeze_norm"], "nonsense": config["nonsense"],
                           "status": doc["status"], "reason": doc.get("reason"), "seconds": doc.get("seconds"),
                           "prune_config": config, "spec_hash": doc.get("spec_hash"), "run": model.get("run"),
                           "worker": doc.get("worker"), "cell_file": cell_file}
    if doc["status"] == "done":
        result, prov = doc["result"], doc["provenance"]
        row.update({k: result.get(k) for k in _RESULT})
        row["all_ablated"] = result["validations"]["all_ablated"]
        row["bisection"] = (doc.get("circuit") or {}).get("bisection")  # (k, train loss) as evaluated
        if result.get("reached"):  # the kept node names, for circuits across pruning seeds (controls.seed_sets)
            row["kept_nodes"] = (doc.get("circuit") or {}).get("nodes")
        row["real_task_accuracy"] = doc["full_model"]["real_task_accuracy"]
        row["verdict"] = doc["full_model"].get("verdict")
        row.update(_curves(doc["faithfulness"]))
        row.update({"circuitlab_version": prov["circuitlab_version"], "torch_version": prov["torch_version"],
                    "plugins": prov["plugins"], "corpus_hash": prov["corpus_hash"],
                    "pairs_sha256": (prov.get("pairs") or {}).get("sha256")})
    return row


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return repr(value) if isinstance(value, float) else str(value)


def write_table(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write the rows (sorted by cell id) as CSV, atomically; returns the number of rows."""
    rows = sorted(rows, key=lambda r: r["cell_id"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _text(r.get(k)) for k in COLUMNS})
    write_bytes(path, buf.getvalue().encode())
    return len(rows)


_INTS = {"width", "train_steps", "train_seed", "prune_seed", "nodes", "edges", "weight_edges", "residual_edges",
         "k", "total_nodes", "total_edges"}
_BOOLS = {"freeze_norm", "nonsense", "reached", "beats_full_model"}
_TEXT = {"cell_id", "model_id", "group", "kind", "preset", "sparsity", "config_hash", "twin", "task", "pruner",
         "objective", "control", "ablation", "status", "reason", "verdict", "circuitlab_version", "torch_version",
         "corpus_hash", "pairs_sha256", "spec_hash", "run", "worker", "cell_file"}


def _parse(column: str, text: str) -> Any:
    if text == "":
        return None
    if column in JSON_COLUMNS:
        return json.loads(text)
    if column in _BOOLS:
        return text == "True"
    if column in _INTS:
        return int(text)
    if column in _TEXT:
        return text
    return float(text)


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a results table, typed (numbers, booleans, JSON lists)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _parse(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


MODELS = "models.csv"
MODEL_COLUMNS = ("model_id", "group", "kind", "preset", "sparsity", "density", "width", "train_steps", "train_seed",
                 "val_loss", "n_solved", "solved", "borderline", "accuracies", "train_seconds", "config_hash", "twin",
                 "run")


def _borderline(doc: dict, threshold: float | None) -> list[str] | None:
    """Tasks whose 95% Wilson interval contains ``threshold``; None when the doc has no intervals."""
    from ..tasks import BORDERLINE, verdict

    figures = doc["tasks"].values()
    if threshold is None or any(f.get("accuracy_low") is None for f in figures if f.get("accuracy") is not None):
        return None
    return [t for t, f in doc["tasks"].items()
            if f.get("accuracy") is not None and verdict(f["accuracy_low"], f["accuracy_high"], threshold) == BORDERLINE]


def write_models(path: str | Path, docs: Iterable[dict[str, Any]], threshold: float | None = None) -> None:
    """One row per model: validation loss, the tasks it prunes (verdict solved or borderline), those whose
    Wilson interval contains the threshold (``borderline``), every task's full-model test accuracy."""
    rows = []
    for d in sorted(docs, key=lambda d: d["model_id"]):
        rows.append({**{k: d.get(k) for k in MODEL_COLUMNS}, "n_solved": len(d["solved"]), "solved": d["solved"],
                     # tasks whose 95% interval contains the threshold: on another machine they may flip
                     "borderline": d["borderline"] if "borderline" in d else _borderline(d, threshold),
                     "accuracies": {t: f["accuracy"] for t, f in d["tasks"].items()}})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MODEL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _text(r.get(k)) for k in MODEL_COLUMNS})
    write_bytes(path, buf.getvalue().encode())
