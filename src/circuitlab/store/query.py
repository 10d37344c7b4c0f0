"""Queries: the examples where a node fires most."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CircuitlabError, UnknownNameError
from .io import open_store, read_values
from .schema import SIDES, node_space


def top_examples(path: str | os.PathLike, node: str, k: int = 10, source: str = "corpus",
                 context: int = 24, after: int = 4) -> dict[str, Any]:
    """The ``k`` (example, position) where ``node`` has the largest activation, with the text around it."""
    path = Path(path)
    ds = open_store(path)
    space = node_space(ds)
    idx = space.index(node)
    side = np.asarray(read_values(ds["side"], "side"))
    corpus_code = SIDES.index("corpus")
    rows = {"corpus": np.flatnonzero(side == corpus_code), "tasks": np.flatnonzero(side != corpus_code),
            "all": np.arange(len(side))}.get(source)
    if rows is None:
        raise UnknownNameError("example source", source, ["corpus", "tasks", "all"])
    if len(rows) == 0:
        raise CircuitlabError(f"store {str(path)!r} has no {source} examples; record some with "
                              "'circuitlab record --corpus-windows N'")
    length = read_values(ds["length"], "length")[rows]
    acts = _node_activations(ds, rows, idx)
    valid = np.arange(acts.shape[1])[None, :] < length[:, None]
    flat = np.where(valid, acts, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[: max(0, k)]
    order = order[np.isfinite(flat[order])]
    token_text = ds.attrs.get("token_text", [])
    codes = ds.attrs["codes"]
    task = read_values(ds["task"], "task")
    ids_all = ds["token_ids"]
    hits = []
    for o in order:
        r, pos = divmod(int(o), acts.shape[1])
        ex = int(rows[r])
        ids = read_values(ids_all.isel(example=ex), "token_ids")
        n = int(length[r])

        def text(a: int, b: int, ids=ids) -> str:
            return "".join(token_text[i] if 0 <= i < len(token_text) else f"<{i}>" for i in ids[a:b])

        hits.append({"rank": len(hits) + 1, "activation": float(acts[r, pos]), "example": ex, "position": pos,
                     "task": codes["task"][task[ex]] if task[ex] >= 0 else None,
                     "before": text(max(0, pos - context), pos), "token": text(pos, pos + 1),
                     "after": text(pos + 1, min(n, pos + 1 + after))})
    nz = acts[valid]
    return {"store": str(path), "node": node, "node_index": idx, "source": source, "examples": int(len(rows)),
            "mean_abs": float(np.abs(nz).mean()) if nz.size else 0.0,
            "frequency": float((nz != 0).mean()) if nz.size else 0.0, "top": hits}



def _node_activations(ds, rows: np.ndarray, node: int) -> np.ndarray:
    """(len(rows), token) activations of one node, read one stored chunk at a time, so that a corrupt
    chunk is named by its file and the examples it holds."""
    ce = int(ds["activation"].encoding.get("chunks", (256,))[0]) or 1
    acts = np.empty((len(rows), ds.sizes["token"]), np.float32)
    chunk_of = rows // ce
    for c in np.unique(chunk_of):
        at = np.flatnonzero(chunk_of == c)
        lo, hi = int(c) * ce, min(int(c) * ce + ce, ds.sizes["example"]) - 1
        block = read_values(ds["activation"].isel(example=slice(lo, hi + 1), node=node), "activation",
                            f" (activation/c/{int(c)}/0/0, examples {lo}..{hi})")
        acts[at] = block[rows[at] - lo]
    return acts
