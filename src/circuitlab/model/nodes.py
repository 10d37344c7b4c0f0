"""Node locations of the sparse GPT-2 core: names, sizes and flat indices.

A node is one channel at one hook point (Gao et al. 2025, §2, A.5): residual reads after each norm, q, k
and v channels, MLP neurons, residual writes, and the final residual. Node names are
``L.site.I`` (``2.mlp.neuron.17``) or ``final.I``.
"""

from __future__ import annotations

import attrs

from ..config import BLOCK_SITES, ModelConfig
from ..errors import CircuitlabError, UnknownNameError

#: Integer codes for sites (stores keep these; the lookup table goes into attrs).
SITE_CODES = {s: i for i, s in enumerate(BLOCK_SITES + ("final",))}


@attrs.frozen(kw_only=True)
class Location:
    hook: str  # hook-point name, "0.attn.q" or "final"
    layer: int  # -1 ... for final: n_layer
    site: str  # "attn.q" or "final"
    size: int
    offset: int  # index of this location's first node in the flat node vector


@attrs.frozen
class NodeSpace:
    """All node locations of one model shape, in forward order, with a flat node index."""

    locations: tuple[Location, ...]

    @classmethod
    def from_config(cls, config: ModelConfig) -> NodeSpace:
        sizes = config.site_widths()
        locs, offset = [], 0
        for layer in range(config.n_layer):
            for site in BLOCK_SITES:
                locs.append(Location(hook=f"{layer}.{site}", layer=layer, site=site, size=sizes[site], offset=offset))
                offset += sizes[site]
        locs.append(Location(hook="final", layer=config.n_layer, site="final", size=config.d_model, offset=offset))
        return cls(tuple(locs))

    @property
    def num_nodes(self) -> int:
        last = self.locations[-1]
        return last.offset + last.size

    def by_hook(self) -> dict[str, Location]:
        return {loc.hook: loc for loc in self.locations}

    def node_name(self, index: int) -> str:
        for loc in self.locations:
            if loc.offset <= index < loc.offset + loc.size:
                return f"{loc.hook}.{index - loc.offset}"
        raise IndexError(index)

    def names(self) -> list[str]:
        return [f"{loc.hook}.{i}" for loc in self.locations for i in range(loc.size)]

    def index(self, name: str) -> int:
        """Flat index of a node name such as ``1.mlp.neuron.7`` or ``final.3``."""
        hook, _, idx = name.rpartition(".")
        locs = self.by_hook()
        if hook not in locs or not idx.isdigit():
            raise UnknownNameError("node", name, [f"{h}.N" for h in locs],
                                   hint="Node names are LAYER.SITE.INDEX, e.g. 0.mlp.neuron.5, or final.INDEX.")
        loc = locs[hook]
        i = int(idx)
        if i >= loc.size:
            raise CircuitlabError(f"node {name!r}: index {i} is out of range; {hook} has {loc.size} nodes (0..{loc.size - 1})")
        return loc.offset + i


def record_activations(model, ids, space: NodeSpace | None = None):
    """Run ``model`` on ``ids`` (B, T) and return every node's activation, shape (B, T, num_nodes)."""
    import torch

    space = space or NodeSpace.from_config(model.config)
    locs = space.by_hook()
    out = torch.empty(ids.shape[0], ids.shape[1], space.num_nodes, dtype=torch.float32, device=ids.device)

    def hook(name, x):
        loc = locs.get(name)
        if loc is not None:
            out[:, :, loc.offset: loc.offset + loc.size] = x.float()
        return x

    with torch.no_grad():
        hooked_pass(model, ids, hook)
    return out


def hooked_pass(model, ids, hook) -> None:
    """Run ``model`` on ``ids`` with ``hook`` at every hook point, for what the hook records: circuitlab's
    GPT stops at the final residual (``GPT.final``; the unembedding holds no nodes)."""
    if hasattr(model, "final"):
        model.final(ids, hook=hook)
    else:
        model(ids, hook=hook)
