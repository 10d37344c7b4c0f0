"""Interchange evaluation: does a circuit carry the task variable the way the model does?

For every test pair (prompt a, prompt b) the **full model** (nothing ablated) runs on prompt a while
the circuit's nodes take their values from the clean run on prompt b; and the reverse (b patched
with a). A circuit that carries the task variable moves the prediction to the other prompt's answer;
a circuit that reaches the target loss through a shortcut does not. The same patch is applied to
random node sets of the circuit's size, drawn from the nodes *outside* the circuit (from all nodes
when the circuit holds more than half of them): do other nodes carry the variable as well?

The method follows the interchange interventions of the open replication
(``jacobcd52/sparse_pretrain_public``, ``src/pruning/interchange_eval.py``), which patch node
activations from another forward pass; here the donor is the pair's other prompt.

**Positions.** Nodes are channels at every position. The two prompts of a pair may differ in length,
so positions are aligned **from the end**: position ``t`` of the receiving prompt (last position
``l_r``) takes the donor's value at ``t - l_r + l_d`` (``l_d`` its last position). Receiving positions
with no donor counterpart (the receiving prompt is longer) keep their own live value. Equal-length
prompts are patched position for position. The bigram table (a direct path from the last token to the
logits, no node on it) is never patched.

Figures per node set (over the 2n patched prompts):

- ``accuracy``: the share of patched prompts whose prediction moved to the other prompt's answer
  (the logit of the donor's answer above the receiver's own);
- ``logit_diff_shift``: the mean of ``d_clean - d_patched``, where ``d`` is the receiver's
  right-minus-wrong logit difference; positive means it moved towards the donor's answer;
- ``shift_fraction``: the summed shift over the summed shift of a full swap (``d_clean(a) +
  d_clean(b)`` per pair, the shift if the receiver's logits became the donor's): 1 is a complete
  interchange, 0 none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model.nodes import NodeSpace, record_activations
from ..tasks.loss import logit_diff

if TYPE_CHECKING:
    import torch

    from ..tasks.types import TaskBatch

#: The documented alignment rule, stored with the figures.
POSITION_RULE = "aligned from the end; receiving positions without a donor counterpart keep their own value"
#: Fewest random node sets drawn for the control.
MIN_DRAWS = 3


def _donors(acts: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows in pairs (2i, 2i+1): each row's donor activations aligned from the end, (b, T, N), and
    where a donor position exists, (b, T) bool."""
    import torch

    b, T, N = acts.shape
    partner = torch.arange(b, device=acts.device) ^ 1
    t = torch.arange(T, device=acts.device)[None, :]
    src = t - last[:, None] + last[partner][:, None]  # (b, T)
    valid = (src >= 0) & (src <= last[partner][:, None]) & (t <= last[:, None])
    idx = src.clamp(0, T - 1)[:, :, None].expand(b, T, N)
    return acts[partner].gather(1, idx), valid


def _patched_diffs(model, rows: tuple, space: NodeSpace, patch: tuple | None = None) -> torch.Tensor:
    """Logit differences at each row's last position. ``rows`` is (ids, last, target, contrast) of a
    chunk; ``patch`` is (donor, valid, nodes): ``nodes`` (N,) bool patched from ``donor`` where
    ``valid`` (None: the clean run)."""
    import torch

    ids, last, target, contrast = rows
    donor, valid, nodes = patch if patch is not None else (None, None, None)

    locs = space.by_hook()
    rows_ = torch.arange(ids.shape[0], device=ids.device)

    def hook(name, x):
        loc = locs.get(name)
        if loc is not None and nodes is not None:
            s = slice(loc.offset, loc.offset + loc.size)
            if x.shape[1] == 1:  # GPT.last_final's last block: each row's last position only
                d, v = donor[rows_, last][:, None, s], valid[rows_, last][:, None]
            else:
                d, v = donor[:, : x.shape[1], s], valid[:, : x.shape[1]]
            x = torch.where(nodes[s][None, None, :] & v[:, :, None], d.to(x.dtype), x)
        return x

    return logit_diff(model.last_logits(ids, last, hook), target, contrast)  # (n,)


def _random_sets(kept: torch.Tensor, draws: int, seed: int) -> list[torch.Tensor]:
    """``draws`` node sets of ``kept``'s size, from the nodes outside it where there are enough."""
    import torch

    n, k = len(kept), int(kept.sum())
    pool = (~kept).nonzero().flatten() if n - k >= k else torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(draws):
        s = torch.zeros(n, dtype=torch.bool)
        s[pool[torch.randperm(len(pool), generator=gen)[:k]]] = True
        sets.append(s)
    return sets


def _figures(clean: torch.Tensor, patched: torch.Tensor) -> dict[str, float]:
    import torch

    shift = clean - patched
    partner = torch.arange(len(clean)) ^ 1
    swap = float((clean + clean[partner]).sum())
    return {"accuracy": float((patched < 0).float().mean()), "logit_diff_shift": float(shift.mean()),
            "shift_fraction": float(shift.sum()) / swap if swap > 0 else None}


