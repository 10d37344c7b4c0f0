"""OpenAI's released circuits (``viz_data.pt``) read into plain records on circuitlab's node names.

OpenAI publishes, per model, task, pruning sweep and circuit size ``k``, one file
``viz/<model>/<task>/<sweep>/<k>/viz_data.pt`` (``k`` is a number or ``k_optim``), the file their
Streamlit viewer (``circuit_sparsity/viz.py``) loads with ``torch.load(weights_only=True)``. The parts
read here (docs/interop.md has the whole layout):

- ``circuit_data``: {location: 1-D integer tensor of the kept channel indices}; a location is
  ``L.attn.act_in|q|k|v|resid_delta``, ``L.mlp.act_in|post_act|resid_delta`` or ``final_resid``,
  so a node ID is ``{location}:{index}``;
- ``importances``: ``loss`` (the full model's task loss), ``interv_loss`` (the circuit's),
  ``ch_interv_losses`` ({location: [loss with that kept node ablated, one per index]}),
  ``layer_interv_losses``, ``beeg_model_config`` (the model's config dict), and ``pair_data``: a
  list of ``[weights (n_src[+1] x n_dst), src indices, dst indices, (src location, dst location)]``,
  the circuit's edges inside each block (a trailing ``"bias"`` source index is the bias row);
- ``num_total_nodes``, ``all_loss`` ([step, loss] of the pruning run), ``prune_config``.

Every stored task loss is two-sided: the sum of the losses on the pair's two prompts (the viewer
halves them on display). circuitlab's task loss is the mean over the two prompts, so every loss read
here is halved, and the provenance says so.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import attrs

from ..config import ModelConfig
from ..errors import CircuitlabError
from .oai import _refusal

SOURCE_FORMAT = "openai/circuit_sparsity viz_data.pt"
#: What the provenance says about the losses.
LOSS_NOTE = ("every loss in viz_data.pt is two-sided (summed over the pair's two prompts); circuitlab "
             "reports the mean over the two prompts, so each was halved")

#: OpenAI location suffix -> circuitlab site.
_SITES = {"attn.act_in": "attn.in", "attn.q": "attn.q", "attn.k": "attn.k", "attn.v": "attn.v",
          "attn.resid_delta": "attn.out", "mlp.act_in": "mlp.in", "mlp.post_act": "mlp.neuron",
          "mlp.resid_delta": "mlp.out"}
_LOCATION_RE = re.compile(r"(\d+)\.(attn|mlp)\.(act_in|post_act|resid_delta|q|k|v)")
_NODE_ID_RE = re.compile(r"(.+):(\d+)")
#: The model-shape keys of ``beeg_model_config`` checked against the run.
_SHAPE_KEYS = ("n_layer", "d_model", "n_head", "d_head", "d_mlp")


def circuitlab_hook(location: str) -> str | None:
    """circuitlab's hook of an OpenAI location (``3.mlp.post_act`` -> ``3.mlp.neuron``); None: no node site.

    ``final_resid`` (before ``ln_f``) maps to circuitlab's ``final`` (after ``ln_f``): the same channel
    index on the other side of the final norm's per-channel scale (docs/interop.md)."""
    if location == "final_resid":
        return "final"
    m = _LOCATION_RE.fullmatch(location)
    if m is None:
        return None
    layer, block, site = m.groups()
    return f"{layer}.{_SITES[f'{block}.{site}']}"


def circuitlab_node(node_id: str) -> str | None:
    """``3.mlp.post_act:17`` -> ``3.mlp.neuron.17``; ``final_resid:5`` -> ``final.5``; None if unmappable."""
    m = _NODE_ID_RE.fullmatch(node_id)
    hook = circuitlab_hook(m.group(1)) if m else None
    return None if hook is None else f"{hook}.{int(m.group(2))}"


