"""Edges of a circuit (Gao et al. 2025, §2): nonzero weights between two kept nodes.

Convention (see docs/pruning.md):

- **Weight edges**: a nonzero entry of a weight matrix whose input node and output node are both
  kept. Per layer: ``attn.in -> attn.q/k/v`` (rows of ``c_attn``), ``attn.v -> attn.out``
  (``attn.c_proj``; value channel j reaches output channel j after mixing over positions),
  ``mlp.in -> mlp.neuron`` (``c_fc``) and ``mlp.neuron -> mlp.out`` (``mlp.c_proj``).
- **Residual edges**: a kept write channel i (``attn.out`` or ``mlp.out`` of one sublayer) to a
  kept read channel i (``attn.in``, ``mlp.in`` or ``final``) of any later sublayer, when the
  read's norm weight at i is nonzero. (With a concatenated position embedding, ``d_pos_emb``, a
  read's last channels carry the position, not the residual: they have no residual edges.)
- Not counted: embedding -> read, ``final`` -> logit, q -> k (no weight between them), biases,
  the bigram table.

``count_edges`` returns ``{"weight", "residual", "total"}``; the headline edge count is ``total``.
``edge_list`` lists the same edges as (source node, destination node) flat indices, so
``len(edge_list(m, kept)) == count_edges(m, kept)["total"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.nodes import NodeSpace

if TYPE_CHECKING:
    import torch


def _weight_blocks(model, space: NodeSpace):
    """Yield (src Location, dst Location, nonzero (dst_size, src_size) bool matrix) per weight edge type."""
    locs = space.by_hook()
    inner = model.config.n_head * model.config.d_head
    for L, block in enumerate(model.blocks):
        qkv = block.attn.c_attn.weight.detach() != 0  # (3 * inner, d_in)
        for i, site in enumerate(("attn.q", "attn.k", "attn.v")):
            yield locs[f"{L}.attn.in"], locs[f"{L}.{site}"], qkv[i * inner: (i + 1) * inner]
        yield locs[f"{L}.attn.v"], locs[f"{L}.attn.out"], block.attn.c_proj.weight.detach() != 0  # (d, inner)
        yield locs[f"{L}.mlp.in"], locs[f"{L}.mlp.neuron"], block.mlp.c_fc.weight.detach() != 0  # (d_mlp, d)
        yield locs[f"{L}.mlp.neuron"], locs[f"{L}.mlp.out"], block.mlp.c_proj.weight.detach() != 0  # (d, d_mlp)


def _sublayers(model, space: NodeSpace):
    """Residual sublayers in forward order: (read Location, norm weight, write Location or None)."""
    locs = space.by_hook()
    out = []
    for L, block in enumerate(model.blocks):
        out.append((locs[f"{L}.attn.in"], block.ln_1.weight.detach(), locs[f"{L}.attn.out"]))
        out.append((locs[f"{L}.mlp.in"], block.ln_2.weight.detach(), locs[f"{L}.mlp.out"]))
    out.append((locs["final"], model.ln_f.weight.detach(), None))
    return out


def _seg(kept: torch.Tensor, loc, width: int | None = None) -> torch.Tensor:
    """``kept`` at a location; ``width`` keeps only its first channels (a read's residual part)."""
    return kept[loc.offset: loc.offset + (loc.size if width is None else width)]


def count_edges(model, kept: torch.Tensor) -> dict[str, int]:
    """Edges between kept nodes: ``{"weight": ..., "residual": ..., "total": ...}``.

    ``kept`` is a bool tensor of shape (num_nodes,) in ``NodeSpace`` order.
    """
    import torch

    space = NodeSpace.from_config(model.config)
    kept = kept.detach().to("cpu", torch.bool)
    if kept.shape != (space.num_nodes,):
        raise ValueError(f"kept has shape {tuple(kept.shape)}, expected ({space.num_nodes},)")
    weight = 0
    for src, dst, nz in _weight_blocks(model, space):
        d, s = _seg(kept, dst), _seg(kept, src)
        weight += int(nz.cpu()[d][:, s].sum())
    # Residual: walk the sublayers backwards, counting per channel the kept live reads seen so far.
    residual = 0
    reads_after = torch.zeros(model.config.d_model, dtype=torch.long)
    for read, norm_w, write in reversed(_sublayers(model, space)):
        if write is not None:
            residual += int(reads_after[_seg(kept, write)].sum())
        reads_after += (_seg(kept, read, len(norm_w)) & (norm_w.cpu() != 0)).long()
    return {"weight": weight, "residual": residual, "total": weight + residual}


def edge_list(model, kept: torch.Tensor) -> list[tuple[int, int]]:
    """Every counted edge as (source node index, destination node index), weight edges first."""
    import torch

    space = NodeSpace.from_config(model.config)
    kept = kept.detach().to("cpu", torch.bool)
    edges: list[tuple[int, int]] = []
    for src, dst, nz in _weight_blocks(model, space):
        m = nz.cpu() & _seg(kept, dst)[:, None] & _seg(kept, src)[None, :]
        for i, j in m.nonzero().tolist():
            edges.append((src.offset + j, dst.offset + i))
    subs = _sublayers(model, space)
    for a, (_, _, write) in enumerate(subs):
        if write is None:
            continue
        for read, norm_w, _ in subs[a + 1:]:
            live = _seg(kept, write) & _seg(kept, read, len(norm_w)) & (norm_w.cpu() != 0)
            for i in live.nonzero().flatten().tolist():
                edges.append((write.offset + i, read.offset + i))
    return edges


def all_edges(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Every edge of the whole model (all nodes kept), vectorised: (source, destination) flat node indices.

    The same edges, in the same order, as ``edge_list(model, all nodes kept)``, as two (E,) long tensors."""
    import torch

    space = NodeSpace.from_config(model.config)
    srcs, dsts = [], []
    for src, dst, nz in _weight_blocks(model, space):
        i, j = nz.cpu().nonzero(as_tuple=True)  # i: destination channel, j: source channel
        srcs.append(src.offset + j)
        dsts.append(dst.offset + i)
    subs = _sublayers(model, space)
    for a, (_, _, write) in enumerate(subs):
        if write is None:
            continue
        for read, norm_w, _ in subs[a + 1:]:
            channels = (norm_w.cpu() != 0).nonzero().flatten()
            srcs.append(write.offset + channels)
            dsts.append(read.offset + channels)
    return torch.cat(srcs).long(), torch.cat(dsts).long()
