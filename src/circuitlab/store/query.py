"""Queries: the examples where a node fires most."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CircuitlabError, UnknownNameError
from .io import open_store, read_values
from .schema import SIDES, node_space


def _rows(ds, path: Path, source: str) -> np.ndarray:
    side = np.asarray(read_values(ds["side"], "side"))
    corpus_code = SIDES.index("corpus")
    rows = {"corpus": np.flatnonzero(side == corpus_code), "tasks": np.flatnonzero(side != corpus_code),
            "all": np.arange(len(side))}.get(source)
    if rows is None:
        raise UnknownNameError("example source", source, ["corpus", "tasks", "all"])
    if len(rows) == 0:
        raise CircuitlabError(f"store {str(path)!r} has no {source} examples; record some with "
                              "'circuitlab record --corpus-windows N'")
    return rows


def _activations(ds, rows: np.ndarray, nodes: list[int]) -> np.ndarray:
    """(len(rows), token, len(nodes)) activations, read one stored chunk at a time, so that a corrupt
    chunk is named by its file and the examples it holds."""
    ce = int(ds["activation"].encoding.get("chunks", (256,))[0]) or 1
    acts = np.empty((len(rows), ds.sizes["token"], len(nodes)), np.float32)
    chunk_of = rows // ce
    for c in np.unique(chunk_of):
        at = np.flatnonzero(chunk_of == c)
        lo, hi = int(c) * ce, min(int(c) * ce + ce, ds.sizes["example"]) - 1
        block = read_values(ds["activation"].isel(example=slice(lo, hi + 1), node=nodes), "activation",
                            f" (activation/c/{int(c)}/0/0, examples {lo}..{hi})")
        acts[at] = block[rows[at] - lo]
    return acts


def top_examples_many(path: str | os.PathLike, nodes: list[str], k: int = 10, source: str = "corpus",
                      context: int = 24, after: int = 4) -> dict[str, dict[str, Any]]:
    """``top_examples`` for several nodes at once, reading each activation chunk only once."""
    path = Path(path)
    ds = open_store(path)
    space = node_space(ds)
    idxs = [space.index(n) for n in nodes]
    rows = _rows(ds, path, source)
    length = read_values(ds["length"], "length")[rows]
    acts = _activations(ds, rows, idxs) if idxs else np.zeros((len(rows), ds.sizes["token"], 0), np.float32)
    valid = np.arange(acts.shape[1])[None, :] < length[:, None]
    token_text = ds.attrs.get("token_text", [])
    codes = ds.attrs["codes"]
    task = read_values(ds["task"], "task")
    ids_all, ids_cache = ds["token_ids"], {}

    def text(ids, a: int, b: int) -> str:
        return "".join(token_text[i] if 0 <= i < len(token_text) else f"<{i}>" for i in ids[a:b])

    out = {}
    for j, (node, idx) in enumerate(zip(nodes, idxs, strict=True)):
        a = acts[:, :, j]
        flat = np.where(valid, a, -np.inf).ravel()
        order = np.argsort(-flat, kind="stable")[: max(0, k)]
        order = order[np.isfinite(flat[order])]
        hits = []
        for o in order:
            r, pos = divmod(int(o), a.shape[1])
            ex = int(rows[r])
            if ex not in ids_cache:
                ids_cache[ex] = read_values(ids_all.isel(example=ex), "token_ids")
            ids, n = ids_cache[ex], int(length[r])
            hits.append({"rank": len(hits) + 1, "activation": float(a[r, pos]), "example": ex, "position": pos,
                         "task": codes["task"][task[ex]] if task[ex] >= 0 else None,
                         "before": text(ids, max(0, pos - context), pos), "token": text(ids, pos, pos + 1),
                         "after": text(ids, pos + 1, min(n, pos + 1 + after))})
        nz = a[valid]
        out[node] = {"store": str(path), "node": node, "node_index": idx, "source": source,
                     "examples": int(len(rows)), "mean_abs": float(np.abs(nz).mean()) if nz.size else 0.0,
                     "frequency": float((nz != 0).mean()) if nz.size else 0.0, "top": hits}
    return out


def top_examples(path: str | os.PathLike, node: str, k: int = 10, source: str = "corpus",
                 context: int = 24, after: int = 4) -> dict[str, Any]:
    """The ``k`` (example, position) where ``node`` has the largest activation, with the text around it."""
    return top_examples_many(path, [node], k=k, source=source, context=context, after=after)[node]


def stored_task_losses(path: str | os.PathLike, model) -> dict[str, dict[str, Any]]:
    """Each recorded task's loss and accuracy computed from the store alone: the stored ``final``
    activations (the residual after the final norm) at each prompt's last token, through ``model``'s
    unembedding (``GPT.unembed``), scored against the stored target and contrast tokens.

    For a float32 store this is the model's own task loss on those prompts; for a rounded store
    (``record --precision``) the difference is what the precision costs."""
    import torch

    from ..tasks.loss import logit_diff, loss_and_accuracy

    path = Path(path)
    ds = open_store(path)
    final = next(loc for loc in node_space(ds).locations if loc.site == "final")
    side = np.asarray(read_values(ds["side"], "side"))
    rows = np.flatnonzero(side != SIDES.index("corpus"))
    if len(rows) == 0:
        return {}
    last = read_values(ds["length"], "length")[rows] - 1
    acts = _activations(ds, rows, list(range(final.offset, final.offset + final.size)))
    x = torch.from_numpy(np.ascontiguousarray(acts[np.arange(len(rows)), last]))
    ids = torch.from_numpy(read_values(ds["token_ids"], "token_ids")[rows, last].astype(np.int64))
    target, contrast = (torch.from_numpy(read_values(ds[v], v)[rows].astype(np.int64)) for v in ("target", "contrast"))
    with torch.no_grad():
        diff = logit_diff(model.unembed(x, ids), target, contrast)
    task = read_values(ds["task"], "task")[rows]
    out = {}
    for code in np.unique(task):
        sel = torch.from_numpy(task == code)
        loss, accuracy = loss_and_accuracy(diff[sel])
        out[ds.attrs["codes"]["task"][int(code)]] = {"loss": loss, "accuracy": accuracy, "prompts": int(sel.sum())}
    return out
