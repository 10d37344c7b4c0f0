"""The data of one circuit page: nodes, methods, edge weights, examples and per-node ablations.

Everything the page shows is computed here, in Python, and embedded in the HTML as one JSON
document; the page itself fetches nothing. Each source is optional, and the page says what it lacks:
- the circuit JSON (``circuits/<task>.json``): kept nodes, edges, scores, losses;
- the run folder (``--model``, default: the circuit's ``provenance.run``): edge weights, node means,
  and the task-loss change when each node alone is ablated;
- the activation store (``--store``): top-activating corpus examples, node means, and the other
  methods' circuits for the same task (the page's method selector and diff view).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import BLOCK_SITES, ViewConfig
from ..errors import CircuitlabError
from ..files import read_json
from ..log import logger
from ..model.nodes import NodeSpace
from ..prune.circuit import CIRCUIT_KIND, CircuitDocument

SITES = BLOCK_SITES + ("final",)
_WEIGHT_OF = {("attn.v", "attn.out"): "attn.c_proj", ("mlp.in", "mlp.neuron"): "mlp.c_fc",
              ("mlp.neuron", "mlp.out"): "mlp.c_proj"}
_NORM_OF = {"attn.in": "ln_1", "mlp.in": "ln_2"}


#: ``circuitlab bench`` writes each cell as ``cells/ID.json``: the cell's figures with its circuit inside.
#: (``bench.work.CELL_KIND``; view and bench are independent siblings in the import layers, so the file
#: format's kind string is spelled here too.)
BENCH_CELL_KIND = "circuitlab-bench-cell"


def read_circuit_file(path: str | Path) -> tuple[dict, dict | None]:
    """(the circuit, the bench cell around it or None) of a circuit file or a bench cell file."""
    doc = read_json(path, "circuit")
    cell = None
    if isinstance(doc, dict) and doc.get("kind") == BENCH_CELL_KIND and isinstance(doc.get("circuit"), dict):
        cell, doc = doc, doc["circuit"]
    if not isinstance(doc, dict) or doc.get("kind") != CIRCUIT_KIND:
        raise CircuitlabError(f"{str(path)!r} is not a circuit (no kind={CIRCUIT_KIND!r}); pass a circuits/<task>.json "
                              "written by 'circuitlab prune' or 'run', or a bench's cells/<id>.json")
    # Every key the pages read is checked here, once: a document that does not fit is one line naming the key.
    CircuitDocument.from_json(doc, str(path) if cell is None else f"{path}: circuit")
    return doc, cell


def read_circuit(path: str | Path) -> dict:
    """A circuit file, or the circuit inside a bench cell file."""
    return read_circuit_file(path)[0]


def store_label(method: str) -> str:
    """A circuit's method as the store labels it (``PruneConfig.method``): circuits write that label;
    older circuit files wrote ``pruner/objective``."""
    pruner, _, objective = method.partition("/")
    return pruner if objective in ("", "binary_ce") else f"{pruner}+{objective}"


def parse_node(name: str) -> tuple[int | None, str, int]:
    """(layer, site, index) of ``L.site.I`` or ``final.I`` (layer None for final)."""
    head, _, idx = name.rpartition(".")
    if head == "final":
        return None, "final", int(idx)
    layer, _, site = head.partition(".")
    return int(layer), site, int(idx)


def _load_run(circuit: dict, model_dir: str | Path | None, device: str) -> tuple[Any, Any, Any, str | None]:
    """(model, tokenizer or None, RunInfo) of the circuit's run, or Nones and why not."""
    from ..train.runs import load_model

    run = model_dir or circuit.get("provenance", {}).get("run")
    if not run:
        return None, None, None, "the circuit names no run; pass --model RUN"
    if not Path(run, "model.safetensors").exists():
        if model_dir:
            raise CircuitlabError(f"--model {str(run)!r} is not a finished circuitlab run")
        return None, None, None, f"its run {str(run)!r} is not here; pass --model RUN"
    import torch

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise CircuitlabError(f"--device {device!r}: CUDA is not available here; use --device cpu")
    model, tok, info = load_model(run, device, need_tokenizer=False)
    if NodeSpace.from_config(model.config).num_nodes != circuit.get("total_nodes"):
        raise CircuitlabError(f"run {str(run)!r} has a different node layout than the circuit "
                              f"({circuit.get('total_nodes')} nodes); pass the run it was pruned from with --model")
    return model, tok, info, None


