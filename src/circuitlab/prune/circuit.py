"""Circuit records: kept nodes, edges, losses, validations and provenance, as JSON.

``circuits/<suite>.<task>.json`` is ``Circuit.to_json()``: readable without circuitlab. A task's key
is ``suite:task`` (``python:for_while``; ``dist:suite:task`` where two distributions register one
suite name); its file name is the key with ``.`` for ``:`` (``circuit_file_stem``). Node names are
``L.site.I`` / ``final.I`` (``circuitlab.nodes``); edges are ``[source, destination]`` name pairs
(``circuitlab.prune.edges``). Losses follow the task-loss convention of ``circuitlab.tasks``
(binary CE per prompt, mean over both prompts of every pair).

For notebooks (docs/api.md), a ``Circuit`` is also a pair of tables (``nodes``, ``edges``: pandas
DataFrames), a networkx graph (``to_networkx``), a file (``save``, ``Circuit.load``) and, in Jupyter,
the circuit page of ``circuitlab view`` (``_repr_html_``). The page is built by ``circuitlab.view``,
a layer above this one: it installs its renderer in ``HTML_RENDERER`` when imported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ..errors import CircuitlabError

CIRCUIT_KIND = "circuitlab-circuit"
#: The HTML of a circuit's page for Jupyter, ``(circuit document) -> str``; ``circuitlab.view`` sets it.
HTML_RENDERER: Callable[[dict], str] | None = None


def task_key(suite: str, task: str) -> str:
    """A task's identity: ``suite:task`` (the bare task name when no suite is known)."""
    return f"{suite}:{task}" if suite else task


def circuit_file_stem(key: str) -> str:
    """The file name (without ``.json``) of a task's circuit: its key with ``.`` for ``:``. Neither
    suite, task nor normalised distribution names hold a ``.``, so the key reads back unchanged."""
    return key.replace(":", ".")


@attrs.frozen(kw_only=True)
class Validations:
    """Held-out (test) task losses, uncalibrated, that say how much the circuit explains."""

    sufficiency: float  # everything outside the circuit ablated (the circuit alone)
    necessity: float  # only the circuit ablated (the rest of the model alone)
    random: float  # mean over random circuits with the same number of nodes
    random_draws: tuple[float, ...]
    full_model: float  # nothing ablated
    all_ablated: float  # every node ablated

    def to_json(self) -> dict[str, Any]:
        return {"sufficiency": self.sufficiency, "necessity": self.necessity, "random": self.random,
                "random_draws": list(self.random_draws), "full_model": self.full_model,
                "all_ablated": self.all_ablated}


