"""Helpers for sparsity-schedule plugins: which parameters are sparse, and exact top-k masking.

The ``topk`` schedule (Gao et al. 2025, §2.2) covers every weight matrix, the embedding, the unembedding
and all linear biases. RMSNorm gains, the bigram table, the attention-sink logits and the optional
position embedding stay dense. Block matrices keep at least ``min_per_neuron`` weights per neuron:
``c_fc`` and ``c_attn`` per output row, both ``c_proj`` per input column (ibid., A.2).

torch is imported lazily so that plugin modules importing this stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch


@attrs.frozen
class SparseParam:
    name: str
    param: Any = attrs.field(eq=False, repr=False)  # the torch Parameter
    neuron_dim: int | None  # dim along which each neuron keeps >= min_per_neuron entries; None = no minimum


_DENSE_MARKERS = ("ln_", "bigram", "sink_logit", "wpe")


def unwrap(model: Any) -> Any:
    """The bare GPT inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)


def sparse_parameters(model: Any) -> list[SparseParam]:
    """The parameters a weight-sparsity schedule masks, in a fixed order."""
    out = []
    for name, p in unwrap(model).named_parameters():
        if any(m in name for m in _DENSE_MARKERS):
            continue
        neuron_dim = None
        if name.endswith(("c_attn.weight", "c_fc.weight")):
            neuron_dim = 1  # (out, in): every output row keeps its largest inputs
        elif name.endswith("c_proj.weight"):
            neuron_dim = 0  # (out, in): every input column keeps its largest outputs
        out.append(SparseParam(name, p, neuron_dim))
    return out


def is_block_matrix(name: str) -> bool:
    return name.endswith(("c_attn.weight", "c_fc.weight", "c_proj.weight"))


def kept_count(numel: int, density: float) -> int:
    return max(1, min(numel, round(density * numel)))


