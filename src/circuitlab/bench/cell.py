"""One cell: prune one task of one model under one pruner, objective, control and seed, then measure
its MIB faithfulness curves. Runs inside a Dask worker (``work.run_cell``); pure computation, no files."""

from __future__ import annotations

from typing import Any

from ..config import PruneConfig, to_dict
from ..machine import machine_provenance
from .plan import Cell

#: A circuit "beats" its full model when its test loss is lower by more than this (a task solver,
#: not an explanation of the model).
BEATS_MARGIN = 0.05


def compute_cell(cell: Cell, config: PruneConfig, model_doc: dict) -> dict[str, Any]:
    import torch

    from .. import __version__, plugins
    from ..prune.ablation import ablation_values
    from ..prune.evaluator import Evaluator
    from ..prune.faithfulness import faithfulness_curves
    from ..prune.interchange import interchange, interchange_row
    from ..prune.pipeline import task_pairs
    from ..prune.search import prune_task
    from ..tasks import encode_pairs, pairs_source, resolve_tasks, task_context_for_run
    from ..train.runs import load_model

    dev = torch.device(config.device)
    model, tok, info = load_model(model_doc["run"], device=dev)
    context = task_context_for_run(info, config.mine_from)
    task = resolve_tasks(cell.task, context)[0]
    base = {"cell": to_dict(cell), "model": _model_fields(model_doc), "prune_config": to_dict(config)}
    train_pairs, test_pairs, full, skip = task_pairs(task, tok, context, config, model, dev)
    if skip is not None:
        return {**base, "status": "skipped", "reason": skip["reason"]}
    train = encode_pairs(list(train_pairs), tok, max_len=info.model.n_ctx).to(dev)
    test = encode_pairs(list(test_pairs), tok, max_len=info.model.n_ctx).to(dev)
    values = ablation_values(model, tok, info, config.ablation, device=dev, task_batch=train)
    mask_entry, objective_entry = plugins.get("pruner", config.pruner), plugins.get("objective", config.objective)
    prov = {"run": str(info.path), "run_config_hash": model_doc["config_hash"], "task": task.qualname,
            "pairs": pairs_source(task, context), "ablation": config.ablation, "nonsense": config.nonsense,
            "bench_cell": cell.cell_id, "run_provenance": info.provenance}
    circuit = prune_task(model, train, test, values, config, task=task.name, suite=task.suite, provenance=prov,
                         mask_entry=mask_entry, objective_entry=objective_entry)
    model.eval()
    with torch.no_grad():
        te = Evaluator(model, test, values, freeze_norm=config.freeze_norm)
        curves = faithfulness_curves(model, te, circuit.scores, effect_scores=circuit.effect_scores)
    circuit_doc = circuit.to_json()
    circuit_doc["interchange"] = interchange(model, test, circuit.kept, draws=config.random_draws, seed=config.seed + 2)
    return {
        **base, "status": "done",
        "full_model": {"loss": circuit.full_model_loss, "accuracy": circuit.full_model_accuracy,
                       "real_task_accuracy": (full.get("real_task") or full)["accuracy"]},
        "result": {**circuit.row(), "k": circuit.node_count, "edge_counts": circuit_doc["edge_counts"],
                   "validations": circuit_doc["validations"], "prune_seconds": circuit.seconds,
                   "beats_full_model": bool(circuit.loss < circuit.full_model_loss - BEATS_MARGIN),
                   **interchange_row(circuit_doc)},
        "faithfulness": curves,
        "circuit": circuit_doc,
        "provenance": {"circuitlab_version": __version__, "torch_version": torch.__version__,
                       "machine": machine_provenance(),
                       "plugins": [mask_entry.provenance(), objective_entry.provenance()],
                       "corpus_hash": (info.provenance.get("corpus") or {}).get("hash"),
                       "pairs": prov["pairs"], "run": str(info.path)},
    }


def _model_fields(doc: dict) -> dict[str, Any]:
    keys = ("model_id", "group", "kind", "preset", "sparsity", "density", "width", "train_steps", "train_seed",
            "config_hash", "twin", "val_loss", "run")
    return {k: doc.get(k) for k in keys}
