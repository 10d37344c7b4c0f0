"""The task-loss change when one node alone is ablated, for every node a page shows.

The full model runs on the task's held-out test pairs with one node replaced by its ablation value
(the circuit's own ablation: its mean over corpus tokens, or zero), everything else untouched; the
change is that loss minus the full model's loss (the task-loss convention of ``circuitlab.tasks``).
"""

from __future__ import annotations

from typing import Any

from ..config import ViewConfig
from ..log import logger


def node_ablations(circuit: dict, names: list[str], model, tok, info, config: ViewConfig) -> tuple[dict, dict]:
    """({node: loss change}, {"base_loss", "pairs", "ablation", "note"}); empty with a note when impossible."""
    if model is None:
        return {}, {"note": "no run: the per-node ablation is not computed"}
    if tok is None:
        return {}, {"note": f"run {str(info.path)!r} has no tokenizer.json: the per-node ablation needs the task's "
                            "text; re-import it with --tokenizer"}
    if config.ablation_pairs == 0 or not names:
        return {}, {"note": "per-node ablation skipped (--ablation-pairs 0)"}
    batch, ablation = _task_batch(circuit, tok, info, config.ablation_pairs, model)
    if batch is None:
        return {}, {"note": ablation}
    import torch

    from ..model.nodes import NodeSpace
    from ..prune.ablation import ablation_values
    from ..prune.evaluator import Evaluator
    from ..tasks.loss import loss_and_accuracy

    device = next(model.parameters()).device
    space = NodeSpace.from_config(model.config)
    values = ablation_values(model, tok, info, ablation, device=device)
    logger.info(f"ablating {len(names)} nodes one at a time on {len(batch) // 2} test pairs")
    with torch.no_grad():
        ev = Evaluator(model, batch.to(device), values)
        gate = torch.ones(space.num_nodes, device=device)
        base = loss_and_accuracy(ev.diffs(gate))[0]
        deltas = {}
        for n in names:
            i = space.index(n)
            gate[i] = 0.0
            deltas[n] = round(loss_and_accuracy(ev.diffs(gate))[0] - base, 5)
            gate[i] = 1.0
    return deltas, {"base_loss": base, "pairs": len(batch) // 2, "ablation": ablation}


def _task_batch(circuit: dict, tok, info, n_pairs: int, model) -> tuple[Any, str]:
    """(encoded test pairs, ablation kind) of the circuit's task, or (None, why not)."""
    from ..errors import CircuitlabError
    from ..tasks import check_tokens, encode_pairs, load_pairs, resolve_tasks, task_context_for_run

    prov = circuit.get("provenance", {})
    ablation = prov.get("ablation") or prov.get("prune_config", {}).get("ablation") or "mean"
    spec = f"{circuit['suite']}:{circuit['task']}" if circuit.get("suite") else circuit["task"]
    try:
        # A circuit pruned on tasks cut from another folder (--mine-from) is ablated on that folder's pairs.
        context = task_context_for_run(info, prov.get("prune_config", {}).get("mine_from"))
        (task,) = resolve_tasks(spec, context)
    except (CircuitlabError, ValueError) as exc:
        return None, f"task {spec!r} is not available here ({exc})"
    pairs = check_tokens(load_pairs(task, "test", n_pairs, context), tok).pairs
    if not pairs:
        return None, f"task {spec!r} has no usable test pairs with this tokenizer"
    return encode_pairs(list(pairs), tok, max_len=model.config.n_ctx), ablation
