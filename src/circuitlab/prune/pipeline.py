"""The prune pipeline behind ``circuitlab prune`` and ``circuitlab run`` (no click, no store here).

``prune_model(run, config, out)`` prunes the tasks ``config.tasks`` selects of one run folder, each
through the steps of ``prune.task.prune_task`` (the search in worker processes with ``--jobs``), and
writes ``circuits/<suite>.<task>.json`` and ``summary.json`` under ``out``. ``on_circuit`` is called with
each circuit's document (``Circuit.to_json()`` with its interchange and seed figures) as soon as it is
written (``circuitlab.jobs`` uses it to add circuits to a store). Progress goes to the ``circuitlab``
logger.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import PruneConfig, to_dict
from ..errors import CircuitlabError
from ..files import write_json
from ..log import logger
from ..machine import machine_provenance
from .circuit import Circuit, circuit_file_stem, circuit_row, geomean, task_key
from .interchange import interchange_row
from .seeds import seeds_row
from .task import LoadedModel, Skipped, prepare_task


def _file_stem(task) -> str:
    return circuit_file_stem(task.qualname)


def circuit_path(out: Path, task) -> Path:
    """``out/circuits/<suite>.<task>.json``; a folder written before circuits were keyed by suite holds
    ``<task>.json``, which is read where it is when it is this task's."""
    path = out / "circuits" / f"{_file_stem(task)}.json"
    old = out / "circuits" / f"{task.name}.json"
    if not path.exists() and old.exists():
        try:
            doc = json.loads(old.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return path
        if isinstance(doc, dict) and task_key(doc.get("suite") or "", doc.get("task") or "") == task.qualname:
            return old
    return path


def verdict_fields(solved: dict | None) -> dict:
    """The summary row's verdict columns (None for circuits written before verdicts existed)."""
    solved = solved or {}
    return {"verdict": solved.get("verdict"), "task_accuracy": solved.get("accuracy"),
            "accuracy_low": solved.get("low"), "accuracy_high": solved.get("high")}


def _result_settings(prune_config: dict | None) -> dict | None:
    """The settings a circuit depends on: all but how many worker processes shared the tasks and where
    its transfer figures came from (those are checked by their pairs)."""
    return None if prune_config is None else {k: v for k, v in prune_config.items() if k not in ("jobs", "eval_on")}


def finished_circuit(path: Path, config: PruneConfig, run_prov: dict, pairs: dict,
                     transfer_pairs: dict | None = None) -> dict | None:
    """The circuit document at ``path`` if an earlier run of the same settings on the same model and
    pairs finished it (an interrupted prune is continued by running it again), else None. With
    ``transfer_pairs`` (``--eval-on``), its transfer figures must come from those pairs too."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        prov = doc["provenance"]
        same = (doc.get("kind") == "circuitlab-circuit" and _result_settings(prov.get("prune_config")) ==
                _result_settings(to_dict(config))
                and prov.get("run_config_hash") == run_prov["run_config_hash"] and prov.get("pairs") == pairs
                and (transfer_pairs is None or (doc.get("transfer") or {}).get("pairs") == transfer_pairs))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return doc if same else None


def _summary(info, config: PruneConfig, rows: list, skipped: list, seconds: float, out: Path, provenance: dict) -> dict:
    reached = [r for r in rows if r["reached"]]
    return {
        "kind": "circuitlab-prune-summary", "model": str(info.path), "pruner": config.pruner,
        "objective": config.objective, "target_loss": config.target_loss, "ablation": config.ablation,
        "freeze_norm": config.freeze_norm, "nonsense": config.nonsense, "calibrate": config.calibrate,
        "min_accuracy": config.min_accuracy,
        "seed": config.seed, "tasks": rows, "skipped": skipped,
        "geomean_edges": geomean(r["edges"] for r in reached), "geomean_nodes": geomean(r["nodes"] for r in reached),
        "n_circuits": len(rows), "n_reached": len(reached),
        "n_solved": sum(r.get("verdict") == "solved" for r in rows),
        "n_borderline": sum(r.get("verdict") == "borderline" for r in rows),
        "geomean_edges_solved": geomean(r["edges"] for r in reached if r.get("verdict") == "solved"),
        "geomean_nodes_solved": geomean(r["nodes"] for r in reached if r.get("verdict") == "solved"), "seconds": seconds, "out": str(out),
        "provenance": provenance,
    }


def prune_model(run: str | Path, config: PruneConfig, out: str | Path, *,
                on_circuit: Callable[[dict], None] | None = None,
                on_finished: Callable[[dict], None] | None = None,
                extra_provenance: dict | None = None) -> dict[str, Any]:
    """Prune every task ``config`` selects in the run folder ``run``; write the results under ``out``.

    A task whose circuit an earlier run with the same settings already wrote is not pruned again: its
    document is passed to ``on_finished`` and its row reused. Returns the summary document (also
    written to ``out/summary.json``).
    """
    import torch

    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _prune_model(Path(run), config, Path(out), on_circuit, on_finished, extra_provenance or {})
    finally:
        torch.set_num_threads(old_threads)


def _tasks(info, config: PruneConfig) -> tuple[Any, list, Any]:
    """(task context, the tasks to prune, the ``--eval-on`` Transfer or None); bad folders fail here."""
    from ..tasks import mined_tasks, resolve_tasks, task_context_for_run
    from .transfer import Transfer

    context = task_context_for_run(info, config.mine_from)
    tasks = resolve_tasks(config.tasks, context)
    if not tasks:
        raise CircuitlabError(f"--tasks {config.tasks!r} selects no tasks")
    if config.mine_from is not None:
        mined_tasks(tasks, context)  # a folder with too little code is one line now, before any pruning
    return context, tasks, Transfer(info, config, tasks) if config.eval_on is not None else None


def _circuit_doc(circuit: Circuit, seeds: dict | None, model, test, config: PruneConfig) -> dict[str, Any]:
    """The circuit's JSON document with its interchange figures and, with several seeds, their distribution."""
    from .interchange import interchange

    doc = circuit.to_json()
    doc["interchange"] = interchange(model, test, circuit.kept, draws=config.random_draws, seed=config.seed + 2)
    if seeds is not None:
        doc["seeds"] = seeds
    return doc


def _prune_model(run: Path, config: PruneConfig, out: Path, on_circuit, on_finished,
                 extra_provenance: dict) -> dict[str, Any]:
    from .. import plugins
    from ..provenance import build_provenance, run_fields
    from ..tasks import check_suite, pairs_source
    from .ablation import ablation_values
    from .parallel import TaskJob, prune_tasks
    from .seeds import collect_seeds, seed_jobs

    t_start = time.perf_counter()
    check_suite(config.tasks)  # did-you-mean before loading anything
    mask_entry, objective_entry = plugins.get("pruner", config.pruner), plugins.get("objective", config.objective)
    loaded = LoadedModel.load(run, config.device)
    context, tasks, transfer = _tasks(loaded.info, config)
    values = None
    if config.ablation != "task_mean":  # the same values for every task: computed (or read) once
        values = ablation_values(loaded.model, loaded.tokenizer, loaded.info, config.ablation,
                                 device=loaded.device, progress=True)
    paths = _circuit_paths(tasks, out)
    by_index: dict[int, dict] = {}
    skipped: list[dict] = []
    values_of, test_of = {}, {}

    left = []  # tasks an earlier run did not finish, known before any worker starts (one job left: no workers)
    for i, task in enumerate(tasks):
        done = finished_circuit(paths[i], config, run_fields(loaded.info), pairs_source(task, context),
                                transfer.source(task) if transfer else None)
        if done is None:
            left.append(i)
            continue
        logger.info(f"done {task.qualname}: kept from an earlier run ({paths[i]})")
        if on_finished is not None:
            on_finished(done)
        by_index[i] = _row(done, task, paths[i])

    def jobs():
        """Each task's pruning jobs, made one task at a time: workers start on the first while the
        rest are prepared (full-model verdicts, pairs, ablation values)."""
        for i in left:
            task = tasks[i]
            data = prepare_task(loaded, task, config, context=context, values=values, extra_provenance=extra_provenance)
            if isinstance(data, Skipped):
                skipped.append(data.to_json())
                continue
            values_of[i], test_of[i] = data.values, data.test
            yield from seed_jobs(TaskJob(index=i, data=data), config)  # one job per pruning seed (prune.seeds)

    # Each circuit is written (and handed to the store) as soon as it finishes, so an interrupt keeps it.
    with contextlib.closing(prune_tasks(loaded.model, loaded.info.path, jobs(), config, mask_entry,
                                        objective_entry, count=len(left) * config.seeds)) as finished:
        for i, circuit, seeds in collect_seeds(finished, config):
            doc = _circuit_doc(circuit, seeds, loaded.model, test_of[i].to(loaded.device), config)
            if transfer is not None and (figures := transfer.figures(loaded.model, loaded.tokenizer, circuit,
                                                                     values_of[i], loaded.device)) is not None:
                doc["transfer"] = figures
            write_json(paths[i], doc)
            if on_circuit is not None:
                on_circuit(doc)
            by_index[i] = _row(doc, tasks[i], paths[i])
    rows = [by_index[i] for i in sorted(by_index)]  # task order, whatever order the workers finished in
    suites = [plugins.get("suite", s) for s in dict.fromkeys(t.suite for t in tasks)
              if s in plugins.get_registry().entries["suite"]]
    provenance = build_provenance(plugins=[mask_entry, objective_entry, *suites], machine=machine_provenance(),
                                  prune_config=to_dict(config), **run_fields(loaded.info), **extra_provenance)
    if context.mine_from is not None:
        provenance["mine_from"] = context.mine_from.provenance()
    if transfer is not None:
        provenance["eval_on"] = transfer.provenance
    summary = _summary(loaded.info, config, rows, skipped, time.perf_counter() - t_start, out, provenance)
    write_json(out / "summary.json", summary)
    return summary


def _circuit_paths(tasks: list, out: Path) -> list[Path]:
    """``out/circuits/<suite>.<task>.json`` per task (an older folder's ``<task>.json`` where it is this task's)."""
    return [circuit_path(out, task) for task in tasks]


def _row(doc: dict, task, path: Path) -> dict:
    """A circuit's summary row, with its verdict, suite and file."""
    return {**circuit_row(doc), **interchange_row(doc), **seeds_row(doc),
            **verdict_fields(doc["provenance"].get("solved")), "suite": task.suite, "file": str(path)}