def edge_weights(model, space: NodeSpace, edges: list[tuple[int, int]]) -> list[float | None]:
    """The weight behind each (source, destination) edge: a matrix entry, or a read's norm weight."""
    locs = space.locations
    starts = [loc.offset for loc in locs]
    import bisect

    def where(i: int):
        loc = locs[bisect.bisect_right(starts, i) - 1]
        return loc, i - loc.offset

    inner = model.config.n_head * model.config.d_head
    out: list[float | None] = []
    for s, d in edges:
        (ls, si), (ld, di) = where(s), where(d)
        w = None
        if ls.site == "attn.in" and ld.site in ("attn.q", "attn.k", "attn.v") and ls.layer == ld.layer:
            part = ("attn.q", "attn.k", "attn.v").index(ld.site)
            w = model.blocks[ls.layer].attn.c_attn.weight[part * inner + di, si]
        elif (ls.site, ld.site) in _WEIGHT_OF and ls.layer == ld.layer:
            block = model.blocks[ls.layer]
            w = block.get_submodule(_WEIGHT_OF[(ls.site, ld.site)]).weight[di, si]
        elif ls.site in ("attn.out", "mlp.out") and si == di:  # residual: the read's norm gain
            norm = model.ln_f if ld.site == "final" else getattr(model.blocks[ld.layer], _NORM_OF[ld.site])
            w = norm.weight[di]
        out.append(None if w is None else round(float(w.detach()), 5))
    return out


def _method(label: str, source: str, names: list[str], scores: dict, edges: list, weights: list, **figures) -> dict:
    return {"label": label, "source": source, "nodes": names, "scores": scores,
            "edges": [[a, b, w] for (a, b), w in zip(edges, weights, strict=True)], **figures}


def _circuit_method(circuit: dict, space: NodeSpace | None, model) -> dict:
    names = list(circuit["nodes"])
    scores = {}
    if space is not None and len(circuit.get("scores", [])) == space.num_nodes:
        scores = {n: circuit["scores"][space.index(n)] for n in names}
    edges = [tuple(e) for e in circuit.get("edges", [])]
    weights = ([None] * len(edges) if model is None or space is None
               else edge_weights(model, space, [(space.index(a), space.index(b)) for a, b in edges]))
    seeds = circuit.get("seeds") or {}
    return _method(store_label(circuit["method"]), "circuit file", names, scores, edges, weights,
                   loss=circuit.get("loss"), node_count=circuit.get("node_count"),
                   edge_count=circuit.get("edge_count"),
                   frequency=seeds.get("frequency"), n_seeds=seeds.get("n"))  # nodes shaded by keep frequency


def _store_methods(store: Path, circuit: dict, skip: str, space: NodeSpace, model) -> list[dict]:
    """Every other method's result for the circuit's task (key ``suite:task``) in the store."""
    import numpy as np

    from ..store import list_methods, open_method, read_values

    task = circuit["task"]
    key = f"{circuit['suite']}:{task}" if circuit.get("suite") else task
    out = []
    for method, t in list_methods(store):
        # a bare name: a result stored before tasks were keyed suite:task, whose suite is not known
        if t not in (key, task) or method == skip:
            continue
        ds = open_method(store, method, t)
        kept = np.flatnonzero(read_values(ds["kept"], "kept"))
        score = read_values(ds["score"], "score")
        pairs = list(zip(read_values(ds["edge_src"], "edge_src").tolist(),
                         read_values(ds["edge_dst"], "edge_dst").tolist(), strict=True))
        weights = [None] * len(pairs) if model is None else edge_weights(model, space, pairs)
        names = [space.node_name(int(i)) for i in kept]
        out.append(_method(method, "store", names, {n: float(score[space.index(n)]) for n in names},
                           [(space.node_name(a), space.node_name(b)) for a, b in pairs], weights,
                           loss=ds.attrs.get("loss"), node_count=ds.attrs.get("nodes"), edge_count=ds.attrs.get("edges")))
    return out


def store_mismatch(store: Path, circuit: dict) -> str | None:
    """Why the store is not of the circuit's model (None: it is, as far as both record)."""
    from ..store import node_space, open_store

    ds = open_store(store)
    space = node_space(ds)
    if space.num_nodes != circuit.get("total_nodes"):
        return f"store {str(store)!r} has {space.num_nodes} nodes but the circuit's model {circuit.get('total_nodes')}"
    recorded = (ds.attrs.get("model") or {}).get("run")
    run = circuit.get("provenance", {}).get("run")
    if recorded and run and Path(recorded).resolve() != Path(run).resolve():
        return f"store {str(store)!r} was recorded from run {recorded!r}, the circuit was pruned from {run!r}"
    return None


