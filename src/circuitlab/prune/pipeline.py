"""The prune pipeline behind ``circuitlab prune`` and ``circuitlab run`` (no click, no store here).

``prune_model(run, config, out)`` prunes the tasks ``config.tasks`` selects of one run folder and
writes ``circuits/<task>.json`` and ``summary.json`` under ``out``. ``on_circuit`` is called with each
circuit as soon as it is written (``circuitlab.jobs`` uses it to add circuits to a store). Progress
goes to the ``circuitlab`` logger.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import PruneConfig, config_hash, to_dict
from ..errors import CircuitlabError, PluginError
from ..files import write_json
from ..log import logger
from ..machine import machine_provenance
from .circuit import Circuit, circuit_row, geomean
from .interchange import interchange_row
from .seeds import seeds_row


def _file_stem(task, names_seen: dict[str, int]) -> str:
    stem = task.name if names_seen[task.name] == 1 else f"{task.suite}-{task.name}"
    return stem.replace("/", "_").replace(":", "-")


def _device(name: str):
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise CircuitlabError(f"--device {name!r} is not a torch device ({exc}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CircuitlabError(f"--device {name!r}: CUDA is not available here; use --device cpu")
    return dev


def task_pairs(task, tok, context, config: PruneConfig, model, dev) -> tuple[Any, Any, dict | None, dict | None]:
    """(train pairs, test pairs, full-model test figures, skip record): the pairs to prune on, or why not.

    The ``min_accuracy`` gate is judged on the real test pairs. With ``config.nonsense`` the returned
    pairs are the nonsense control (``circuitlab.tasks.nonsense_pairs``: answers flipped at random per
    pair, seeded by task and split), and the full-model figures are those on the nonsense test pairs.
    """
    from ..tasks import UNSOLVED, check_tokens, evaluate, load_pairs, nonsense_pairs, nonsense_seed, verdict

    def skip(reason: str, **figures) -> tuple:
        logger.info(f"skip {task.qualname}: {reason}")
        return None, None, None, {"task": task.name, "suite": task.suite, "accuracy": None, **figures,
                                  "reason": reason}

    try:
        check = check_tokens(task, tok)
        if not check.usable:
            return skip(f"unusable with this tokenizer: {check.problem}")
        train_pairs = check_tokens(load_pairs(task, "train", config.n_train, context), tok).pairs
        test_pairs = check_tokens(load_pairs(task, "test", config.n_test, context), tok).pairs
    except PluginError as exc:  # the task's generator (a plugin suite's code) failed: skip it, prune the rest
        logger.warning(f"circuitlab: {exc}")
        return skip(str(exc))
    if not train_pairs or not test_pairs:
        return skip("no usable train or test pairs")
    full = evaluate(model, tok, list(test_pairs), device=dev)
    full["verdict"] = verdict(full["accuracy_low"], full["accuracy_high"], config.min_accuracy)
    if full["verdict"] == UNSOLVED:  # borderline tasks are pruned and flagged, not dropped (docs/training.md)
        return skip(f"full-model test accuracy {full['accuracy']:.3f} (95% interval {full['accuracy_low']:.3f}-"
                    f"{full['accuracy_high']:.3f}) is below {config.min_accuracy:g}",
                    accuracy=full["accuracy"], accuracy_low=full["accuracy_low"],
                    accuracy_high=full["accuracy_high"], loss=full["loss"], verdict=UNSOLVED)
    if config.nonsense:
        train_pairs = tuple(nonsense_pairs(train_pairs, nonsense_seed(task.qualname, "train")))
        test_pairs = tuple(nonsense_pairs(test_pairs, nonsense_seed(task.qualname, "test")))
        full = {**evaluate(model, tok, list(test_pairs), device=dev), "real_task": full, "verdict": full["verdict"]}
    return train_pairs, test_pairs, full, None


def solved_record(full: dict, config: PruneConfig) -> dict:
    """How the task's full model did on the real test pairs, and the verdict against ``min_accuracy``."""
    real = full.get("real_task") or full
    return {"accuracy": real["accuracy"], "low": real["accuracy_low"], "high": real["accuracy_high"],
            "n_prompts": real["n_prompts"], "threshold": config.min_accuracy, "verdict": full["verdict"],
            "interval": "95% Wilson"}


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
                on_circuit: Callable[[Circuit], None] | None = None,
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
    import torch

    from .. import __version__, plugins
    from ..tasks import check_suite, encode_pairs, pairs_source
    from ..train.runs import load_model
    from .ablation import ablation_values
    from .parallel import TaskJob, prune_tasks
    from .seeds import collect_seeds, seed_jobs

    t_start = time.perf_counter()
    check_suite(config.tasks)  # did-you-mean before loading anything
    mask_entry, objective_entry = plugins.get("pruner", config.pruner), plugins.get("objective", config.objective)
    dev = _device(config.device)
    model, tok, info = load_model(run, device=dev)
    context, tasks, transfer = _tasks(info, config)
    per_task_values = config.ablation == "task_mean"
    values = None if per_task_values else ablation_values(model, tok, info, config.ablation, device=dev, progress=True)
    names_seen = collections.Counter(t.name for t in tasks)
    run_prov = {"run": str(info.path), "run_config_hash": config_hash(info.model, info.train),
                "run_provenance": info.provenance}
    machine = machine_provenance()
    by_index: dict[int, dict] = {}
    skipped, jobs, paths = [], [], {}
    for i, task in enumerate(tasks):
        path = paths[i] = out / "circuits" / f"{_file_stem(task, names_seen)}.json"
        done = finished_circuit(path, config, run_prov, pairs_source(task, context),
                                transfer.source(task) if transfer else None)
        if done is not None:
            logger.info(f"done {task.qualname}: kept from an earlier run ({path})")
            if on_finished is not None:
                on_finished(done)
            by_index[i] = {**circuit_row(done), **interchange_row(done), **seeds_row(done), **verdict_fields(done["provenance"].get("solved")), "suite": task.suite,
                       "file": str(path)}
            continue
        train_pairs, test_pairs, full, skip = task_pairs(task, tok, context, config, model, dev)
        if skip is not None:
            skipped.append(skip)
            continue
        logger.info(f"prune {task.qualname} ({len(train_pairs)} train / {len(test_pairs)} test pairs, "
                    f"full model: loss {full['loss']:.3f}, accuracy {full['accuracy']:.3f})")
        train = encode_pairs(list(train_pairs), tok, max_len=info.model.n_ctx)
        test = encode_pairs(list(test_pairs), tok, max_len=info.model.n_ctx)
        if per_task_values:
            values = ablation_values(model, tok, info, config.ablation, device=dev, task_batch=train)
        prov = {**run_prov, "task": task.qualname, "task_description": task.description,
                "pairs": pairs_source(task, context), "n_train_pairs": len(train_pairs),
                "n_test_pairs": len(test_pairs), "ablation": config.ablation, "nonsense": config.nonsense,
                "solved": solved_record(full, config), "machine": machine, **extra_provenance}
        jobs += seed_jobs(TaskJob(index=i, task=task.name, suite=task.suite, train=train, test=test, values=values,
                                  provenance=prov), config)  # one job per pruning seed (prune.seeds)
    # Each circuit is written (and handed to the store) as soon as it finishes, so an interrupt keeps it.
    values_of, test_of = {job.index: job.values for job in jobs}, {job.index: job.test for job in jobs}
    with contextlib.closing(prune_tasks(model, info.path, jobs, config, mask_entry, objective_entry)) as finished:
        for i, circuit, seeds in collect_seeds(finished, config):
            doc = _circuit_doc(circuit, seeds, model, test_of[i].to(dev), config)
            if transfer is not None and (figures := transfer.figures(model, tok, circuit, values_of[i], dev)) is not None:
                doc["transfer"] = figures
            write_json(paths[i], doc)
            if on_circuit is not None:
                on_circuit(circuit)
            by_index[i] = {**circuit_row(doc), **interchange_row(doc), **seeds_row(doc),
                           **verdict_fields(circuit.provenance["solved"]),
                           "suite": tasks[i].suite, "file": str(paths[i])}
    rows = [by_index[i] for i in sorted(by_index)]  # task order, whatever order the workers finished in
    suites = [plugins.get("suite", s).provenance() for s in dict.fromkeys(t.suite for t in tasks)
              if s in plugins.get_registry().entries["suite"]]
    provenance = {"circuitlab_version": __version__, "torch_version": torch.__version__, "machine": machine,
                  "plugins": [mask_entry.provenance(), objective_entry.provenance(), *suites],
                  "prune_config": to_dict(config), **run_prov, **extra_provenance}
    if context.mine_from is not None:
        provenance["mine_from"] = context.mine_from.provenance()
    if transfer is not None:
        provenance["eval_on"] = transfer.provenance
    summary = _summary(info, config, rows, skipped, time.perf_counter() - t_start, out, provenance)
    write_json(out / "summary.json", summary)
    return summary