@attrs.frozen(kw_only=True)
class OaiCircuit:
    """One released circuit on circuitlab's node names, losses already halved."""

    nodes: tuple[str, ...]  # circuitlab node names, in the file's order
    source_ids: tuple[str, ...]  # the OpenAI node IDs, aligned with nodes
    unmapped: tuple[str, ...]  # node IDs with no circuitlab node (only with skip_unmapped)
    edges: tuple[tuple[str, str, float], ...]  # the file's within-block edges (nonzero weights), circuitlab names
    loss: float | None  # the circuit's task loss (interv_loss / 2)
    full_model_loss: float | None  # loss / 2
    node_losses: dict  # {node: task loss with that node ablated / 2}
    pruning_losses: tuple[tuple[float, float], ...]  # all_loss, losses halved
    model_config: dict  # beeg_model_config as stored
    prune_config: Any
    num_total_nodes: int | None


def _fail(path: Path, what: str) -> CircuitlabError:
    return CircuitlabError(f"{str(path)!r}: {what}; pass a viz_data.pt as released with OpenAI's circuits "
                           "(viz/<model>/<task>/<sweep>/<k>/viz_data.pt)")


def read_viz_data(path: str | Path) -> dict:
    """The file as a dict, read weights-only (never a full unpickle); one-line errors."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"{str(path)!r} does not exist; pass a viz_data.pt file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CircuitlabError(f"{str(path)!r} holds objects other than tensors and plain containers, and "
                              f"weights-only loading refused it ({_refusal(exc)}); circuitlab never unpickles "
                              "arbitrary objects") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, IndexError, KeyError, TypeError,
            AttributeError) as exc:  # a foreign file trips the unpickler in many ways
        raise _fail(path, f"not a readable torch file ({_refusal(exc)})") from None
    if not isinstance(data, dict) or "circuit_data" not in data or "importances" not in data:
        keys = sorted(map(str, data))[:6] if isinstance(data, dict) else type(data).__name__
        raise _fail(path, f"no circuit_data and importances (found {keys})")
    return data


def _half(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v / 2 if math.isfinite(v) else None


def _indices(value: Any) -> list | None:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and all(isinstance(i, int) or i == "bias" for i in value):
        return list(value)
    return None


def _node_ids(circuit_data: Any, path: Path) -> list[tuple[str, int]]:
    """(location, index) of every kept node, in the file's order."""
    out = []
    if isinstance(circuit_data, (list, tuple)):  # a flat list of "location:index" IDs
        for node_id in circuit_data:
            m = _NODE_ID_RE.fullmatch(str(node_id))
            if m is None:
                raise _fail(path, f"circuit_data entry {node_id!r} is not a LOCATION:INDEX node ID")
            out.append((m.group(1), int(m.group(2))))
        return out
    if not isinstance(circuit_data, dict):
        raise _fail(path, f"circuit_data is a {type(circuit_data).__name__}, not {{location: indices}}")
    for loc, value in circuit_data.items():
        if loc == "prune_config":
            continue
        idx = _indices(value)
        if idx is None or "bias" in idx:
            raise _fail(path, f"circuit_data[{loc!r}] is not a list of channel indices")
        out += [(str(loc), int(i)) for i in idx]
    return out


def check_model(viz_config: Any, model: ModelConfig, path: Path, run: str) -> None:
    """Refuse a circuit found on another model shape (beeg_model_config against the run)."""
    if not isinstance(viz_config, dict):
        return
    ours = {"n_layer": model.n_layer, "d_model": model.d_model, "n_head": model.n_head, "d_head": model.d_head,
            "d_mlp": model.d_mlp}
    theirs = dict(viz_config)
    if theirs.get("d_head") is None and theirs.get("d_model") and theirs.get("n_head"):
        theirs["d_head"] = theirs["d_model"] // theirs["n_head"]
    if theirs.get("d_mlp") is None and theirs.get("d_model"):
        theirs["d_mlp"] = theirs.get("n_mlp") or 4 * theirs["d_model"]
    bad = [f"{k}={theirs[k]} (run: {ours[k]})" for k in _SHAPE_KEYS if theirs.get(k) is not None
           and theirs[k] != ours[k]]
    if bad:
        raise CircuitlabError(f"{str(path)!r} was found on another model: {', '.join(bad)}; pass the run "
                              f"imported from that circuit's model (not {run!r})")