def topk_mask(w: torch.Tensor, k: int, neuron_dim: int | None = None, min_per_neuron: int = 0,
              allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of the k largest |w|, protecting each neuron's top ``min_per_neuron`` first.

    ``allowed`` (bool, like ``w``) restricts the choice to those entries (used by permanent masks).
    """
    import torch

    score = w.detach().abs().float()
    if allowed is not None:
        score = torch.where(allowed, score, torch.full_like(score, -1.0))
    if neuron_dim is not None and min_per_neuron > 0 and w.dim() == 2:
        other = 1 - neuron_dim
        n_neurons = w.shape[other]
        m = min(min_per_neuron, w.shape[neuron_dim], k // n_neurons)
        if m > 0 and allowed is None:
            rows = _protected_topk(score if neuron_dim == 1 else score.t(), k, m)  # one neuron per row
            if rows is not None:
                return (rows if neuron_dim == 1 else rows.t()).contiguous()
        if m > 0:
            idx = score.topk(m, dim=neuron_dim).indices
            protected = torch.zeros_like(score, dtype=torch.bool).scatter_(neuron_dim, idx, True)
            if allowed is not None:
                protected &= allowed
            score = torch.where(protected, torch.full_like(score, float("inf")), score)
    flat = score.flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[_topk_indices(flat, k)] = True
    if allowed is not None:
        mask &= allowed.flatten()
    return mask.view_as(w)


def _protected_topk(rows: torch.Tensor, k: int, m: int) -> torch.Tensor | None:
    """The mask ``topk_mask`` makes with each row's (neuron's) top ``m`` protected, found from the plain
    top-k: or None where this shortcut does not apply (the caller then protects every row first).

    The protected top-k is P (every row's top m) plus the best k - |P| of the rest; with S the plain
    top-k, that is S, plus the entries of P that S lacks (r of them, in rows with fewer than m in S),
    minus the r smallest entries of S that are not among their row's top m. Usually every row already
    has m entries in S and S is the answer; the few rows that do not cost a top-m each, instead of a
    top-m over every row (about 2 of the 6 ms of the ``small`` model's masks per step). Where a tie
    at a row's m-th value could change what is kept, or many rows fall short, it returns None."""
    import torch

    n, width = rows.shape
    flat = rows.contiguous().view(-1)
    if flat.device.type != "cpu" or bool(torch.isnan(flat).any()):
        return None
    S = torch.zeros(n * width, dtype=torch.bool, device=flat.device)
    S[_topk_indices(flat, k)] = True
    S = S.view(n, width)
    counts = S.sum(dim=1)  # (n,)
    needy = (counts < m).nonzero().squeeze(1)
    if needy.numel() == 0:
        return S
    if 8 * needy.numel() > n:  # many short rows: protecting every row first is cheaper
        return None
    short = rows[needy]  # (s, width)
    top = short.topk(m, dim=1)
    if bool(((short >= top.values[:, -1:]).sum(dim=1) > m).any()):  # a tie at a short row's m-th value
        return None
    add = torch.zeros_like(S)
    add[needy[:, None], top.indices] = True
    add &= ~S
    r = int(add.sum())
    s_idx = S.view(-1).nonzero().squeeze(1)
    q = min(len(s_idx), 4 * r + 64)
    if q * width > 1 << 22:
        return None
    cand = s_idx[flat[s_idx].topk(q, largest=False).indices]  # S's smallest, ascending
    cand_rows = cand // width
    kept = torch.where(S[cand_rows], rows[cand_rows], float("-inf"))  # (q, width): each candidate's row within S
    value = flat[cand][:, None]
    above = (kept > value).sum(dim=1)  # entries of its row in S above it
    removable = above >= m  # m larger ones stay in its row
    unsure = (above < m) & ((kept >= value).sum(dim=1) > m)  # tied across its row's m-th place
    order = removable.nonzero().squeeze(1)
    if len(order) < r or bool(unsure[: int(order[r - 1]) + 1].any()):
        return None
    S.view(-1)[cand[order[:r]]] = False
    return S | add


def _topk_indices(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of a 1-D tensor: exact, like ``flat.topk(k)``, but faster for k << n.

    A strided sample estimates a threshold that about 2k entries pass; the exact top-k is then taken
    among those candidates. If at least k entries pass, the true k-th value is at or above the
    threshold, so every top-k entry is a candidate and the result is exact; otherwise it falls back
    to a full top-k. A full topk over the 262k-entry embedding took ~3.4 ms on the 2-core CPU, the
    candidate path ~1.4 ms.
    """
    import torch

    n = flat.numel()
    # Only on CPU (measured there; on a GPU the count checks would sync), and never with NaNs: a full
    # topk ranks NaN highest, a threshold comparison would drop it.
    if n < 32768 or 4 * k > n or flat.device.type != "cpu" or bool(torch.isnan(flat).any()):
        return flat.topk(k, sorted=False).indices
    # Deterministic (no RNG draw, so training stays reproducible); an odd stride does not line up
    # with the rows of a matrix, so the sample sees every column.
    sample = flat[:: (n // 8192) | 1]
    passing = max(1, sample.numel() - (2 * k * sample.numel()) // n)  # rank of the ~2k-th largest
    threshold = sample.kthvalue(passing).values
    candidates = (flat > threshold).nonzero().squeeze(1)
    if candidates.numel() < k:  # many ties at the threshold (e.g. zeros of an already sparse matrix)
        candidates = (flat >= threshold).nonzero().squeeze(1)
        if candidates.numel() < k:
            return flat.topk(k, sorted=False).indices
    return candidates[flat[candidates].topk(k, sorted=False).indices]


def nonzero_densities(model: Any, names: list[str] | None = None) -> dict[str, float]:
    """Fraction of nonzero entries per parameter (all sparse parameters by default)."""
    params = dict(unwrap(model).named_parameters())
    names = names if names is not None else [sp.name for sp in sparse_parameters(model)]
    return {n: float((params[n] != 0).sum()) / params[n].numel() for n in names}


def overall_density(model: Any) -> float:
    """Nonzero fraction over all sparse parameters together."""
    nz = total = 0
    for sp in sparse_parameters(model):
        nz += int((sp.param != 0).sum())
        total += sp.param.numel()
    return nz / max(1, total)
