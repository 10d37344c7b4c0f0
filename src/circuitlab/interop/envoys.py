"""Where each circuitlab node lives among the model's submodules, for tools that hook modules (nnsight).

circuitlab reads and replaces nodes through ``model(idx, hook=fn)``. Tools such as nnsight instead
wrap a ``torch.nn.Module`` and reach values as a submodule's input or output. ``module_point`` gives,
for a node name as circuitlab writes it (``1.mlp.neuron.7``, ``final.3``; docs/api.md), the
submodule path, whether the node is in its input (first positional argument) or output, and the
channel along the last dimension (docs/interop.md, "nnsight"):

    L.attn.in.I     blocks.L.attn       input   I
    L.attn.q.I      blocks.L.attn.c_attn output I   (k: n_head*d_head + I, v: 2*n_head*d_head + I)
    L.attn.out.I    blocks.L.attn       output  I
    L.mlp.in.I      blocks.L.mlp        input   I
    L.mlp.neuron.I  blocks.L.mlp.c_proj input   I
    L.mlp.out.I     blocks.L.mlp        output  I
    final.I         ln_f                output  I

Every point holds the node's value after AbsTopK, as circuitlab's hook does, except q, k and v:
``c_attn``'s output is before AbsTopK, so those nodes are refused when AbsTopK applies to them.
"""

from __future__ import annotations

import attrs

from ..config import ModelConfig
from ..errors import CircuitlabError
from ..model.nodes import NodeSpace

_POINTS = {"attn.in": ("attn", "input"), "attn.out": ("attn", "output"), "mlp.in": ("mlp", "input"),
           "mlp.neuron": ("mlp.c_proj", "input"), "mlp.out": ("mlp", "output")}
_QKV = ("attn.q", "attn.k", "attn.v")


@attrs.frozen
class ModulePoint:
    module: str  # dotted submodule path, e.g. "blocks.1.mlp.c_proj"
    where: str  # "input" (the first positional argument) or "output"
    channel: int  # index along the last dimension


def module_point(name: str, config: ModelConfig) -> ModulePoint:
    """The submodule, input or output, and channel that hold node ``name``."""
    space = NodeSpace.from_config(config)
    space.index(name)  # an unknown name or index is an error listing the valid ones
    hook, _, idx = name.rpartition(".")
    i = int(idx)
    if hook == "final":
        return ModulePoint("ln_f", "output", i)
    layer, _, site = hook.partition(".")
    if site in _QKV:
        location = site.replace(".", "_")
        if config.afrac is not None and location in config.afrac_locations:
            raise CircuitlabError(f"node {name!r}: AbsTopK applies to {location}, and no submodule holds its value "
                                  "after AbsTopK; read it with circuitlab's hook (model(idx, hook=fn))")
        inner = config.n_head * config.d_head
        return ModulePoint(f"blocks.{layer}.attn.c_attn", "output", _QKV.index(site) * inner + i)
    module, where = _POINTS[site]
    return ModulePoint(f"blocks.{layer}.{module}", where, i)
