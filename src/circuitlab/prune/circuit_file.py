"""Circuit files: a ``Circuit`` back from its JSON document (``Circuit.load``, ``Circuit.from_json``).

The document (``Circuit.to_json``) names the kept nodes; ``kept``, the flat bool mask, needs the model's
node layout, which is read from the run folder (its config.json: no weights, no torch model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CircuitlabError
from .circuit import CIRCUIT_KIND, Validations


def circuit_from_json(cls, doc: dict[str, Any], run: str | Path | None):
    """``cls`` (``Circuit``) of the document ``doc``; ``kept`` from the layout of ``run`` or of the run the
    circuit names, None when neither is there."""
    import torch

    try:
        v = doc["validations"]
        scores = torch.tensor(doc["scores"], dtype=torch.float32)
        kept = _kept(doc, run)
        return cls(
            task=doc["task"], suite=doc.get("suite", ""), method=doc["method"], kept=kept, scores=scores,
            nodes=doc["nodes"], edges=doc["edges"], node_count=doc["node_count"],
            edge_counts=dict(doc["edge_counts"]), total_nodes=doc["total_nodes"], loss=doc["loss"],
            accuracy=doc["accuracy"], train_loss=doc["train_loss"], target_loss=doc["target_loss"],
            reached=doc["reached"], full_model_loss=doc["full_model_loss"],
            full_model_accuracy=doc["full_model_accuracy"], calibration=doc.get("calibration"),
            bisection=tuple(tuple(x) for x in doc["bisection"]), mask_nodes=doc["mask_nodes"],
            validations=Validations(sufficiency=v["sufficiency"], necessity=v["necessity"], random=v["random"],
                                    random_draws=tuple(v["random_draws"]), full_model=v["full_model"],
                                    all_ablated=v["all_ablated"]),
            seconds=doc["seconds"], provenance=doc.get("provenance", {}),
            effect_scores=doc.get("effect_scores", False))
    except (KeyError, TypeError, ValueError) as exc:
        raise CircuitlabError(f"circuit document for task {doc.get('task')!r} is incomplete or malformed "
                              f"({type(exc).__name__}: {exc}); write it again with 'circuitlab prune'") from None


def is_circuit_file(path: Path) -> bool:
    """Whether ``path`` holds a circuit document (``Circuit.save`` replaces only such a file)."""
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == CIRCUIT_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _kept(doc: dict[str, Any], run: str | Path | None):
    """The kept mask (bool tensor) of a circuit document, from the node layout of its run; None when the
    run is not there."""
    import torch

    from ..model.nodes import NodeSpace
    from ..train.runs import read_run

    folder = run if run is not None else (doc.get("provenance") or {}).get("run")
    if folder is None or (run is None and not Path(folder, "config.json").exists()):
        return None
    space = NodeSpace.from_config(read_run(folder).model)
    if space.num_nodes != doc["total_nodes"]:
        raise CircuitlabError(f"run {str(folder)!r} has {space.num_nodes} nodes but the circuit's model "
                              f"{doc['total_nodes']}; pass the run it was pruned from")
    kept = torch.zeros(space.num_nodes, dtype=torch.bool)
    kept[[space.index(n) for n in doc["nodes"]]] = True
    return kept