@attrs.frozen(kw_only=True)
class Circuit:
    task: str
    suite: str
    method: str  # PruneConfig.method: "pruner", or "pruner+objective" (old files: "pruner/objective")
    kept: Any = attrs.field(eq=False, repr=False)  # bool tensor (num_nodes,)
    scores: Any = attrs.field(eq=False, repr=False)  # float tensor (num_nodes,), higher = kept longer
    # Kept node names and (source, destination) edges; read them as ``node_names``/``edge_pairs``, or as
    # the tables ``nodes``/``edges``. The constructor takes them as ``nodes=`` and ``edges=``.
    _nodes: tuple[str, ...] = attrs.field(repr=False, converter=tuple)
    _edges: tuple[tuple[str, str], ...] = attrs.field(repr=False, converter=lambda es: tuple(map(tuple, es)))
    node_count: int
    edge_counts: dict = attrs.field(eq=False)  # {"weight", "residual", "total"}
    total_nodes: int  # nodes in the model
    loss: float  # test loss (calibrated when calibration is on)
    accuracy: float  # test accuracy
    train_loss: float  # the bisection criterion: train loss of the chosen circuit
    target_loss: float
    reached: bool  # a circuit with train loss <= target exists along the ranking
    full_model_loss: float  # test loss of the unpruned model
    full_model_accuracy: float
    calibration: dict | None  # {"scale", "shift"} when calibrated
    bisection: tuple[tuple[int, float], ...]  # (k, train loss) in the order evaluated
    mask_nodes: int  # nodes the trained mask kept by itself (score > 0); 0 for score-only masks
    validations: Validations
    seconds: float
    provenance: dict = attrs.field(eq=False, repr=False)
    # True for a score-only (attribution) pruner: a score's sign is the direction of the node's effect.
    # False for a trained mask, whose scores are keep-logits (faithfulness.faithfulness_curves uses this).
    effect_scores: bool = False

    @property
    def key(self) -> str:
        """The task's identity, ``suite:task``: the key of its result in a store."""
        return task_key(self.suite, self.task)

    @property
    def edge_count(self) -> int:
        return int(self.edge_counts["total"])

    @property
    def node_names(self) -> tuple[str, ...]:
        """The kept nodes' names, in the model's forward order."""
        return self._nodes

    @property
    def edge_pairs(self) -> tuple[tuple[str, str], ...]:
        """The edges as (source, destination) node names."""
        return self._edges

    @property
    def nodes(self):
        """The kept nodes as a pandas DataFrame: name, layer (``final`` has none), site, index, and score
        (the pruner's score: higher was kept longer; empty when the node layout is unknown)."""
        from .circuit_tables import node_table

        return node_table(self)

    @property
    def edges(self):
        """The edges as a pandas DataFrame: source, destination, and kind (``weight``: a nonzero weight
        between the two; ``residual``: a residual write read by a later sublayer; docs/pruning.md)."""
        from .circuit_tables import edge_table

        return edge_table(self)

    def to_networkx(self):
        """The circuit as a ``networkx.DiGraph``: one node per kept node (attributes layer, site, index,
        score) and one edge per circuit edge (attribute kind)."""
        from .circuit_tables import graph

        return graph(self)

    def save(self, path: str | Path) -> Path:
        """Write the circuit's JSON (``to_json``) to ``path`` atomically and return the path. An existing
        circuit file there is replaced; any other existing file is left alone (an error)."""
        from ..files import write_json
        from .circuit_file import is_circuit_file

        path = Path(path)
        if path.exists() and not is_circuit_file(path):
            raise CircuitlabError(f"{str(path)!r} exists and is not a circuit file; save to another path, "
                                  "or remove it first")
        write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path, *, run: str | Path | None = None) -> Circuit:
        """Read a circuit file written by ``save``, ``circuitlab prune`` or ``run``.

        ``kept`` and the node scores need the model's node layout: it is read from ``run`` (a run folder),
        else from the run the circuit names (``provenance.run``), when that folder is there; otherwise
        ``kept`` is None and the score column of ``nodes`` is empty."""
        from ..files import read_json

        doc = read_json(path, "circuit")
        if not isinstance(doc, dict) or doc.get("kind") != CIRCUIT_KIND:
            raise CircuitlabError(f"{str(path)!r} is not a circuit (no kind={CIRCUIT_KIND!r}); pass a circuit "
                                  "file written by Circuit.save, 'circuitlab prune' or 'circuitlab run'")
        CircuitDocument.from_json(doc, str(path))  # a key that does not fit: one line naming the file and key
        return cls.from_json(doc, run=run)

    @classmethod
    def from_json(cls, doc: dict[str, Any], *, run: str | Path | None = None) -> Circuit:
        """The ``Circuit`` of a JSON document (``to_json``); see ``load`` for ``run``."""
        from .circuit_file import circuit_from_json

        return circuit_from_json(cls, doc, run)

    def _repr_html_(self) -> str:
        """Jupyter's view of a circuit: the page of ``circuitlab view``, inline (``HTML_RENDERER``)."""
        if HTML_RENDERER is None:  # only when circuitlab.view was never imported
            import html

            return (f"<pre>{html.escape(repr(self))}</pre><p>import circuitlab.view (or use circuitlab.load / "
                    "circuitlab.prune) to see the circuit page</p>")
        return HTML_RENDERER(self.to_json())

    def row(self) -> dict[str, Any]:
        """The summary row printed by ``circuitlab prune/run`` (and their ``--json`` task entries)."""
        return circuit_row(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": CIRCUIT_KIND,
            "task": self.task,
            "suite": self.suite,
            "method": self.method,
            "node_count": self.node_count,
            "edge_count": self.edge_count,
            "edge_counts": {k: int(v) for k, v in self.edge_counts.items()},
            "total_nodes": self.total_nodes,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "train_loss": self.train_loss,
            "target_loss": self.target_loss,
            "reached": self.reached,
            "full_model_loss": self.full_model_loss,
            "full_model_accuracy": self.full_model_accuracy,
            "calibration": self.calibration,
            "mask_nodes": self.mask_nodes,
            "bisection": [list(x) for x in self.bisection],
            "validations": self.validations.to_json(),
            "seconds": self.seconds,
            "nodes": list(self._nodes),
            "edges": [list(e) for e in self._edges],
            "scores": [_round(float(s)) for s in self.scores.tolist()],
            "effect_scores": self.effect_scores,
            "provenance": self.provenance,
        }

    def write(self, folder: str | Path) -> Path:
        """Write ``<folder>/<suite>.<task>.json`` atomically and return its path."""
        from ..files import write_json

        path = Path(folder) / f"{circuit_file_stem(self.key)}.json"
        write_json(path, self.to_json())
        return path


