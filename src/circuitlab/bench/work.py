"""What a Dask worker runs: prepare a model (train or reuse, judge every task) and prune one cell.

Both write their result atomically as one JSON file under the bench folder (``models/ID.json``,
``cells/ID.json``: ``documents.ModelDocument`` and ``CellDocument``) and return it; both return the
existing file instead of recomputing when it is already there and fits its record (a retried task
whose first try finished just before its worker died). They never touch the activation stores: only
the client appends circuits there. Training is ``circuitlab.train.ensure_model``; a task's verdict
is ``circuitlab.prune.task.judge_task``, the first step of ``prune_task``, which prunes the cells.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, TypeVar

from ..config import PruneConfig, to_dict
from ..errors import CircuitlabError
from ..files import cache_dir, write_json
from ..log import logger
from .documents import CELL_KIND, MODEL_KIND, CellDocument, ModelDocument, TaskFigures, read_document
from .plan import Cell, ModelSpec, prune_config, tasks_key
from .spec import BenchSpec

__all__ = ["CELL_KIND", "MODEL_KIND", "cell_path", "model_path", "prepare_model", "read_done", "run_cell"]

T = TypeVar("T")


def model_path(out: str | Path, model_id: str) -> Path:
    return Path(out) / "models" / f"{model_id}.json"


def cell_path(out: str | Path, cell: Cell) -> Path:
    return Path(out) / "cells" / f"{cell.cell_id}.json"


def read_done(path: Path, cls: type[T]) -> T | None:
    """A finished result file as its record, or None (a damaged file, or one that does not fit the
    record, counts as not finished)."""
    if not path.exists():
        return None
    try:
        return read_document(path, cls)
    except CircuitlabError as exc:
        logger.debug(str(exc))
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


def _judging_config(spec: BenchSpec) -> PruneConfig:
    """The settings a task's verdict depends on: the spec's pair counts, threshold and code folder."""
    p = spec.prune
    return PruneConfig(n_train=p.n_train, n_test=p.n_test, min_accuracy=p.min_accuracy, mine_from=p.mine_from)


def _evaluate_tasks(loaded, spec: BenchSpec) -> dict[str, TaskFigures]:
    """The full model's verdict on every spec task (``prune.task.judge_task``, as ``circuitlab prune``
    judges it); the pair source must match the spec's pin."""
    from ..prune.task import Skipped, judge_task
    from ..tasks import pairs_source, resolve_tasks, task_context_for_run

    config = _judging_config(spec)
    context = task_context_for_run(loaded.info, config.mine_from)
    figures = {}
    for qualname, pinned in spec.tasks.items():
        task = resolve_tasks(qualname, context)[0]
        source = pairs_source(task, context)
        if source.get("sha256", source.get("folder_hash")) != pinned:  # a set file, or prune.mine_from
            raise CircuitlabError(f"{spec.source}: tasks.\"{qualname}\": the pairs used for this model come from "
                                  f"{source} instead of the pinned set {pinned[:12]}...; mined tasks need the corpus "
                                  "their sets were cut from (bench.corpus)")
        judged = judge_task(loaded, task, config, context)
        if isinstance(judged, Skipped):
            figures[qualname] = TaskFigures(usable=judged.verdict is not None,
                                            problem=None if judged.verdict is not None else judged.reason,
                                            accuracy=judged.accuracy, loss=judged.loss, pairs=source,
                                            accuracy_low=judged.accuracy_low, accuracy_high=judged.accuracy_high,
                                            verdict=judged.verdict)
            continue
        full = judged.full
        figures[qualname] = TaskFigures(usable=True, problem=None, accuracy=full["accuracy"], loss=full["loss"],
                                        pairs=source, accuracy_low=full["accuracy_low"],
                                        accuracy_high=full["accuracy_high"], verdict=full["verdict"])
    return figures


def _reusable(done: ModelDocument | None, model: ModelSpec, spec: BenchSpec) -> bool:
    # The cache folder's name carries the sparsity plugin's version: after an upgrade it is another folder.
    return (done is not None and done.config_hash == model.config_hash and done.tasks_key == tasks_key(spec)
            and Path(done.run).resolve() == model_cache_dir(model).resolve()
            and Path(done.run, "model.safetensors").exists())


def prepare_model(model: ModelSpec, spec: BenchSpec, out: str) -> dict[str, Any]:
    """Train (or reuse) one model, cache its node means, judge every task; write ``models/ID.json``."""
    from ..prune.ablation import ablation_values
    from ..prune.task import LoadedModel
    from ..tasks import BORDERLINE, UNSOLVED
    from ..train import ensure_model

    done = read_done(model_path(out, model.model_id), ModelDocument)
    if _reusable(done, model, spec):
        return done.to_json()
    _threads(spec.threads)
    t0 = time.perf_counter()
    run, reused = ensure_model(model.train, model.shape, path=model_cache_dir(model), init=model.kind == "init",
                               progress=False)
    train_seconds = 0.0 if reused else time.perf_counter() - t0
    loaded = LoadedModel.load(run)
    if spec.prune.ablation == "mean" or "mean" in spec.controls.ablations:
        # computed once here, cached in the run folder for every cell
        ablation_values(loaded.model, loaded.tokenizer, loaded.info, "mean")
    tasks = _evaluate_tasks(loaded, spec)
    info = loaded.info
    doc = ModelDocument(
        **model.describe(), tasks_key=tasks_key(spec), run=str(run), reused=reused, train_seconds=train_seconds,
        seconds=time.perf_counter() - t0, val_loss=info.meta.get("final", {}).get("val_loss"), tasks=tasks,
        solved=[t for t, f in tasks.items() if f.verdict not in (None, UNSOLVED)],
        borderline=[t for t, f in tasks.items() if f.verdict == BORDERLINE],
        train_config=to_dict(model.train), model_config=to_dict(info.model), provenance=info.provenance,
        worker=_worker())
    data = doc.to_json()
    write_json(model_path(out, model.model_id), data)
    return data


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_cell(cell: Cell, model_doc: dict, spec: BenchSpec, out: str) -> dict[str, Any]:
    """Prune one cell and measure its faithfulness curves; write ``cells/ID.json`` and return it."""
    path = cell_path(out, cell)
    done = read_done(path, CellDocument)
    if done is not None:
        return done.to_json()
    _threads(spec.threads)
    from .cell import compute_cell

    t0 = time.perf_counter()
    config = prune_config(spec, cell)
    fields = compute_cell(cell, config, model_doc)
    doc = CellDocument(kind=CELL_KIND, cell_id=cell.cell_id, method_label=cell.method_label, cell=cell,
                       seconds=time.perf_counter() - t0, worker=_worker(), spec_hash=spec.spec_hash, **fields)
    data = doc.to_json()
    write_json(path, data)
    logger.debug(f"cell {cell.cell_id} written")
    return data
