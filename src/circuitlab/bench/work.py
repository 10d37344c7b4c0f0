"""What a Dask worker runs: prepare a model (train or reuse, evaluate every task) and prune one cell.

Both write their result atomically as one JSON file under the bench folder (``models/ID.json``,
``cells/ID.json``) and return it; both return the existing file instead of recomputing when it is
already there (a retried task whose first try finished just before its worker died). They never touch
the activation stores: only the client appends circuits there.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from ..config import to_dict
from ..errors import CircuitlabError
from ..files import cache_dir, read_json, write_json
from ..log import logger
from .plan import Cell, ModelSpec, prune_config, tasks_key
from .spec import BenchSpec

MODEL_KIND = "circuitlab-bench-model"
CELL_KIND = "circuitlab-bench-cell"


def model_path(out: str | Path, model_id: str) -> Path:
    return Path(out) / "models" / f"{model_id}.json"


def cell_path(out: str | Path, cell: Cell) -> Path:
    return Path(out) / "cells" / f"{cell.cell_id}.json"


def read_done(path: Path) -> dict | None:
    """A finished result file, or None (a damaged one counts as not finished)."""
    if not path.exists():
        return None
    try:
        return read_json(path, "bench result")
    except CircuitlabError:
        return None


def model_cache_dir(model: ModelSpec) -> Path:
    """Cache folder of a bench model: keyed by the config hash and the sparsity plugin's version."""
    from .. import plugins
    from ..config import config_hash

    plugin = plugins.get("sparsity", model.train.sparsity).provenance()
    key = config_hash(model.train, model.shape, {"plugin": plugin, "kind": model.kind})
    t = model.train
    return cache_dir() / "bench-runs" / f"{t.preset}-{t.sparsity}-d{t.density:g}-{model.kind}-{key}"


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _train_or_reuse(model: ModelSpec) -> tuple[Path, bool, float]:
    from ..train import init_run, train_run

    path = model_cache_dir(model)
    t0 = time.perf_counter()
    if (path / "model.safetensors").exists() and (path / "config.json").exists():
        return path, True, 0.0
    if model.kind == "init":
        if path.exists():  # an interrupted write of the untrained control: start it again
            import shutil

            shutil.rmtree(path)
        init_run(model.train, path, model_config=model.shape)
    else:
        resume = (path / "checkpoint.safetensors").exists()
        train_run(model.train, path, model_config=model.shape, resume=resume, progress=False)
    return path, False, time.perf_counter() - t0


def _evaluate_tasks(run: Path, spec: BenchSpec) -> dict[str, dict]:
    """Full-model test figures of every spec task; the pair source must match the spec's pin."""
    from ..tasks import check_tokens, evaluate, load_pairs, pairs_source, resolve_tasks, task_context_for_run
    from ..train.runs import load_model

    model, tok, info = load_model(run)
    context = task_context_for_run(info, spec.prune.mine_from)
    figures = {}
    for qualname, pinned in spec.tasks.items():
        task = resolve_tasks(qualname, context)[0]
        source = pairs_source(task, context)
        if source.get("sha256", source.get("folder_hash")) != pinned:  # a set file, or prune.mine_from
            raise CircuitlabError(f"{spec.source}: tasks.\"{qualname}\": the pairs used for this model come from "
                                  f"{source} instead of the pinned set {pinned[:12]}...; mined tasks need the corpus "
                                  "their sets were cut from (bench.corpus)")
        check = check_tokens(task, tok)
        pairs = check_tokens(load_pairs(task, "test", spec.prune.n_test, context), tok).pairs if check.usable else ()
        full = evaluate(model, tok, list(pairs)) if pairs else {"loss": None, "accuracy": None}
        figures[qualname] = {"usable": bool(check.usable and pairs), "problem": check.problem,
                             "accuracy": full["accuracy"], "loss": full["loss"], "pairs": source,
                             "accuracy_low": full.get("accuracy_low"), "accuracy_high": full.get("accuracy_high")}
    return figures


def prepare_model(model: ModelSpec, spec: BenchSpec, out: str) -> dict[str, Any]:
    """Train (or reuse) one model, cache its node means, evaluate every task; write ``models/ID.json``."""
    done = read_done(model_path(out, model.model_id))
    # The cache folder's name carries the sparsity plugin's version: after an upgrade it is another folder.
    if (done is not None and done.get("config_hash") == model.config_hash and done.get("tasks_key") == tasks_key(spec)
            and Path(done["run"]).resolve() == model_cache_dir(model).resolve()
            and Path(done["run"], "model.safetensors").exists()):
        return done
    _threads(spec.threads)
    t0 = time.perf_counter()
    run, reused, train_seconds = _train_or_reuse(model)
    from ..prune.ablation import ablation_values
    from ..train.runs import load_model, read_run

    info = read_run(run)
    if spec.prune.ablation == "mean" or "mean" in spec.controls.ablations:
        m, tok, info = load_model(run)
        ablation_values(m, tok, info, "mean")  # computed once here, cached in the run folder for every cell
    tasks = _evaluate_tasks(run, spec)
    min_acc = spec.prune.min_accuracy
    doc = {
        "kind": MODEL_KIND, **model.describe(), "tasks_key": tasks_key(spec), "run": str(run), "reused": reused, "train_seconds": train_seconds,
        "seconds": time.perf_counter() - t0, "val_loss": info.meta.get("final", {}).get("val_loss"),
        "tasks": tasks,
        "solved": [t for t, f in tasks.items() if f["accuracy"] is not None and f["accuracy"] >= min_acc],
        "train_config": to_dict(model.train), "model_config": to_dict(info.model),
        "provenance": info.provenance, "worker": _worker(),
    }
    write_json(model_path(out, model.model_id), doc)
    return doc


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_cell(cell: Cell, model_doc: dict, spec: BenchSpec, out: str) -> dict[str, Any]:
    """Prune one cell and measure its faithfulness curves; write ``cells/ID.json`` and return it."""
    path = cell_path(out, cell)
    done = read_done(path)
    if done is not None:
        return done
    _threads(spec.threads)
    from .cell import compute_cell

    t0 = time.perf_counter()
    config = prune_config(spec, cell)
    doc = compute_cell(cell, config, model_doc)
    doc.update({"kind": CELL_KIND, "cell_id": cell.cell_id, "method_label": cell.method_label,
                "seconds": time.perf_counter() - t0, "worker": _worker(), "spec_hash": spec.spec_hash})
    write_json(path, doc)
    logger.debug(f"cell {cell.cell_id} written")
    return doc