#: A node name: ``LAYER.SITE.INDEX`` (a block site of ``config.BLOCK_SITES``) or ``final.INDEX``.
NODE_NAME = re.compile(r"(?:\d{1,4}\.(?:attn|mlp)\.[a-z]+|final)\.\d{1,9}")


def _node_names(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    from ..config import BLOCK_SITES

    names = value if attribute.name == "nodes" else [n for e in value for n in e]
    for i, name in enumerate(names):
        known = NODE_NAME.fullmatch(name) and (name.startswith("final.") or
                                               name.split(".", 1)[1].rpartition(".")[0] in BLOCK_SITES)
        if not known:
            where = f"nodes[{i}]" if attribute.name == "nodes" else f"edges[{i // 2}][{i % 2}]"
            raise ValueError(f"key {where!r}: {name[:60]!r} is not a node name (LAYER.SITE.INDEX such as "
                             "0.mlp.neuron.5, or final.INDEX)")


def _is_circuit(kind: str) -> None:
    if kind != CIRCUIT_KIND:
        raise ValueError(f"key 'kind' is {kind[:60]!r}; a circuit file has kind {CIRCUIT_KIND!r}")


@attrs.frozen(kw_only=True)
class CircuitProvenance:
    """What a reader of a circuit file uses of its provenance (the rest is kept, unread)."""

    run: str | None = None  # the run folder the circuit was pruned from
    ablation: str | None = None
    prune_config: PruneSettings | None = None


@attrs.frozen(kw_only=True)
class PruneSettings:
    """The settings of ``provenance.prune_config`` a reader uses (the rest is kept, unread)."""

    ablation: str | None = None
    mine_from: str | None = None


@attrs.frozen(kw_only=True)
class CircuitDocument:
    """The schema of a circuit file (``Circuit.to_json``), as it is read back: ``from_json`` checks a
    parsed document against it. Only ``kind``, ``task``, ``method`` and ``nodes`` are required, so
    files of earlier versions read; keys it does not name are ignored, so files of later ones do."""

    kind: str = attrs.field(validator=lambda _i, _a, kind: _is_circuit(kind))
    task: str
    method: str
    nodes: list[str] = attrs.field(validator=_node_names)
    suite: str | None = None
    edges: list[tuple[str, str]] = attrs.field(factory=list, validator=_node_names)
    scores: list[float] = attrs.field(factory=list)
    node_count: int | None = None
    edge_count: int | None = None
    edge_counts: dict[str, int] | None = None
    total_nodes: int | None = None
    loss: float | None = None
    accuracy: float | None = None
    train_loss: float | None = None
    target_loss: float | None = None
    reached: bool | None = None
    full_model_loss: float | None = None
    full_model_accuracy: float | None = None
    validations: Validations | None = None
    effect_scores: bool = False
    provenance: CircuitProvenance = attrs.field(factory=CircuitProvenance)

    @classmethod
    def from_json(cls, doc: Any, source: str = "circuit") -> CircuitDocument:
        """``doc`` checked against the schema; one ``CircuitlabError`` naming ``source`` and the key if it does
        not fit."""
        from ..documents import structure

        return structure(doc, cls, what="circuit", source=source)


def circuit_row(doc: dict[str, Any]) -> dict[str, Any]:
    """The summary row of a circuit, from its JSON document (``Circuit.to_json``)."""
    v = doc["validations"]
    return {"task": doc["task"], "nodes": doc["node_count"], "edges": doc["edge_count"],
            "weight_edges": int(doc["edge_counts"]["weight"]), "residual_edges": int(doc["edge_counts"]["residual"]),
            "loss": doc["loss"], "accuracy": doc["accuracy"], "train_loss": doc["train_loss"],
            "target_loss": doc["target_loss"], "reached": doc["reached"], "seconds": doc["seconds"],
            "full_model_loss": doc["full_model_loss"], "full_model_accuracy": doc["full_model_accuracy"],
            "sufficiency": v["sufficiency"], "necessity": v["necessity"], "random_loss": v["random"],
            **({"transfer": _transfer_row(doc["transfer"])} if doc.get("transfer") else {})}


def _transfer_row(t: dict[str, Any]) -> dict[str, Any]:
    """The ``--eval-on`` figures of a summary row: the folder and the two losses and accuracies there."""
    keys = ("folder", "folder_hash", "n_pairs", "loss", "accuracy", "full_model_loss", "full_model_accuracy")
    return {k: t.get(k) for k in keys}


def _round(x: float) -> float:
    return x if not math.isfinite(x) or x == 0 else float(f"{x:.6g}")


def geomean(values) -> float | None:
    """Geometric mean of positive counts (a zero count counts as 1); None for no values."""
    vals = [max(float(v), 1.0) for v in values]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _validations(te, kept, k: int, config, device):
    """The circuit's test logit differences, the full model's test (loss, accuracy), and the validations."""
    import torch

    from ..tasks.loss import loss_and_accuracy

    N = len(kept)
    d_test = te.diffs(kept.to(device).float())
    full_loss, full_acc = loss_and_accuracy(te.full_diffs())  # the reference logits: no forward pass
    suff = loss_and_accuracy(d_test)[0]
    nec = loss_and_accuracy(te.diffs((~kept).to(device).float()))[0]
    all_abl = loss_and_accuracy(te.diffs(torch.zeros(N, device=device)))[0]
    rgen = torch.Generator().manual_seed(config.seed + 1)
    draws = []
    for _ in range(config.random_draws):
        rk = torch.zeros(N, dtype=torch.bool)
        rk[torch.randperm(N, generator=rgen)[:k]] = True
        draws.append(loss_and_accuracy(te.diffs(rk.to(device).float()))[0])
    return d_test, (full_loss, full_acc), Validations(sufficiency=suff, necessity=nec, random=sum(draws) / max(len(draws), 1),
                                         random_draws=tuple(draws), full_model=full_loss, all_ablated=all_abl)


def build_circuit(tr, te, best, attempts: list[dict], config, *, data, plugins: list,
                  with_edge_list: bool) -> Circuit:
    """The ``Circuit`` of the chosen attempt: test losses, validations, edges and provenance.

    ``data`` is the task's ``search.TaskData``; ``plugins`` the registry entries (or their provenance)
    of the pruner, the objective and the suite. ``seconds`` is left at 0 for the caller to set."""
    import torch

    from ..config import to_dict
    from ..model.nodes import NodeSpace
    from ..provenance import build_provenance
    from ..tasks.loss import loss_and_accuracy
    from .edges import count_edges, edge_list

    model = tr.model
    N, device = tr.num_nodes, tr.values.device
    reached = best.k is not None
    k = best.k if reached else N
    kept = best.kept(k, N)
    cal = best.calibration.get(k) if config.calibrate else None
    with torch.no_grad():
        d_test, (full_loss, full_acc), validations = _validations(te, kept, k, config, device)
        loss, acc = loss_and_accuracy(d_test, te.sign, cal)
    names = NodeSpace.from_config(model.config).names()
    counts = count_edges(model, kept)
    edges = tuple((names[s], names[t]) for s, t in edge_list(model, kept)) if with_edge_list else ()
    prov = build_provenance(
        plugins=plugins,
        prune_config=to_dict(config),  # as finished_circuit compares it: new fields only when set
        effective={"steps": best.steps, "lr": best.lr, "penalty_coef": best.coef},
        attempts=attempts, train_prompts=len(tr.batch), test_prompts=len(te.batch),
        mask_history=[list(h) for h in best.history], **(data.provenance or {}))
    return Circuit(
        task=data.task, suite=data.suite, method=config.method, kept=kept, scores=best.scores,
        nodes=tuple(names[i] for i in kept.nonzero().flatten().tolist()), edges=edges, node_count=int(k),
        edge_counts=counts, total_nodes=N, loss=loss, accuracy=acc, train_loss=dict(best.bisection)[k],
        target_loss=config.target_loss, reached=reached, full_model_loss=full_loss, full_model_accuracy=full_acc,
        calibration=None if cal is None else {"scale": cal[0], "shift": cal[1]},
        bisection=tuple(best.bisection), mask_nodes=best.mask_nodes, validations=validations,
        seconds=0.0, provenance=prov, effect_scores=best.score_only,
    )
