"""Synthetic ``viz_data.pt`` files in the layout OpenAI's circuit viewer reads (``circuit_sparsity/viz.py``).

Written for the tests from the keys that viewer reads (docs/interop.md, "OpenAI's circuits"): a
circuit ``circuit_data`` of kept channel indices per location, ``importances`` with two-sided losses,
``pair_data`` edge blocks (with a ``"bias"`` source row on q/k/v blocks, as the viewer skips), node
samples, and the pruning curve. Values are made up; the layout is the released one. Run as a script
to write one for a model shape: ``python -m tests.oai_viz_layout OUT.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# circuitlab site -> OpenAI location suffix (the inverse of circuitlab.interop.oai_circuit's table).
OAI_SITE = {"attn.in": "attn.act_in", "attn.q": "attn.q", "attn.k": "attn.k", "attn.v": "attn.v",
            "attn.out": "attn.resid_delta", "mlp.in": "mlp.act_in", "mlp.neuron": "mlp.post_act",
            "mlp.out": "mlp.resid_delta"}
# The within-block location pairs that pair_data holds.
BLOCK_PAIRS = [("attn.act_in", "attn.q"), ("attn.act_in", "attn.k"), ("attn.act_in", "attn.v"),
               ("attn.v", "attn.resid_delta"), ("mlp.act_in", "mlp.post_act"), ("mlp.post_act", "mlp.resid_delta")]


def oai_location(layer: int | None, site: str) -> str:
    return "final_resid" if site == "final" else f"{layer}.{OAI_SITE[site]}"


def make_viz_data(model_config: dict, kept: dict[str, list[int]], *, loss: float = 0.8, interv_loss: float = 0.3,
                  seed: int = 0, edge_density: float = 0.5) -> dict:
    """A viz_data dict: ``kept`` is {OpenAI location: channel indices}; losses are given two-sided."""
    g = torch.Generator().manual_seed(seed)
    circuit_data = {loc: torch.tensor(idx, dtype=torch.long) for loc, idx in kept.items()}
    ch_interv_losses = {loc: [interv_loss + float(torch.rand(1, generator=g)) for _ in idx]
                        for loc, idx in kept.items()}
    pair_data = []
    for layer in range(model_config["n_layer"]):
        for a, b in BLOCK_PAIRS:
            src, dst = f"{layer}.{a}", f"{layer}.{b}"
            s_idx, d_idx = list(kept.get(src, [])), list(kept.get(dst, []))
            if not s_idx or not d_idx:
                continue
            w = torch.randn(len(s_idx), len(d_idx), generator=g)
            w = w * (torch.rand(w.shape, generator=g) < edge_density)
            if b in ("attn.q", "attn.k", "attn.v"):  # the viewer's bias row: a source with no node
                w = torch.cat([w, torch.ones(1, len(d_idx))])
                s_idx = s_idx + ["bias"]
            pair_data.append([w, s_idx, d_idx, (src, dst)])
    layer_names = [f"{i}.{b}" for i in range(model_config["n_layer"]) for b in ("attn", "mlp")]
    task_docs = torch.randint(0, model_config["vocab_size"], (4, 8), generator=g)
    return {
        "circuit_data": circuit_data,
        "importances": {
            "beeg_model_config": dict(model_config), "loss": loss, "interv_loss": interv_loss,
            "ch_interv_losses": ch_interv_losses,
            "layer_interv_losses": {n: interv_loss + 0.1 for n in layer_names},
            "pair_data": pair_data, "pair_data_connections": [[p[0] != 0, p[1], p[2], p[3]] for p in pair_data],
            "task_samples": [task_docs, {loc: {i: torch.randn(4, 8, generator=g) for i in idx}
                                         for loc, idx in kept.items()}],
        },
        "samples": {loc: {i: {0.5: [[], []]} for i in idx} for loc, idx in kept.items()},
        "all_loss": [[0, 2 * interv_loss], [1, interv_loss]],
        "num_total_nodes": 1000,
        "prune_config": {"k": sum(len(v) for v in kept.values()), "lr": 0.01},
    }


def file_edge_count(viz: dict) -> int:
    """Nonzero within-block entries, bias rows left out: the edge count users quote for these files."""
    n = 0
    for w, src, _, _ in viz["importances"]["pair_data"]:
        rows = [i for i, s in enumerate(src) if s != "bias"]
        n += int((w[rows] != 0).sum())
    return n


def write_viz_data(path: str | Path, viz: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(viz, path)
    return path


if __name__ == "__main__":
    config = {"n_layer": 2, "d_model": 32, "n_head": 2, "d_head": 16, "d_mlp": 128, "vocab_size": 512}
    kept = {"0.attn.act_in": [1, 5], "0.attn.v": [3, 17], "0.attn.resid_delta": [2], "1.mlp.act_in": [2, 9],
            "1.mlp.post_act": [7, 40, 100], "1.mlp.resid_delta": [4], "final_resid": [4]}
    print(write_viz_data(sys.argv[1], make_viz_data(config, kept)))