def parse_viz_data(data: dict, model: ModelConfig, path: str | Path, *, run: str = "the run",
                   skip_unmapped: bool = False) -> OaiCircuit:
    """The circuit of a loaded viz_data.pt, checked against the run's model shape."""
    from ..model.nodes import NodeSpace

    path = Path(path)
    imp = data["importances"]
    if not isinstance(imp, dict):
        raise _fail(path, f"importances is a {type(imp).__name__}, not a dict")
    check_model(imp.get("beeg_model_config"), model, path, run)
    space = NodeSpace.from_config(model)
    sizes = {loc.hook: loc.size for loc in space.locations}
    nodes, ids, unmapped = [], [], []
    for loc, i in _node_ids(data["circuit_data"], path):
        name = circuitlab_node(f"{loc}:{i}")
        if name is None:
            unmapped.append(f"{loc}:{i}")
            continue
        hook = name.rpartition(".")[0]
        if hook not in sizes or i >= sizes[hook]:
            width = sizes.get(hook, 0)
            raise CircuitlabError(f"{str(path)!r}: node {loc}:{i} is outside the run's model ({hook} has "
                                  f"{width} channels); pass the run imported from that circuit's model")
        nodes.append(name)
        ids.append(f"{loc}:{i}")
    if unmapped and not skip_unmapped:
        raise CircuitlabError(f"{str(path)!r}: {len(unmapped)} node(s) have no circuitlab node ({unmapped[:3]}"
                              f"{' ...' if len(unmapped) > 3 else ''}); pass --skip-unmapped to import the rest")
    node_losses = {}
    for loc, losses in (imp.get("ch_interv_losses") or {}).items():
        idx = _indices((data["circuit_data"] or {}).get(loc)) if isinstance(data["circuit_data"], dict) else None
        vals = losses.tolist() if hasattr(losses, "tolist") else losses
        if idx is None or not isinstance(vals, (list, tuple)) or len(vals) != len(idx):
            continue
        for i, v in zip(idx, vals, strict=True):
            name = circuitlab_node(f"{loc}:{i}")
            if name is not None:
                node_losses[name] = _half(v)
    return OaiCircuit(
        nodes=tuple(nodes), source_ids=tuple(ids), unmapped=tuple(unmapped),
        edges=tuple(_edges(imp.get("pair_data") or [], path)),
        loss=_half(imp.get("interv_loss")), full_model_loss=_half(imp.get("loss")), node_losses=node_losses,
        pruning_losses=tuple((float(s), _half(v)) for s, v in (data.get("all_loss") or [])),
        model_config=dict(imp.get("beeg_model_config") or {}),
        prune_config=data.get("prune_config", (data["circuit_data"] or {}).get("prune_config")
                              if isinstance(data["circuit_data"], dict) else None),
        num_total_nodes=data.get("num_total_nodes"),
    )


def _edges(pair_data: Any, path: Path) -> list[tuple[str, str, float]]:
    """The nonzero entries of each ``pair_data`` block, bias rows left out."""
    import torch

    out = []
    if not isinstance(pair_data, (list, tuple)):
        raise _fail(path, "importances.pair_data is not a list of edge blocks")
    for block in pair_data:
        if not isinstance(block, (list, tuple)) or len(block) != 4:
            raise _fail(path, "a pair_data entry is not [weights, src indices, dst indices, (src, dst)]")
        weights, src, dst, (loc_src, loc_dst) = block
        src, dst = _indices(src), _indices(dst)
        w = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
        if src is None or dst is None or w is None:
            raise _fail(path, f"pair_data block {loc_src}->{loc_dst} is malformed")
        if w.numel() == 0:
            continue
        real = len([s for s in src if s != "bias"])
        if w.ndim != 2 or w.shape[0] not in (real, real + 1) or w.shape[1] != len(dst):  # + 1: the bias row
            raise _fail(path, f"pair_data block {loc_src}->{loc_dst} has weights {tuple(w.shape)} for "
                              f"{len(src)} sources and {len(dst)} destinations")
        for a, b in w.nonzero().tolist():
            if a >= len(src) or src[a] == "bias":
                continue
            s, d = circuitlab_node(f"{loc_src}:{src[a]}"), circuitlab_node(f"{loc_dst}:{dst[b]}")
            if s is not None and d is not None:
                out.append((s, d, float(w[a, b])))
    return out
