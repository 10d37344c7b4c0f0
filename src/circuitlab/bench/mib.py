"""``circuitlab bench export-mib DIR``: circuit scores in the MIB circuit track's submission layout.

For every real cell (no control) it writes
``mib/circuits/{method}_{ablation}_node/{task}_{model}/importances.json`` in the JSON layout of EAP-IG's
``Graph.to_json`` (``cfg``, ``nodes``: ``{name: {"in_graph", "score"}}``, ``edges``:
``{"src->dst": {"score", "in_graph"}}``), with ``_`` inside task and model names replaced by ``-`` as
MIB's folder names require. A task is named by its bare name (``for-while``), or by its key with ``-``
for ``:`` (``loops-for-while``) where two suites in the export have a task of that name. Node scores are the pruner's mask scores; an edge's score is the smaller of
its two endpoints' scores (the ranking the bench's edge curves use); ``in_graph`` marks the pruned
circuit. ``mib/scores.json`` holds the leaderboard's results layout (per model and task, CPR and CMD
curves: ``edge_counts`` and ``faithfulness``) from the bench's own curves.

MIB's leaderboard scores only its own models (GPT-2 small, Qwen2.5, Gemma 2, Llama 3.1) with heads and
MLPs as nodes; circuitlab's nodes are channels of its own models. The files follow MIB's layout so
MIB's tooling can read them, but names are circuitlab node names (``0.mlp.neuron.5``), and a leaderboard
submission needs a circuitlab method run on MIB's models. See docs/bench.md.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import CircuitlabError
from ..files import write_bytes, write_json
from .documents import CellDocument, read_document


def _mib_name(text: str) -> str:
    return text.replace("_", "-")


def _mib_task(key: str, keys: set[str]) -> str:
    """A task's MIB name: its bare name, or its whole ``suite:task`` key where another suite in
    ``keys`` has a task of the same name."""
    bare = key.rpartition(":")[2]
    shared = sum(k.rpartition(":")[2] == bare for k in keys) > 1
    return _mib_name((key if shared else bare).replace(":", "-"))


def _graph_json(model, circuit: dict) -> dict[str, Any]:
    import torch

    from ..model.nodes import NodeSpace
    from ..prune.edges import all_edges

    space = NodeSpace.from_config(model.config)
    names = space.names()
    scores = torch.tensor([float("nan") if s is None else s for s in circuit["scores"]], dtype=torch.float32)
    kept = torch.zeros(len(names), dtype=torch.bool)
    for n in circuit["nodes"]:
        kept[space.index(n)] = True
    src, dst = all_edges(model)
    edge_scores = torch.minimum(scores[src], scores[dst]).tolist()
    edge_in = (kept[src] & kept[dst]).tolist()
    c = model.config
    return {
        "cfg": {"n_layers": c.n_layer, "n_heads": c.n_head, "parallel_attn_mlp": False, "d_model": c.d_model,
                "node_unit": "circuitlab channel (LAYER.SITE.INDEX)", "n_nodes": len(names)},
        "nodes": {n: {"in_graph": bool(k), "score": float(s)} for n, k, s in zip(names, kept.tolist(),
                                                                                 scores.tolist(), strict=True)},
        "edges": {f"{names[a]}->{names[b]}": {"score": float(s), "in_graph": bool(i)}
                  for a, b, s, i in zip(src.tolist(), dst.tolist(), edge_scores, edge_in, strict=True)},
    }


def _leaderboard_entry(doc: dict) -> dict[str, Any]:
    f = doc["faithfulness"]["edges"] if "edges" in doc["faithfulness"] else doc["faithfulness"]["nodes"]
    return {"CPR": {"edge_counts": f["signed"].get("edges_evaluated", f["signed"]["n"]), "faithfulness": f["signed"]["f"]},
            "CMD": {"edge_counts": f["absolute"].get("edges_evaluated", f["absolute"]["n"]),
                    "faithfulness": f["absolute"]["f"]}}


def export_mib(out: str | Path, target: str | Path | None = None) -> dict[str, Any]:
    """Write importances.json per real cell and scores.json; returns the list of files."""
    from ..train.runs import load_model

    out = Path(out)
    root = Path(target) if target else out / "mib"
    cells = sorted((out / "cells").glob("*.json")) if (out / "cells").is_dir() else []
    if not cells:
        raise CircuitlabError(f"{str(out)!r} has no finished cells (cells/*.json); run 'circuitlab bench' first")
    loaded: dict[str, Any] = {}
    files, board = [], defaultdict(lambda: defaultdict(dict))
    # a file that does not fit its record: one line naming the file and key
    docs = [doc for doc in (read_document(path, CellDocument).to_json() for path in cells)
            if doc["status"] == "done" and doc["cell"]["control"] == "none"]
    keys = {doc["cell"]["task"] for doc in docs}
    for doc in docs:
        cell, model_id = doc["cell"], doc["model"]["model_id"]
        if model_id not in loaded:
            loaded[model_id] = load_model(doc["model"]["run"])[0]
        method = cell["pruner"] if cell["objective"] == "binary_ce" else f"{cell['pruner']}+{cell['objective']}"
        method = f"{method}-s{cell['seed']}"
        task, model_key = _mib_task(cell["task"], keys), _mib_name(model_id)
        folder = root / "circuits" / f"{method}_{doc['prune_config']['ablation']}_node" / f"{task}_{model_key}"
        write_bytes(folder / "importances.json", json.dumps(_graph_json(loaded[model_id], doc["circuit"])).encode())
        files.append(str(folder / "importances.json"))
        board[method][model_key][task] = _leaderboard_entry(doc)
    scores = [{"method_name": method, "results": [{"model_id": m, "scores": dict(tasks)} for m, tasks in by.items()]}
              for method, by in sorted(board.items())]
    write_json(root / "scores.json", scores)
    return {"kind": "circuitlab-mib-export", "root": str(root), "files": files, "scores": str(root / "scores.json")}
