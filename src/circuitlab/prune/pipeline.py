"""The prune pipeline behind ``circuitlab prune`` and ``circuitlab run`` (no click here).

``prune_model`` prunes the selected tasks of one run folder and writes ``circuits/<task>.json``
and ``summary.json``; ``ensure_model`` trains the model of a config, or reuses the one cached under
its config hash. Progress goes to stderr.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..errors import CircuitlabError

DEFAULT_N_TRAIN = 256
DEFAULT_N_TEST = 128


def check_store_available(store_path: str | None) -> None:
    if store_path is None:
        return
    try:
        from .. import store  # noqa: F401
    except ImportError:
        raise CircuitlabError("--store needs the activation store (circuitlab.store), which this "
                              "installation lacks; drop --store") from None


def _store_circuit(store_path: str, circuit, method: str, run_dir) -> None:
    """Add one circuit to the activation store (``circuitlab.store.add_method_result``)."""
    import inspect

    from ..store import add_method_result

    kwargs: dict[str, Any] = {}
    params = inspect.signature(add_method_result).parameters
    if "edge_list" in params:
        kwargs["edge_list"] = [list(e) for e in circuit.edges]
    if "run" in params:
        kwargs["run"] = run_dir
    if "overwrite" in params:
        kwargs["overwrite"] = True  # re-pruning a task replaces that method's earlier result
    add_method_result(store_path, method=method, task=circuit.task, scores=circuit.scores, kept=circuit.kept,
                      loss=circuit.loss, edges=circuit.edge_count, nodes=circuit.node_count,
                      provenance=circuit.provenance, **kwargs)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _file_stem(task, names_seen: dict[str, int]) -> str:
    stem = task.name if names_seen[task.name] == 1 else f"{task.suite}-{task.name}"
    return stem.replace("/", "_").replace(":", "-")


def prune_model(model_dir: str | Path, *, pruner: str, objective: str, tasks_spec: str | None, target_loss: float,
                ablation: str, freeze_norm: bool, calibrate: bool, min_accuracy: float, seed: int,
                steps: int | None, lr: float | None, penalty_coef: float | None, n_train: int, n_test: int,
                device: str, out: str | Path, store_path: str | None, threads: int | None = 1,
                extra_provenance: dict | None = None) -> dict[str, Any]:
    """Prune every selected task of the run in ``model_dir`` and write results under ``out``.

    Returns the summary document (also written to ``out/summary.json``).
    """
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _prune_model(model_dir, pruner=pruner, objective=objective, tasks_spec=tasks_spec,
                            target_loss=target_loss, ablation=ablation, freeze_norm=freeze_norm, calibrate=calibrate,
                            min_accuracy=min_accuracy, seed=seed, steps=steps, lr=lr, penalty_coef=penalty_coef,
                            n_train=n_train, n_test=n_test, device=device, out=out, store_path=store_path,
                            extra_provenance=extra_provenance)
    finally:
        torch.set_num_threads(old_threads)


def _prune_model(model_dir, *, pruner, objective, tasks_spec, target_loss, ablation, freeze_norm, calibrate,
                 min_accuracy, seed, steps, lr, penalty_coef, n_train, n_test, device, out, store_path,
                 extra_provenance) -> dict[str, Any]:
    import collections

    import torch

    from .. import __version__, plugins
    from ..config import config_hash
    from ..files import write_json
    from ..runs import load_model, read_run
    from ..tasks import check_tokens, encode_pairs, evaluate, load_pairs, resolve_tasks, task_context_for_run
    from .ablation import ablation_values
    from .circuit import geomean
    from .search import PruneConfig, prune_task

    t_start = time.perf_counter()
    info_early = read_run(model_dir)  # a clear error for a folder that is not a finished run, before torch work
    check_store_available(store_path)
    if store_path:
        from ..store import ensure_store

        ensure_store(store_path, info_early)  # a store of another model fails now, not after the first task
    if tasks_spec and tasks_spec.strip() != "all":
        plugins.get("suite", tasks_spec.partition(":")[0].strip())  # did-you-mean before loading anything
    config = PruneConfig(pruner=pruner, objective=objective, target_loss=target_loss, ablation=ablation,
                         freeze_norm=freeze_norm, calibrate=calibrate, steps=steps, lr=lr,
                         penalty_coef=penalty_coef, seed=seed)
    mask_entry, objective_entry = plugins.get("pruner", pruner), plugins.get("objective", objective)
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise CircuitlabError(f"--device {device!r} is not a torch device ({exc}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CircuitlabError(f"--device {device!r}: CUDA is not available here; use --device cpu")
    model, tok, info = load_model(model_dir, device=dev)
    context = task_context_for_run(info)
    tasks = resolve_tasks(tasks_spec, context)
    if not tasks:
        raise CircuitlabError(f"--tasks {tasks_spec!r} selects no tasks")
    values = ablation_values(model, tok, info, ablation, device=dev, progress=True)
    out = Path(out)
    circuits_dir = out / "circuits"
    names_seen = collections.Counter(t.name for t in tasks)
    run_prov = {"run": str(info.path), "run_config_hash": config_hash(info.model, info.train),
                "run_provenance": info.provenance}
    rows, skipped = [], []
    method = pruner if objective == "binary_ce" else f"{pruner}+{objective}"
    for task in tasks:
        check = check_tokens(task, tok)
        if not check.usable:
            skipped.append({"task": task.name, "suite": task.suite, "accuracy": None,
                            "reason": f"unusable with this tokenizer: {check.problem}"})
            _log(f"skip {task.qualname}: {check.problem}")
            continue
        train_pairs = check_tokens(load_pairs(task, "train", n_train, context), tok).pairs
        test_pairs = check_tokens(load_pairs(task, "test", n_test, context), tok).pairs
        if not train_pairs or not test_pairs:
            skipped.append({"task": task.name, "suite": task.suite, "accuracy": None,
                            "reason": "no usable train or test pairs"})
            _log(f"skip {task.qualname}: no usable train or test pairs")
            continue
        full = evaluate(model, tok, list(test_pairs), device=dev)
        if full["accuracy"] < min_accuracy:
            skipped.append({"task": task.name, "suite": task.suite, "accuracy": full["accuracy"],
                            "loss": full["loss"],
                            "reason": f"full-model test accuracy {full['accuracy']:.3f} < {min_accuracy:g}"})
            _log(f"skip {task.qualname}: full-model test accuracy {full['accuracy']:.3f} < {min_accuracy:g}")
            continue
        _log(f"prune {task.qualname} ({len(train_pairs)} train / {len(test_pairs)} test pairs, "
             f"full model: loss {full['loss']:.3f}, accuracy {full['accuracy']:.3f})")
        train = encode_pairs(list(train_pairs), tok, max_len=info.model.n_ctx)
        test = encode_pairs(list(test_pairs), tok, max_len=info.model.n_ctx)
        prov = {**run_prov, "task": task.qualname, "task_description": task.description,
                "n_train_pairs": len(train_pairs), "n_test_pairs": len(test_pairs),
                "ablation": ablation, **(extra_provenance or {})}
        circuit = prune_task(model, train, test, values, config, task=task.name, suite=task.suite,
                             provenance=prov, progress=True, mask_entry=mask_entry,
                             objective_entry=objective_entry)
        path = circuits_dir / f"{_file_stem(task, names_seen)}.json"
        write_json(path, circuit.to_json())
        if store_path is not None:
            _store_circuit(store_path, circuit, method, info.path)
        rows.append({**circuit.row(), "suite": task.suite, "file": str(path)})
    reached = [r for r in rows if r["reached"]]
    summary = {
        "kind": "circuitlab-prune-summary",
        "model": str(info.path),
        "pruner": pruner,
        "objective": objective,
        "target_loss": target_loss,
        "ablation": ablation,
        "freeze_norm": freeze_norm,
        "calibrate": calibrate,
        "min_accuracy": min_accuracy,
        "seed": seed,
        "tasks": rows,
        "skipped": skipped,
        "geomean_edges": geomean(r["edges"] for r in reached),
        "geomean_nodes": geomean(r["nodes"] for r in reached),
        "n_circuits": len(rows),
        "n_reached": len(reached),
        "seconds": time.perf_counter() - t_start,
        "out": str(out),
        "provenance": {"circuitlab_version": __version__, "torch_version": torch.__version__,
                       "plugins": [mask_entry.provenance(), objective_entry.provenance()],
                       "prune_config": {"pruner": pruner, "objective": objective, "target_loss": target_loss,
                                        "ablation": ablation, "freeze_norm": freeze_norm, "calibrate": calibrate,
                                        "seed": seed, "steps": steps, "lr": lr, "penalty_coef": penalty_coef,
                                        "n_train": n_train, "n_test": n_test},
                       **run_prov, **(extra_provenance or {})},
    }
    write_json(out / "summary.json", summary)
    return summary


def cached_run_dir(train_config, model_config) -> Path:
    """Where ``run`` keeps the model of a (train config, model config): the cache, keyed by config hash."""
    from ..config import config_hash
    from ..files import cache_dir

    h = config_hash(train_config, model_config)
    return cache_dir() / "runs" / f"{train_config.preset}-{train_config.sparsity}-d{train_config.density:g}-{h}"


def ensure_model(train_config, model_config, progress: bool = True) -> tuple[Path, bool]:
    """Train the model, or reuse the finished one cached under the same config hash. (path, reused)."""
    from ..train import train_run

    path = cached_run_dir(train_config, model_config)
    if (path / "model.safetensors").exists() and (path / "config.json").exists():
        _log(f"reusing cached model {path}")
        return path, True
    resume = (path / "checkpoint.safetensors").exists()
    _log(f"{'resuming' if resume else 'training'} model into {path}")
    train_run(train_config, path, model_config=model_config, resume=resume, progress=progress)
    return path, False
