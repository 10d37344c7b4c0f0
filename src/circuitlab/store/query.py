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
    ce = int(ds["activation"].encoding.get("chunks", (256,))[0])
    acts = np.empty((len(rows), ds.sizes["token"]), np.float32)
    lo = 0
    while lo < len(rows):  # read chunk by chunk so a corrupt chunk is named precisely
        sel = rows[lo: lo + ce]
        sel_ = slice(int(sel[0]), int(sel[-1]) + 1) if sel[-1] - sel[0] == len(sel) - 1 else sel
        acts[lo: lo + len(sel)] = read_values(ds["activation"].isel(example=sel_, node=idx), "activation",
                                              f" of examples {int(sel[0])}..{int(sel[-1])}")
        lo += len(sel)
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