def interchange(model, batch: TaskBatch, kept: torch.Tensor, *, draws: int = MIN_DRAWS, seed: int = 0,
                chunk_pairs: int = 16) -> dict[str, Any]:
    """Interchange figures of the node set ``kept`` (num_nodes,) bool on the pairs of ``batch``
    (rows 2i and 2i+1 are a pair), and of ``max(draws, 3)`` random node sets of its size.

    Returns ``{"n_pairs", "positions", "clean_accuracy", "clean_logit_diff", "circuit": {accuracy,
    logit_diff_shift, shift_fraction}, "random": {the means, "draws": [...]}, "nodes", "random_pool"}``.
    """
    import torch

    space = NodeSpace.from_config(model.config)
    kept = kept.detach().cpu().bool()
    sets = [kept, *_random_sets(kept, max(draws, MIN_DRAWS), seed)]
    device = batch.ids.device
    was_training = model.training
    model.eval()
    clean_parts, patched_parts = [], [[] for _ in sets]
    try:
        with torch.no_grad():
            for i in range(0, len(batch), 2 * chunk_pairs):
                r = slice(i, i + 2 * chunk_pairs)
                last = batch.last[r]
                ids = batch.ids[r, : int(last.max()) + 1]
                target, contrast = batch.target[r], batch.contrast[r]
                acts = record_activations(model, ids, space)
                donor, valid = _donors(acts, last)
                rows = (ids, last, target, contrast)
                clean_parts.append(_patched_diffs(model, rows, space).cpu())
                for j, s in enumerate(sets):
                    patched_parts[j].append(_patched_diffs(model, rows, space, (donor, valid, s.to(device))).cpu())
    finally:
        model.train(was_training)
    clean = torch.cat(clean_parts)
    per_set = [_figures(clean, torch.cat(p)) for p in patched_parts]
    rand = per_set[1:]

    def mean(key):
        vals = [d[key] for d in rand if d[key] is not None]
        return sum(vals) / len(vals) if vals else None

    n, k = len(kept), int(kept.sum())
    return {"n_pairs": len(batch) // 2, "positions": POSITION_RULE, "nodes": k,
            "clean_accuracy": float((clean > 0).float().mean()), "clean_logit_diff": float(clean.mean()),
            "circuit": per_set[0],
            "random": {"accuracy": mean("accuracy"), "logit_diff_shift": mean("logit_diff_shift"),
                       "shift_fraction": mean("shift_fraction"), "draws": rand},
            "random_pool": "outside the circuit" if n - k >= k else "all nodes", "seed": seed}


def interchange_row(doc: dict[str, Any] | None) -> dict[str, Any]:
    """The headline interchange figures of a circuit document (None where it has none)."""
    ic = (doc or {}).get("interchange") or {}
    c, r = ic.get("circuit") or {}, ic.get("random") or {}
    return {"interchange_accuracy": c.get("accuracy"), "interchange_shift": c.get("logit_diff_shift"),
            "random_interchange_accuracy": r.get("accuracy"), "random_interchange_shift": r.get("logit_diff_shift")}


def circuit_interchange(circuit: dict[str, Any], run=None, *, draws: int = MIN_DRAWS) -> dict[str, Any]:
    """Interchange figures of a circuit document (``circuits/<task>.json``) on the test pairs it was
    pruned with, on the run ``run`` (default: the circuit's ``provenance.run``). A circuit pruned on
    another model is a one-line error."""
    import attrs

    from ..config import PruneConfig, config_hash, from_dict
    from ..errors import CircuitlabError
    from ..tasks import resolve_tasks, task_context_for_run
    from ..train.runs import read_run
    from .task import LoadedModel, Skipped, prepare_task

    prov = circuit.get("provenance") or {}
    run = run if run is not None else prov.get("run")
    if run is None:
        raise CircuitlabError("the circuit names no run folder; pass --model RUN, the run it was pruned on")
    info = read_run(run)
    space = NodeSpace.from_config(info.model)
    if prov.get("run_config_hash") not in (None, config_hash(info.model, info.train)) or \
            circuit.get("total_nodes") not in (None, space.num_nodes):
        raise CircuitlabError(f"circuit {circuit.get('task')!r} was pruned on another model than {str(info.path)!r} "
                              f"(run config hash {prov.get('run_config_hash')}, {circuit.get('total_nodes')} nodes); "
                              "pass --model with the run it was pruned on")
    config = attrs.evolve(from_dict(PruneConfig, prov.get("prune_config") or {}, "the circuit's prune_config"),
                          min_accuracy=0.0, tasks=None)
    loaded = LoadedModel.load(info.path, "cpu")
    context = task_context_for_run(loaded.info, config.mine_from)
    task = resolve_tasks(f"{circuit['suite']}:{circuit['task']}", context)[0]
    data = prepare_task(loaded, task, config, context=context)
    if isinstance(data, Skipped):
        raise CircuitlabError(f"task {task.qualname}: {data.reason}")
    model, test = loaded.model, data.test
    import torch

    kept = torch.zeros(space.num_nodes, dtype=torch.bool)
    kept[[space.index(n) for n in circuit["nodes"]]] = True
    return interchange(model, test, kept, draws=max(draws, config.random_draws), seed=config.seed + 2)
