"""Faithfulness curves, CPR and CMD, as the MIB circuit track defines them (Mueller et al. 2025).

For a circuit C, ``f(C) = (m(C) - m(empty)) / (m(full) - m(empty))``, where m is the mean over the test
prompts of the right-minus-wrong logit difference (``circuitlab.tasks.logit_diff``), "full" is the
unpruned model and "empty" has every node ablated. The curve evaluates the top-n items by score at
n = floor(p * N) for p in ``MIB_FRACTIONS`` (0.1% ... 100%), once ranking by the signed score and once
by its absolute value. CPR is the trapezoidal area under f against the (linear) fraction, from the
signed ranking (higher is better); CMD is the trapezoidal area under |1 - f|, from the absolute
ranking (lower is better, 0 ideal) for attribution scores, and from the signed ranking for a mask's
keep-logits (see ``faithfulness_curves``). Like MIB, the x axis starts at 0.001 and is not normalised, so a
perfect curve has CPR 0.999.

circuitlab's unit is the node, and its ablation replaces a node by a fixed value (corpus mean, zero
or task mean) rather than MIB's patching from a counterfactual prompt. Edge curves rank every edge of
the model (``edges.all_edges``) by the smaller score of its two endpoints, and evaluate a top-n edge
set through the nodes those edges touch (circuitlab ablates nodes, not single edges), so an edge
circuit can hold more than n edges; ``edges_evaluated`` records how many: the edge curve is the node
curve re-parametrised, kept for MIB export only. See docs/bench.md.

MIB's grid puts most of the area at 20-100% of the nodes, where no circuit is. ``circuit_curve`` looks
where the circuit is: the top-n nodes of the same ranking at n from 0.25x to 4x the circuit's size,
log-spaced, with the overshoot reported (the largest f, and the area of f above 1 against log2 of the
size factor): a curve far above 1 means the kept nodes do the task better than the model does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .evaluator import Evaluator

#: The circuit sizes of the MIB circuit track, as fractions of all items (nodes or edges).
MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


#: Circuit-relative sizes: 0.25x to 4x the circuit's node count, log-spaced (steps of sqrt 2).
CIRCUIT_FACTORS = tuple(2 ** (i / 2) for i in range(-4, 5))


def area_above_1(x: Sequence[float], f: Sequence[float]) -> float:
    """Trapezoidal area of max(f - 1, 0) against x: the overshoot of a faithfulness curve."""
    over = [max(v - 1, 0.0) if math.isfinite(v) else 0.0 for v in f]
    return sum((x[i + 1] - x[i]) * (over[i] + over[i + 1]) / 2 for i in range(len(x) - 1))


def area_under(x: Sequence[float], f: Sequence[float]) -> float:
    """CPR: trapezoidal area under f(x) (MIB's ``area_under``)."""
    return sum((x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2 for i in range(len(x) - 1))


def area_from_1(x: Sequence[float], f: Sequence[float]) -> float:
    """CMD: trapezoidal area under |1 - f(x)| (MIB's ``area_from_1``)."""
    return sum((x[i + 1] - x[i]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2 for i in range(len(x) - 1))


def faithfulness(m: float, m_full: float, m_empty: float) -> float:
    """(m - m(empty)) / (m(full) - m(empty)); NaN when the full model and the empty circuit agree."""
    denominator = m_full - m_empty
    return (m - m_empty) / denominator if denominator != 0 else math.nan


def ranking(scores: torch.Tensor, absolute: bool) -> torch.Tensor:
    """Item indices, highest (absolute) score first; ties keep index order (a stable sort)."""
    import torch

    s = scores.abs() if absolute else scores
    s = torch.nan_to_num(s.double(), nan=-math.inf)
    return torch.argsort(s, descending=True, stable=True)


def _measure(te: Evaluator, kept: torch.Tensor) -> tuple[float, float]:
    """(mean logit difference, mean binary CE) over the test prompts with only ``kept`` nodes."""
    import torch.nn.functional as F

    d = te.full_diffs() if bool(kept.all()) else te.diffs(kept.to(te.values.device).float())  # all kept: the reference
    return float(d.mean()), float(F.softplus(-d).mean())


def _curve(te: Evaluator, order: torch.Tensor, kept_of, m_full: float, m_empty: float,
           fractions: Sequence[float], count_edges=None) -> dict[str, list]:
    total = len(order)
    out: dict[str, list] = {"n": [], "f": [], "m": [], "ce": [], "nodes": []}
    if count_edges is not None:
        out["edges_evaluated"] = []
    for p in fractions:
        n = int(p * total)
        kept = kept_of(order[:n])
        m, ce = _measure(te, kept)
        out["n"].append(n)
        out["f"].append(faithfulness(m, m_full, m_empty))
        out["m"].append(m)
        out["ce"].append(ce)
        out["nodes"].append(int(kept.sum()))
        if count_edges is not None:
            out["edges_evaluated"].append(int(count_edges(kept)))
    return out


def faithfulness_curves(model, te: Evaluator, scores: torch.Tensor, *, effect_scores: bool = False,
                        fractions: Sequence[float] = MIB_FRACTIONS, edges: bool = True) -> dict[str, Any]:
    """MIB faithfulness curves of a node scoring on the test evaluator ``te``, for nodes and for edges.

    ``scores`` (num_nodes,): higher = more important. Returns the curves (signed and absolute ranking
    per level: n, f, m, ce, nodes kept), the full and empty figures, and ``cpr``/``cmd`` per level.

    ``effect_scores``: the sign of a score is the direction of the item's effect (attribution scores,
    a ``score_only`` pruner), and CMD ranks by |score| as MIB does. Otherwise the scores are a mask's
    keep-logits, where a large negative score means "pruned early": ranking those by absolute value puts
    the least useful nodes first and makes CMD a constant (0.749 on MIB's grid). Their importance is the
    keep probability, which ranks like the signed score, so the "absolute" curve is the signed one
    (``cmd_ranking`` records which).
    """
    import torch

    from .edges import all_edges, count_edges

    scores = scores.detach().float().cpu()
    N = te.num_nodes
    with torch.no_grad():
        m_full, ce_full = _measure(te, torch.ones(N, dtype=torch.bool))
        m_empty, ce_empty = _measure(te, torch.zeros(N, dtype=torch.bool))
        result: dict[str, Any] = {"fractions": list(fractions), "m_full": m_full, "m_empty": m_empty,
                                  "ce_full": ce_full, "ce_empty": ce_empty}

        def node_set(chosen):
            kept = torch.zeros(N, dtype=torch.bool)
            kept[chosen] = True
            return kept

        levels = {"nodes": (scores, node_set, None)}
        if edges:
            src, dst = all_edges(model)
            edge_scores = torch.minimum(scores[src], scores[dst])

            def edge_nodes(chosen):
                kept = torch.zeros(N, dtype=torch.bool)
                kept[src[chosen]] = True
                kept[dst[chosen]] = True
                return kept

            levels["edges"] = (edge_scores, edge_nodes, lambda kept: count_edges(model, kept)["total"])
        result["cmd_ranking"] = "absolute" if effect_scores else "signed"
        for level, (item_scores, kept_of, counter) in levels.items():
            curves = {"signed": _curve(te, ranking(item_scores, False), kept_of, m_full, m_empty, fractions, counter)}
            curves["absolute"] = (_curve(te, ranking(item_scores, True), kept_of, m_full, m_empty, fractions, counter)
                                  if effect_scores else curves["signed"])
            result[level] = {"total": len(item_scores), **curves,
                             "cpr": area_under(fractions, curves["signed"]["f"]),
                             "cmd": area_from_1(fractions, curves["absolute"]["f"])}
    return result


def circuit_curve(te: Evaluator, scores: torch.Tensor, k: int,
                  factors: Sequence[float] = CIRCUIT_FACTORS) -> dict[str, Any]:
    """f of the top-n nodes by signed score at n = factor * k (at least 1, at most all): the curve around
    the circuit, with ``max_f`` and ``overshoot`` (area above f = 1 against log2 factor)."""
    import torch

    N = te.num_nodes
    order = ranking(scores.detach().float().cpu(), False)
    with torch.no_grad():
        m_full, _ = _measure(te, torch.ones(N, dtype=torch.bool))
        m_empty, _ = _measure(te, torch.zeros(N, dtype=torch.bool))
        out: dict[str, Any] = {"factors": list(factors), "k": k, "n": [], "f": [], "ce": []}
        for factor in factors:
            n = min(N, max(1, round(factor * k)))
            kept = torch.zeros(N, dtype=torch.bool)
            kept[order[:n]] = True
            m, ce = _measure(te, kept)
            out["n"].append(n)
            out["f"].append(faithfulness(m, m_full, m_empty))
            out["ce"].append(ce)
    finite = [v for v in out["f"] if math.isfinite(v)]
    out["max_f"] = max(finite) if finite else math.nan
    out["overshoot"] = area_above_1([math.log2(x) for x in factors], out["f"])
    return out