def _store_space(store: Path, circuit: dict) -> NodeSpace:
    from ..store import node_space, open_store

    why = store_mismatch(store, circuit)
    if why:
        raise CircuitlabError(f"{why}; pass a store recorded from the circuit's run")
    return node_space(open_store(store))


def _means(names: list[str], space, store: Path | None, model, tok, info) -> tuple[dict, str | None]:
    """Mean activation per node: the store's node_mean, else the run's cached corpus means."""
    if space is not None and store is not None:
        from ..store import open_store, read_values

        mean = read_values(open_store(store)["node_mean"], "node_mean")
        return {n: round(float(mean[space.index(n)]), 5) for n in names}, None
    if model is not None and tok is not None:
        from ..prune.ablation import node_means

        mean = node_means(model, tok, info, next(model.parameters()).device).cpu()
        return {n: round(float(mean[space.index(n)]), 5) for n in names}, None
    return {}, "no store and no run with a tokenizer: mean activations are not available"


def page_data(circuit_path: str | Path | dict, *, store: str | Path | None = None,
              model_dir: str | Path | None = None, config: ViewConfig | None = None) -> dict:
    """The JSON document behind one circuit page: of a circuit file, or of a circuit document
    (``Circuit.to_json()``, for a circuit shown in a notebook)."""
    from .ablate import node_ablations

    config = config or ViewConfig()
    if isinstance(circuit_path, dict):  # a document in memory is checked as a file is
        circuit, circuit_path = circuit_path, None
        CircuitDocument.from_json(circuit, "circuit document")
    else:
        circuit, circuit_path = read_circuit(circuit_path), str(circuit_path)
    store = Path(store) if store is not None else None
    if store is not None and not store.exists():
        raise CircuitlabError(f"--store {str(store)!r} does not exist; record one with 'circuitlab record'")
    model, tok, info, no_run = _load_run(circuit, model_dir, config.device)
    space = NodeSpace.from_config(model.config) if model is not None else None
    if store is not None:
        space = _store_space(store, circuit)
    methods = [_circuit_method(circuit, space, model)]
    if store is not None:
        methods += _store_methods(store, circuit, methods[0]["label"], space, model)
    names = sorted({n for m in methods for n in m["nodes"]}, key=lambda n: (space.index(n) if space else n))
    notes = {}
    if no_run:
        notes["weights"] = f"edge weights and ablations are not shown: {no_run}"
    means, notes["mean"] = _means(names, space, store, model, tok, info)
    examples = {}
    if store is None:
        notes["examples"] = "no --store: top-activating examples are not shown"
    elif config.examples > 0 and names:
        from ..store import top_examples_many

        logger.info(f"top {config.examples} corpus examples for {len(names)} nodes")
        found = top_examples_many(store, names, k=config.examples, context=config.context)
        examples = {n: [{k: h[k] for k in ("activation", "before", "token", "after", "task")} for h in r["top"]]
                    for n, r in found.items()}
    deltas, ablation = node_ablations(circuit, names, model, tok, info, config)
    notes["ablation"] = ablation.pop("note", None)
    nodes = {}
    for n in names:
        layer, site, index = parse_node(n)
        nodes[n] = {"layer": layer, "site": site, "index": index, "mean": means.get(n),
                    "examples": examples.get(n), "delta": deltas.get(n)}
    n_layer = model.config.n_layer if model is not None else 1 + max(
        [v["layer"] for v in nodes.values() if v["layer"] is not None] or [0])
    keys = ("task", "suite", "method", "node_count", "edge_count", "loss", "accuracy", "train_loss", "target_loss",
            "reached", "full_model_loss", "full_model_accuracy", "validations", "total_nodes", "interchange")
    return {"kind": "circuitlab-view", "circuit": {k: circuit.get(k) for k in keys}, "file": circuit_path,
            "run": None if info is None else str(info.path), "store": None if store is None else str(store),
            "n_layer": n_layer, "sites": list(SITES), "nodes": nodes, "methods": methods, "ablation": ablation,
            "notes": {k: v for k, v in notes.items() if v}}
