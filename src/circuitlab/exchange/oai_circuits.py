"""``circuitlab import-oai-circuit``: OpenAI's ``viz_data.pt`` circuits as circuitlab circuit JSON files.

Each file becomes ``OUT/<task>.<sweep>.<k>.json`` (names from the released path
``viz/<model>/<task>/<sweep>/<k>/viz_data.pt``), a circuit document like the ones ``prune`` writes
(``circuitlab.prune.circuit``) on the imported run, so ``view`` draws it and, with ``--store``, it is
added to the activation store as the method ``openai-<sweep>`` so that ``compare`` puts it beside
circuitlab's own circuits for the same task.

Edges. The file stores only the edges inside each block (``pair_data``); its count is kept as
``provenance.imported_from.file_edges``. The circuit's ``edges`` and ``edge_counts`` are circuitlab's
own count on the run's weights (weight and residual edges between kept nodes), so they compare with
circuitlab's circuits. Figures the file does not hold (accuracy, target, validations) are null.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..config import CircuitImportConfig
from ..errors import CircuitlabError
from ..files import check_writable_dir, sha256_file, write_json
from ..interop.oai_circuit import LOSS_NOTE, SOURCE_FORMAT, parse_viz_data, read_viz_data
from ..prune.circuit import CIRCUIT_KIND

METHOD_PREFIX = "openai"


def names_from_path(path: Path) -> tuple[str | None, str | None, str | None]:
    """(task, sweep, k) of ``.../<task>/<sweep>/<k>/viz_data.pt``; None where the path does not say."""
    parts = path.resolve().parts
    if len(parts) >= 4 and (parts[-2].isdigit() or parts[-2] == "k_optim"):
        return parts[-4], parts[-3], parts[-2]
    return None, None, None


def circuit_document(oai, *, model, run: Path, path: Path, task: str, suite: str, sweep: str, k: str) -> dict:
    """The circuit JSON of one parsed file on the loaded model."""
    import torch

    from ..model.nodes import NodeSpace
    from ..prune.edges import count_edges, edge_list

    space = NodeSpace.from_config(model.config)
    names = space.names()
    kept = torch.zeros(space.num_nodes, dtype=torch.bool)
    for n in oai.nodes:
        kept[space.index(n)] = True
    counts = count_edges(model, kept)
    edges = [[names[s], names[t]] for s, t in edge_list(model, kept)]
    nodes = [names[i] for i in kept.nonzero().flatten().tolist()]  # circuitlab's order, duplicates merged
    return {
        "kind": CIRCUIT_KIND, "task": task, "suite": suite, "method": f"{METHOD_PREFIX}-{sweep}",
        "node_count": len(nodes), "edge_count": counts["total"], "edge_counts": counts,
        "total_nodes": space.num_nodes, "loss": oai.loss, "accuracy": None, "train_loss": oai.loss,
        "target_loss": None, "reached": None, "full_model_loss": oai.full_model_loss, "full_model_accuracy": None,
        "calibration": None, "mask_nodes": len(nodes), "bisection": [],
        "validations": None,  # the file has the circuit's loss only (its sufficiency): that is ``loss``
        "seconds": 0.0, "nodes": nodes, "edges": edges,
        "scores": [1.0 if k_ else 0.0 for k_ in kept.tolist()], "effect_scores": False,
        "provenance": {
            "circuitlab_version": __version__, "run": str(run), "imported_from": {
                "format": SOURCE_FORMAT, "path": str(path.resolve()), "sha256": sha256_file(path), "sweep": sweep,
                "k": k, "file_nodes": len(oai.source_ids), "file_edges": len(oai.edges),
                "file_edge_list": [[s, d, w] for s, d, w in oai.edges],
                "node_ids": dict(zip(oai.nodes, oai.source_ids, strict=True)), "unmapped": list(oai.unmapped),
                "losses_halved": True, "loss_note": LOSS_NOTE, "node_ablation_losses": oai.node_losses,
                "pruning_losses": [list(x) for x in oai.pruning_losses], "prune_config": oai.prune_config,
                "num_total_nodes": oai.num_total_nodes, "model_config": oai.model_config,
                "final_note": "final_resid:I (before ln_f) is imported as final.I (after ln_f)"},
        },
    }


def import_oai_circuits(paths: list[str | Path], run: str | Path, out: str | Path,
                        config: CircuitImportConfig | None = None, note=None) -> list[dict]:
    """Import each ``viz_data.pt`` in ``paths`` onto ``run``; write ``out/<task>.<sweep>.<k>.json``.

    Returns one summary per file. With ``config.store``, each circuit is added to it as ``openai-<sweep>``."""
    from ..train.runs import load_model

    config = config or CircuitImportConfig()
    task, suite, store, overwrite = config.task, config.suite, config.store, config.overwrite
    run, out = Path(run), Path(out)
    if not paths:
        raise CircuitlabError("pass at least one viz_data.pt")
    model, _, info = load_model(run, need_tokenizer=False)
    check_writable_dir(out, "--out")
    docs = []
    for p in map(Path, paths):
        data = read_viz_data(p)  # every file is read and checked before anything is written
        t, sweep, k = names_from_path(p)
        t = task or t
        if t is None:
            raise CircuitlabError(f"{str(p)!r}: the task is not in the path (<task>/<sweep>/<k>/viz_data.pt); "
                                  "pass --task")
        oai = parse_viz_data(data, info.model, p, run=str(run), skip_unmapped=config.skip_unmapped)
        doc = circuit_document(oai, model=model, run=run.resolve(), path=p, task=t, suite=suite,
                               sweep=sweep or "circuit", k=k or str(len(oai.nodes)))
        target = out / f"{t}.{sweep or 'circuit'}.{k or len(oai.nodes)}.json"
        if target.exists() and not overwrite:
            raise CircuitlabError(f"{str(target)!r} already exists; pass --overwrite to replace it")
        if any(d[1] == target for d in docs):
            raise CircuitlabError(f"two files would both write {str(target)!r}; import them one at a time")
        docs.append((doc, target, oai))
    summaries = []
    for doc, target, oai in docs:
        write_json(target, doc)
        if oai.unmapped and note:
            note(f"{target.name}: skipped {len(oai.unmapped)} node(s) with no circuitlab node: "
                 f"{', '.join(oai.unmapped[:5])}{' ...' if len(oai.unmapped) > 5 else ''}")
        summary: dict[str, Any] = {
            "circuit": str(target), "task": doc["task"], "method": doc["method"], "nodes": doc["node_count"],
            "file_edges": doc["provenance"]["imported_from"]["file_edges"], "edges": doc["edge_count"],
            "edge_counts": doc["edge_counts"], "loss": doc["loss"], "full_model_loss": doc["full_model_loss"],
            "unmapped": list(oai.unmapped)}
        if store is not None:
            summary["store"] = str(add_to_store(doc, store, run, overwrite=overwrite))
        summaries.append(summary)
    return summaries


def add_to_store(doc: dict, store: str | Path, run: Path, *, overwrite: bool = False) -> Path:
    """Add an imported circuit to an activation store as method ``openai-<sweep>``."""
    from ..prune.circuit import task_key
    from ..store import add_method_result
    from ..store.methods import MethodResult

    label = doc["method"].partition("/")[0]  # files written before the one label said "openai-<sweep>/binary_ce"
    result = MethodResult(method=label, task=task_key(doc.get("suite") or "", doc["task"]), scores=doc["scores"],
                          kept=[s > 0 for s in doc["scores"]],
                          loss=doc["loss"] if doc["loss"] is not None else float("nan"), edges=doc["edge_count"],
                          nodes=doc["node_count"], provenance=doc["provenance"],
                          edge_list=[tuple(e) for e in doc["edges"]])
    return add_method_result(store, result, overwrite=overwrite, run=run)
