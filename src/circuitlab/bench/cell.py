"""One cell: prune one task of one model under one pruner, objective, control and seed (through
``circuitlab.prune.task``, the path of ``circuitlab prune``), then measure its MIB faithfulness curves.
Runs inside a Dask worker (``work.run_cell``); pure computation, no files."""

from __future__ import annotations

from typing import Any

from ..config import PruneConfig, to_dict
from .plan import Cell

#: A circuit "beats" its full model when its test loss is lower by more than this (a task solver,
#: not an explanation of the model).
BEATS_MARGIN = 0.05


def compute_cell(cell: Cell, config: PruneConfig, model_doc: dict) -> dict[str, Any]:
    """The fields of the cell's ``CellDocument`` beyond its identity: the cell pruned through
    ``circuitlab.prune.prune_task`` (the path of ``circuitlab prune``), then its faithfulness curves."""
    import torch

    from ..provenance import build_provenance
    from ..prune.evaluator import Evaluator
    from ..prune.faithfulness import circuit_curve, faithfulness_curves
    from ..prune.interchange import interchange, interchange_row
    from ..prune.necessity import model_faithfulness
    from ..prune.search import search_circuit
    from ..prune.task import LoadedModel, Skipped, prepare_task
    from ..tasks import resolve_tasks, task_context_for_run

    loaded = LoadedModel.load(model_doc["run"], config.device)
    context = task_context_for_run(loaded.info, config.mine_from)
    task = resolve_tasks(cell.task, context)[0]
    base = {"model": _model_fields(model_doc), "prune_config": to_dict(config)}
    data = prepare_task(loaded, task, config, context=context, extra_provenance={"bench_cell": cell.cell_id})
    if isinstance(data, Skipped):
        return {**base, "status": "skipped", "reason": data.reason}
    circuit = search_circuit(loaded.model, data, config)
    model = loaded.model
    model.eval()
    with torch.no_grad():
        te = Evaluator(model, data.test.to(loaded.device), data.values, freeze_norm=config.freeze_norm)
        curves = faithfulness_curves(model, te, circuit.scores, effect_scores=circuit.effect_scores)
        curves["circuit_relative"] = circuit_curve(te, circuit.scores, circuit.node_count)
        to_model = model_faithfulness(te, circuit.kept, draws=max(config.random_draws, 3), seed=config.seed + 2)
    circuit_doc = circuit.to_json()
    circuit_doc["interchange"] = interchange(model, data.test.to(loaded.device), circuit.kept,
                                             draws=config.random_draws, seed=config.seed + 2)
    prov = circuit.provenance
    return {
        **base, "status": "done",
        "full_model": {"loss": circuit.full_model_loss, "accuracy": circuit.full_model_accuracy,
                       "real_task_accuracy": prov["solved"]["accuracy"], "verdict": prov["solved"]["verdict"]},
        "result": {**circuit.row(), "k": circuit.node_count, "edge_counts": circuit_doc["edge_counts"],
                   "validations": circuit_doc["validations"], "prune_seconds": circuit.seconds,
                   "beats_full_model": bool(circuit.loss < circuit.full_model_loss - BEATS_MARGIN), **to_model,
                   **interchange_row(circuit_doc)},
        "faithfulness": curves,
        "circuit": circuit_doc,
        "provenance": build_provenance(plugins=prov["plugins"][:2], machine=prov["machine"],
                                       corpus_hash=(loaded.info.provenance.get("corpus") or {}).get("hash"), pairs=prov["pairs"],
                                       run=str(loaded.info.path)),
    }


def _model_fields(doc: dict) -> dict[str, Any]:
    keys = ("model_id", "group", "kind", "preset", "sparsity", "density", "width", "train_steps", "train_seed",
            "config_hash", "twin", "val_loss", "run")
    return {k: doc.get(k) for k in keys}
