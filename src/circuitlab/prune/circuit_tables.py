"""A circuit as tables (pandas) and as a graph (networkx), for notebooks (docs/api.md).

``Circuit.nodes``, ``Circuit.edges`` and ``Circuit.to_networkx`` call these; pandas and networkx are
imported on first use.
"""

from __future__ import annotations

from typing import Any

#: Sites whose channels write the residual stream: their edges to later reads are residual edges.
RESIDUAL_WRITES = ("attn.out", "mlp.out")


def node_parts(name: str) -> tuple[int | None, str, int]:
    """(layer, site, index) of ``L.site.I`` or ``final.I`` (layer None for final)."""
    head, _, idx = name.rpartition(".")
    if head == "final":
        return None, "final", int(idx)
    layer, _, site = head.partition(".")
    return int(layer), site, int(idx)


def edge_kind(source: str) -> str:
    """``residual`` for an edge out of a residual write, else ``weight`` (``circuitlab.prune.edges``)."""
    return "residual" if node_parts(source)[1] in RESIDUAL_WRITES else "weight"


def node_scores(circuit: Any) -> dict[str, float]:
    """Each kept node's score, found through ``kept`` (empty when the node layout is unknown)."""
    if circuit.kept is None or circuit.scores is None:
        return {}
    flat = circuit.kept.nonzero().flatten().tolist()
    if len(flat) != len(circuit.node_names):
        return {}
    return {n: float(circuit.scores[i]) for n, i in zip(circuit.node_names, flat, strict=True)}


def node_table(circuit: Any):
    import pandas as pd

    parts = [node_parts(n) for n in circuit.node_names]
    scores = node_scores(circuit)
    return pd.DataFrame({
        "name": pd.Series(circuit.node_names, dtype="string"),
        "layer": pd.Series([p[0] for p in parts], dtype="Int64"),
        "site": pd.Series([p[1] for p in parts], dtype="string"),
        "index": pd.Series([p[2] for p in parts], dtype="int64"),
        "score": pd.Series([scores.get(n, float("nan")) for n in circuit.node_names], dtype="float64"),
    })


def edge_table(circuit: Any):
    import pandas as pd

    pairs = circuit.edge_pairs
    return pd.DataFrame({
        "source": pd.Series([a for a, _ in pairs], dtype="string"),
        "destination": pd.Series([b for _, b in pairs], dtype="string"),
        "kind": pd.Series([edge_kind(a) for a, _ in pairs], dtype="string"),
    })


def graph(circuit: Any):
    import networkx as nx

    g = nx.DiGraph(task=circuit.task, suite=circuit.suite, method=circuit.method, loss=circuit.loss)
    scores = node_scores(circuit)
    for n in circuit.node_names:
        layer, site, index = node_parts(n)
        g.add_node(n, layer=layer, site=site, index=index, score=scores.get(n))
    for a, b in circuit.edge_pairs:
        g.add_edge(a, b, kind=edge_kind(a))
    return g
