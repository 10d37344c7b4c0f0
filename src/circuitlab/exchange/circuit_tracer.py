"""``circuitlab export-graph --format circuit-tracer``: a circuit as circuit-tracer's attribution-graph JSON.

circuit-tracer's local viewer (``circuit_tracer.frontend.serve``) and Neuronpedia read one JSON
document per graph, whose schema is ``circuit_tracer/frontend/graph_models.py``: ``metadata``
(``slug``, ``scan``, ``prompt_tokens``, ``prompt``...), ``qParams``, ``nodes[]`` and ``links[]``. The
viewer finds graphs through ``graph-metadata.json`` in the same folder, which this export updates.

What goes in:
- one node per circuit node, at the last position of one prompt of a chosen task pair
  (``--pair``, ``--prompt a|b``): ``activation`` is its value there, ``clerp`` its circuitlab name
  (plus its top-activating corpus tokens with ``--store``), ``layer`` its layer (``final``:
  ``n_layer``), ``feature`` its flat node index, ``feature_type`` circuit-tracer's feature type;
- the prompt's last token as an ``embedding`` node, and the right and wrong answer tokens as ``logit``
  nodes (``token_prob``: their probability under the full model);
- links: the circuit's edges, each weighted by the weight behind it (a matrix entry, or the read's norm
  gain for a residual edge), and from each kept ``final`` node to both logits, weighted by the unembedding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import GraphExportConfig
from ..errors import CircuitlabError
from ..files import check_writable_dir, read_json, write_json

FEATURE_TYPE = "cross layer transcoder"  # circuit-tracer's type for a feature node: drawn as one


def _task_pair(circuit: dict, tok, info, model, pair: int, split: str):
    from ..tasks import check_tokens, encode_pairs, load_pairs, resolve_tasks, task_context_for_run

    spec = f"{circuit['suite']}:{circuit['task']}" if circuit.get("suite") else circuit["task"]
    mine_from = circuit.get("provenance", {}).get("prune_config", {}).get("mine_from")
    try:
        (task,) = resolve_tasks(spec, task_context_for_run(info, mine_from))
        pairs = check_tokens(load_pairs(task, split, pair + 1, task_context_for_run(info, mine_from)), tok).pairs
    except ValueError as exc:
        raise CircuitlabError(f"task {spec!r}: {exc}") from None
    if len(pairs) <= pair:
        choose = f"choose 0..{len(pairs) - 1}" if pairs else "its contrast tokens are not single tokens here"
        raise CircuitlabError(f"--pair {pair}: task {spec!r} has only {len(pairs)} usable {split} pairs with "
                              f"this run's tokenizer; {choose}")
    p = pairs[pair]
    return p, encode_pairs([p], tok, max_len=model.config.n_ctx)


def _clerps(names: list[str], store: Path | None, top: int) -> dict[str, str]:
    if store is None or top == 0:
        return {n: n for n in names}
    from ..store import top_examples_many

    found = top_examples_many(store, names, k=top)
    out = {}
    for n in names:
        tokens = [h["token"] for h in found.get(n, {}).get("top", [])]
        out[n] = f"{n} | top: {', '.join(repr(t) for t in tokens)}" if tokens else n
    return out


#: The fields of circuit-tracer's ``Node`` that every node of an export shares unless it says otherwise.
_NODE_DEFAULTS = {"token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "influence": None,
                  "activation": None}


def _node(node_id: str, feature: int, layer: str, pos: int, kind: str, **fields) -> dict:
    """One entry of ``nodes[]`` with every field of circuit-tracer's ``Node`` (``fields``: ``jsNodeId``,
    ``clerp``, and any default to override)."""
    return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": pos, "feature_type": kind,
            **_NODE_DEFAULTS, **fields}


def graph_document(circuit: dict, model, tok, info, *, slug: str, config: GraphExportConfig,
                   store: Path | None = None) -> dict:
    """The circuit-tracer graph JSON of a circuit (a dict ready for ``json.dump``)."""
    import torch

    from ..model.nodes import NodeSpace, record_activations
    from ..view.data import edge_weights

    space = NodeSpace.from_config(model.config)
    if space.num_nodes != circuit.get("total_nodes"):
        raise CircuitlabError(f"run {str(info.path)!r} has {space.num_nodes} nodes but the circuit's model "
                              f"{circuit.get('total_nodes')}; pass the run it was found on with --model")
    pair, prompt, split = config.pair, config.prompt, config.split
    p, batch = _task_pair(circuit, tok, info, model, pair, split)
    row = 0 if prompt == "a" else 1
    ids = batch.ids[row: row + 1, : int(batch.last[row]) + 1]  # (1, T): the prompt, no padding
    pos = ids.shape[1] - 1
    acts = record_activations(model, ids, space)[0, pos]  # (num_nodes,)
    with torch.no_grad():
        logits, _ = model(ids)
    probs = logits[0, pos].float().softmax(-1)
    target, contrast = int(batch.target[row]), int(batch.contrast[row])
    names = list(circuit["nodes"])
    clerp = _clerps(names, store, config.top)
    n_layer = model.config.n_layer

    def node_id(name: str) -> tuple[str, str, int]:
        i = space.index(name)
        layer = str(n_layer) if name.startswith("final.") else name.split(".")[0]
        return f"{layer}_{i}_{pos}", layer, i

    nodes, ids_of = [], {}
    for n in names:
        nid, layer, i = node_id(n)
        ids_of[n] = nid
        a = float(acts[i])
        nodes.append(_node(nid, i, layer, pos, FEATURE_TYPE, jsNodeId=f"{layer}_{i}-0", clerp=clerp[n],
                           activation=a if math.isfinite(a) else None))
    last_token = int(ids[0, pos])
    nodes.append(_node(f"E_{last_token}_{pos}", pos, "E", pos, "embedding", jsNodeId=f"E_{last_token}-{pos}",
                       clerp=tok.decode([last_token])))
    logit_layer = str(n_layer + 1)
    for vocab, is_target in ((target, True), (contrast, False)):
        prob = float(probs[vocab])
        nodes.append(_node(f"{logit_layer}_{vocab}_{pos}", vocab, logit_layer, pos, "logit", jsNodeId=f"L_{vocab}-{pos}",
                           clerp=f'Output "{tok.decode([vocab])}" (p={prob:.3f})', token_prob=prob,
                           is_target_logit=is_target))
    edges = [tuple(e) for e in circuit.get("edges", []) if e[0] in ids_of and e[1] in ids_of]
    weights = edge_weights(model, space, [(space.index(s), space.index(d)) for s, d in edges])
    links = [{"source": ids_of[s], "target": ids_of[d], "weight": w} for (s, d), w in zip(edges, weights, strict=True)
             if w is not None]
    W = model.lm_head.weight.detach()
    for n in names:
        if n.startswith("final."):
            i = int(n.rpartition(".")[2])
            for vocab in (target, contrast):
                links.append({"source": ids_of[n], "target": f"{logit_layer}_{vocab}_{pos}",
                              "weight": round(float(W[vocab, i]), 5)})
    pieces = [tok.decode([t]) for t in ids[0].tolist()]
    return {
        "metadata": {"slug": slug, "scan": f"circuitlab:{info.path.name}", "transcoder_list": [],
                     "prompt_tokens": pieces, "prompt": p.prompt_a if prompt == "a" else p.prompt_b,
                     "node_threshold": None, "schema_version": 1,
                     "info": {"generator": f"circuitlab {__version__}", "task": circuit["task"],
                              "method": circuit.get("method"), "pair": pair, "split": split, "prompt": prompt,
                              "run": str(info.path)}},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }


def export_graph(circuit_path: str | Path, out: str | Path, *, model_dir: str | Path | None = None,
                 store: str | Path | None = None, config: GraphExportConfig | None = None) -> dict[str, Any]:
    """Write ``out`` (circuit-tracer graph JSON) and add it to ``graph-metadata.json`` beside it."""
    from ..train.runs import load_model
    from ..view.data import read_circuit

    config = config or GraphExportConfig()
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise CircuitlabError(f"--out {str(out)!r} must end in .json (circuit-tracer's viewer serves <slug>.json)")
    circuit = read_circuit(circuit_path)
    run = model_dir or circuit.get("provenance", {}).get("run")
    if not run:
        raise CircuitlabError(f"{str(circuit_path)!r} names no run; pass --model RUN")
    if store is not None and not Path(store).exists():
        raise CircuitlabError(f"--store {str(store)!r} does not exist; record one with 'circuitlab record'")
    check_writable_dir(out.parent, "--out")
    index = out.parent / "graph-metadata.json"
    meta = read_json(index, "graph index") if index.exists() else {"graphs": []}
    if not isinstance(meta, dict) or not isinstance(meta.get("graphs"), list):
        raise CircuitlabError(f"{str(index)!r} is not circuit-tracer's graph index; choose another --out folder")
    model, tok, info = load_model(run)  # the prompt needs the run's tokenizer
    doc = graph_document(circuit, model, tok, info, slug=out.stem, config=config,
                         store=Path(store) if store is not None else None)
    write_json(out, doc)
    entry = {k: v for k, v in doc["metadata"].items() if k != "info"}
    meta["graphs"] = [g for g in meta["graphs"] if g.get("slug") != entry["slug"]] + [entry]
    write_json(index, meta)
    return {"graph": str(out), "index": str(index), "nodes": len(doc["nodes"]), "links": len(doc["links"]),
            "prompt": doc["metadata"]["prompt"], "slug": entry["slug"]}

