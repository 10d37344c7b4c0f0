"""Jobs: the main job and friends, the only place that joins training, pruning and the store.

- ``ensure_model``: train the model of a config, or reuse the one cached under its config hash;
- ``prune_job``: prune a run's tasks (``circuitlab prune``), adding each circuit to a store if asked;
- ``run_job``: ``ensure_model`` then ``prune_job`` (``circuitlab run``, what ``make run`` runs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .config import ModelConfig, PruneConfig, TrainConfig, to_dict
from .files import write_json
from .log import logger


def ensure_model(config: TrainConfig, model_config: ModelConfig | None = None,
                 progress: bool = True) -> tuple[Path, bool]:
    """Train the model, or reuse the finished one cached under the same config hash. (path, reused)."""
    from .train import cached_run_dir, train_run

    model_config = model_config or config.model_config()
    path = cached_run_dir(config, model_config)
    if (path / "model.safetensors").exists() and (path / "config.json").exists():
        logger.info(f"reusing cached model {path}")
        return path, True
    resume = (path / "checkpoint.safetensors").exists()
    logger.info(f"{'resuming' if resume else 'training'} model into {path}")
    train_run(config, path, model_config=model_config, resume=resume, progress=progress)
    return path, False


def _store_adder(store: str | Path, info, method: str):
    """Check (or record) the store before any pruning, and return what adds one circuit to it."""
    from .store import add_method_result, ensure_store

    ensure_store(store, info, note=logger.info)  # a store of another model fails now, not after the first task

    def add(circuit) -> None:
        add_method_result(store, method=method, task=circuit.task, scores=circuit.scores, kept=circuit.kept,
                          loss=circuit.loss, edges=circuit.edge_count, nodes=circuit.node_count,
                          provenance=circuit.provenance, edge_list=[list(e) for e in circuit.edges],
                          run=info.path, overwrite=True)  # re-pruning a task replaces that method's result

    return add


def prune_job(run: str | Path, config: PruneConfig, out: str | Path, *, store: str | Path | None = None,
              extra_provenance: dict | None = None) -> dict[str, Any]:
    """Prune the run's tasks into ``out``; with ``store``, add every circuit to that activation store."""
    from .prune.pipeline import prune_model
    from .train.runs import read_run

    info = read_run(run)  # a clear error for a folder that is not a finished run, before torch work
    on_circuit = _store_adder(store, info, config.method) if store is not None else None
    return prune_model(info.path, config, out, on_circuit=on_circuit, extra_provenance=extra_provenance)


def run_job(train_config: TrainConfig, prune_config: PruneConfig, out: str | Path, *,
            store: str | Path | None = None) -> dict[str, Any]:
    """The main job: train (or reuse) the model, prune every task it solves, write ``out/summary.json``."""
    t0 = time.perf_counter()
    path, reused = ensure_model(train_config)
    train_seconds = time.perf_counter() - t0
    summary = prune_job(path, prune_config, out, store=store,
                        extra_provenance={"train_config": to_dict(train_config)})
    summary["model_reused"] = reused
    summary["train_seconds"] = train_seconds
    summary["total_seconds"] = time.perf_counter() - t0
    write_json(Path(out) / "summary.json", summary)
    return summary
