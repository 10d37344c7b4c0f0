"""Jobs: the main job and friends, the only place that joins training, pruning and the store.

- ``prune_job``: prune a run's tasks (``circuitlab prune``), adding each circuit to a store if asked;
- ``run_job``: ``circuitlab.train.ensure_model`` then ``prune_job`` (``circuitlab run``, what ``make run`` runs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .config import PruneConfig, TrainConfig, config_hash, to_dict
from .errors import CircuitlabError
from .files import check_writable_dir, write_json
from .log import logger


def _check_store_conflicts(store: Path, info, config: PruneConfig, out: Path) -> None:
    """Refuse, before any pruning, to replace results this method already has in the store for the
    selected tasks (unless --overwrite) -- except the tasks this same prune already finished into
    ``out``, which a rerun continues."""
    from .prune.pipeline import circuit_path, finished_circuit
    from .store import list_methods
    from .tasks import pairs_source, resolve_tasks, task_context_for_run

    stored = {t for m, t in list_methods(store) if m == config.method}
    if not stored:
        return
    context = task_context_for_run(info, config.mine_from)
    run_prov = {"run_config_hash": config_hash(info.model, info.train)}
    clashes = [t.qualname for t in resolve_tasks(config.tasks, context) if t.qualname in stored
               and finished_circuit(circuit_path(out, t), config, run_prov, pairs_source(t, context)) is None]
    if clashes:
        raise CircuitlabError(f"store {str(store)!r} already has {config.method!r} results for task(s) "
                              f"{', '.join(clashes)}; pass --overwrite to replace them, or use another --store")


def _store_adder(store: Path, info, config: PruneConfig, out: Path, overwrite: bool):
    """Check (or record) the store before any pruning, and return what adds one circuit to it, and what
    adds a circuit finished by an earlier run if the store lacks it."""
    from .prune.circuit import task_key
    from .store import add_circuit, ensure_store, list_methods

    check_writable_dir(Path(store).parent, "--store")
    ensure_store(store, info, note=logger.info)  # a store of another model fails now, not after the first task
    if not overwrite:
        _check_store_conflicts(Path(store), info, config, out)

    def add(doc: dict) -> None:  # the circuit document, with its interchange and seed figures
        add_circuit(store, doc, config.method, run=info.path, overwrite=overwrite)

    def add_finished(doc: dict) -> None:
        if (config.method, task_key(doc.get("suite") or "", doc["task"])) not in list_methods(store):
            add_circuit(store, doc, config.method, run=info.path, overwrite=overwrite)

    return add, add_finished


def prune_job(run: str | Path, config: PruneConfig, out: str | Path, *, store: str | Path | None = None,
              overwrite: bool = False, extra_provenance: dict | None = None) -> dict[str, Any]:
    """Prune the run's tasks into ``out``; with ``store``, add every circuit to that activation store
    (an existing result of the same method and task is an error unless ``overwrite``). Output folders
    are checked for writability before any work; a rerun continues an interrupted prune."""
    from .prune.pipeline import prune_model
    from .train.runs import read_run

    info = read_run(run)  # a clear error for a folder that is not a finished run, before torch work
    out = Path(out)
    check_writable_dir(out, "--out")
    on_circuit = on_finished = None
    if store is not None:
        on_circuit, on_finished = _store_adder(Path(store), info, config, out, overwrite)
    return prune_model(info.path, config, out, on_circuit=on_circuit, on_finished=on_finished,
                       extra_provenance=extra_provenance)


def _check_code_folders(config: PruneConfig) -> None:
    """A bad ``--mine-from`` or ``--eval-on`` folder is one line before training (whether it holds
    enough code for pairs needs the model's tokenizer: checked before pruning)."""
    from .data.corpus import load_code_folder

    for flag, folder in (("--mine-from", config.mine_from), ("--eval-on", config.eval_on)):
        if folder is not None:
            load_code_folder(folder, flag)


def run_job(train_config: TrainConfig, prune_config: PruneConfig, out: str | Path, *,
            store: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """The main job: train (or reuse) the model, prune every task it solves, write ``out/summary.json``."""
    from .train import ensure_model

    t0 = time.perf_counter()
    check_writable_dir(Path(out), "--out")  # before training, not after
    _check_code_folders(prune_config)
    path, reused = ensure_model(train_config)
    train_seconds = time.perf_counter() - t0
    summary = prune_job(path, prune_config, out, store=store, overwrite=overwrite,
                        extra_provenance={"train_config": to_dict(train_config)})
    summary["model_reused"] = reused
    summary["train_seconds"] = train_seconds
    summary["total_seconds"] = time.perf_counter() - t0
    write_json(Path(out) / "summary.json", summary)
    return summary
