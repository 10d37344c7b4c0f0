"""Method results: one group per (method, task) under ``methods/``, written atomically.

A task is keyed ``suite:task`` (``methods/hardconcrete/python:for_while``). Stores written before
keyed it by its bare name (``methods/hardconcrete/for_while``); such a group reads under the key its
provenance names (``list_methods``, ``open_method``), and replacing it (``--overwrite``) moves it to
the new key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ..errors import CircuitlabError, UnknownNameError
from ..files import recover_dir, remove_tree, replace_dir, sibling_tmp
from ..model.nodes import NodeSpace
from .io import check_chunks, group_json, open_store, read_values
from .schema import METHODS, NODE_COORDS, SCHEMA_VERSION, check_name, node_coords, node_space, now, root_attrs

if TYPE_CHECKING:
    import xarray as xr


#: The arrays every method result holds.
METHOD_ARRAYS = ("score", "kept", "edge_src", "edge_dst")


def method_group(method: str, task: str) -> str:
    return f"{METHODS}/{check_name('method', method)}/{check_name('task', task)}"


def list_methods(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(method, task key) of every method result in the store, sorted."""
    return sorted(_groups(Path(path)))


def _groups(path: Path) -> dict[tuple[str, str], str]:
    """(method, task key) -> the group's folder name under ``methods/<method>/``."""
    root = path / METHODS
    found: dict[tuple[str, str], str] = {}
    if root.is_dir():
        for m in sorted(os.listdir(root)):
            if (root / m).is_dir() and not m.startswith("."):
                for t in sorted(os.listdir(root / m)):
                    if not t.startswith(".") and (root / m / t / "zarr.json").exists():
                        found.setdefault((m, _group_key(root / m / t, t)), t)
    return found


def _group_key(group: Path, name: str) -> str:
    """The task key of a group: its folder name, or for a group keyed by a bare task name (stores
    written before tasks were keyed ``suite:task``) the ``suite:task`` its provenance names."""
    if ":" in name:
        return name
    try:
        task = json.loads((group / "zarr.json").read_text(encoding="utf-8"))["attributes"]["provenance"]["task"]
    except (OSError, ValueError, KeyError, TypeError):
        return name
    return task if isinstance(task, str) and task.rpartition(":")[2] == name else name


def _old_group(path: Path, method: str, task: str) -> Path | None:
    """The group a store written before ``suite:task`` keys holds for (method, task), if any."""
    name = _groups(path).get((method, task)) if ":" in task else None
    return None if name is None or name == task else path / METHODS / method / name


def open_method(path: str | os.PathLike, method: str, task: str) -> xr.Dataset:
    import xarray as xr

    path = Path(path)
    root_attrs(path)
    group = method_group(method, task)
    if not (path / group / "zarr.json").exists() and (old := _old_group(path, method, task)) is not None:
        group = old.relative_to(path).as_posix()
    if not (path / group / "zarr.json").exists():
        raise UnknownNameError("method result", f"{method}/{task}", [f"{m}/{t}" for m, t in list_methods(path)])
    fix = rewrite_method(method, task)
    recover_dir(path / group)
    try:
        meta = json.loads((path / group / "zarr.json").read_text(encoding="utf-8"))
        complete = bool(meta.get("attributes", {}).get("all_chunks_written"))
    except (OSError, ValueError):
        complete = False
    gone = [a for a in METHOD_ARRAYS if not (path / group / a / "zarr.json").is_file()]
    if gone:
        raise CircuitlabError(f"method result {method}/{task} in {str(path)!r} is damaged: its array(s) "
                              f"{', '.join(gone)} are missing; {fix}")
    check_chunks(path / group, complete, fix)
    try:
        return xr.open_zarr(path, group=group, consolidated=False, chunks=None, zarr_format=3)
    except Exception as exc:
        raise CircuitlabError(f"method result {method}/{task} in {str(path)!r} could not be opened "
                              f"({type(exc).__name__}: {exc}); {fix}") from None


def rewrite_method(method: str, task: str) -> str:
    """The fix for a damaged method result: record --overwrite keeps method results, so it would not help."""
    return (f"rewrite it by pruning task {task!r} again with --store STORE --overwrite, or delete "
            f"methods/{method}/{task}")


def _check_nodes(path: Path, ds: xr.Dataset, space: NodeSpace | None, n: int) -> dict[str, np.ndarray]:
    stored = {c: read_values(ds[c], c) for c in NODE_COORDS}
    if len(stored["index"]) != n:
        raise CircuitlabError(f"store {str(path)!r} has {len(stored['index'])} nodes but the result has {n}; "
                              "it was recorded for a different model shape; use a store recorded from this run")
    if space is not None:
        mine = node_coords(space)
        for c in NODE_COORDS:
            if not np.array_equal(mine[c], stored[c]):
                raise CircuitlabError(f"store {str(path)!r}: node coordinate {c!r} does not match this model's "
                                      "node layout; use a store recorded from this run")
    return stored


def _edge_array(edge_list, ds: xr.Dataset) -> np.ndarray:
    """(E, 2) int64 flat node indices from pairs of indices or of node names (``"0.mlp.neuron.3"``)."""
    pairs = [tuple(p) for p in edge_list]
    if pairs and any(isinstance(x, str) for p in pairs for x in p):
        space = node_space(ds)
        pairs = [tuple(space.index(x) if isinstance(x, str) else int(x) for x in p) for p in pairs]
    try:
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise CircuitlabError("edge_list must be (source, destination) pairs of node indices or names") from None


def _result_arrays(scores, kept, method: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``scores`` as float32 and ``kept`` as bool, both (num_nodes,), from tensors or arrays."""
    scores = np.asarray(scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores, dtype=np.float32)
    kept_arr = np.asarray(kept.detach().cpu().numpy() if hasattr(kept, "detach") else kept)
    if kept_arr.dtype != np.bool_:
        if not np.isin(kept_arr, (0, 1)).all():
            raise CircuitlabError(f"kept for {method}/{task} must be boolean (one per node)")
        kept_arr = kept_arr.astype(bool)
    if scores.ndim != 1 or kept_arr.shape != scores.shape:
        raise CircuitlabError(f"scores {scores.shape} and kept {kept_arr.shape} for {method}/{task} must both be "
                              "(num_nodes,)")
    return scores, kept_arr


@attrs.frozen(kw_only=True)
class MethodResult:
    """One method's result for one task, as a store holds it (``methods/<method>/<task>``).

    ``scores``: float (num_nodes,) mask scores; ``kept``: bool (num_nodes,) kept set (tensors or
    arrays); ``edge_list``: the circuit's edges as (source, destination) flat node indices
    (``circuitlab.prune.edges.edge_list``) or node names (``Circuit.edges``); without it, ``compare``
    rebuilds the edges from the recorded run."""

    method: str
    task: str
    scores: Any = attrs.field(eq=False)
    kept: Any = attrs.field(eq=False)
    loss: float
    edges: int
    nodes: int
    provenance: dict = attrs.field(factory=dict)
    edge_list: Any = None
    # Figures a circuit document carries beside its nodes: "interchange" (prune.interchange) and, for
    # circuits pruned with several seeds, "seeds" (prune.seeds). ``compare`` shows them.
    figures: dict = attrs.field(factory=dict)


#: The figures of a circuit document that a store keeps with its result (``MethodResult.figures``).
FIGURES = ("interchange", "seeds")


def add_circuit(store_path: str | os.PathLike, circuit: Any, method: str, *, run=None, overwrite: bool = False,
                provenance: dict | None = None) -> Path:
    """Add a circuit to a store under ``method``: a ``circuitlab.prune.Circuit``, or its JSON document
    (``Circuit.to_json()``: a ``circuits/<suite>.<task>.json`` file, a bench cell's ``circuit``), keyed
    by its task's ``suite:task``. A document's interchange and seed figures (``FIGURES``) are kept too.

    ``provenance`` is added to the circuit's own. ``run`` and ``overwrite`` as for ``add_method_result``."""
    from ..prune.circuit import task_key

    doc = circuit if isinstance(circuit, dict) else None
    figures: dict = {}
    if doc is None:
        scores, kept, edges = circuit.scores, circuit.kept, [list(e) for e in circuit.edge_pairs]
        loss, n_edges, n_nodes, prov = circuit.loss, circuit.edge_count, circuit.node_count, circuit.provenance
        task = circuit.key
    else:
        space = _space_of(Path(store_path), run)
        kept = np.zeros(space.num_nodes, bool)
        kept[[space.index(n) for n in doc["nodes"]]] = True
        scores, edges = np.asarray(doc["scores"], np.float32), doc["edges"]
        loss, n_edges, n_nodes, prov = doc["loss"], doc["edge_count"], doc["node_count"], doc["provenance"]
        task = task_key(doc.get("suite") or "", doc["task"])
        figures = {k: doc[k] for k in FIGURES if isinstance(doc.get(k), dict)}
    result = MethodResult(method=method, task=task, scores=scores, kept=kept, loss=loss, edges=n_edges,
                          nodes=n_nodes, provenance={**prov, **(provenance or {})}, edge_list=edges,
                          figures=figures)
    return add_method_result(store_path, result, run=run, overwrite=overwrite)


def _space_of(path: Path, run) -> NodeSpace:
    """The node layout of the run (when given) or of the store."""
    if run is not None:
        from ..train.runs import RunInfo, read_run

        info = run if isinstance(run, RunInfo) else read_run(run)
        return NodeSpace.from_config(info.model)
    return node_space(open_store(path))


def add_method_result(store_path: str | os.PathLike, result: MethodResult, *, overwrite: bool = False,
                      run=None) -> Path:
    """Add one method's result for one task (a ``MethodResult``) to a store recorded by ``circuitlab record``.

    The node layout is checked against the store before anything is written. If ``run`` (a RunInfo or
    run folder) is given, the model identity is checked too, and a missing store is first recorded
    (``ensure_store``); without ``run`` the store must exist. The result goes into its own group
    ``methods/<method>/<task>``, written in a temporary folder and renamed into place: it never touches
    another method's data, and an existing result is an error unless ``overwrite``.
    """
    method, task, loss, edges, nodes = result.method, result.task, result.loss, result.edges, result.nodes
    provenance, edge_list, figures = result.provenance, result.edge_list, result.figures
    import xarray as xr

    path = Path(store_path)
    group = method_group(method, task)
    space = None
    if run is not None:
        from ..train.runs import RunInfo, read_run
        from .record import ensure_store

        info = run if isinstance(run, RunInfo) else read_run(run)
        ensure_store(path, info)  # checks the model identity; records the store if it is missing
        space = NodeSpace.from_config(info.model)
    store_attrs = root_attrs(path)
    scores, kept_arr = _result_arrays(result.scores, result.kept, method, task)
    ds = open_store(path)
    stored = _check_nodes(path, ds, space, len(scores))
    if int(nodes) != int(kept_arr.sum()):
        raise CircuitlabError(f"{method}/{task}: nodes={nodes} but kept has {int(kept_arr.sum())} nodes")
    if edge_list is not None:
        e = _edge_array(edge_list, ds)
        if len(e) != int(edges):
            raise CircuitlabError(f"{method}/{task}: edges={edges} but edge_list has {len(e)} edges")
        if len(e) and (e.min() < 0 or e.max() >= len(scores)):
            raise CircuitlabError(f"{method}/{task}: edge_list has node indices outside 0..{len(scores) - 1}")
    else:
        e = np.zeros((0, 2), np.int64)
    task_codes = store_attrs.get("codes", {}).get("task", [])
    result = xr.Dataset(
        {"score": ("node", scores), "kept": ("node", kept_arr),
         "edge_src": ("edge", e[:, 0].astype(np.int32)), "edge_dst": ("edge", e[:, 1].astype(np.int32))},
        coords={"node": np.arange(len(scores), dtype=np.int32), **{c: ("node", stored[c]) for c in NODE_COORDS}},
        attrs={"schema_version": SCHEMA_VERSION, "method": method, "task": task, "all_chunks_written": True,
               "task_code": task_codes.index(task) if task in task_codes else None,
               "loss": float(loss), "edges": int(edges), "nodes": int(nodes),
               "has_edge_list": edge_list is not None,
               "provenance": json.loads(json.dumps(provenance, default=str)),
               "figures": json.loads(json.dumps(figures, default=str)), "created": now()})
    target = path / group
    old = _old_group(path, method, task)
    if (target.exists() or old is not None) and not overwrite:
        raise CircuitlabError(f"store {str(path)!r} already has a result for method {method!r} on task {task!r}; "
                              "pass --overwrite to replace it, or use another method label")
    _write_result(result, path, target, overwrite)
    if old is not None:  # replaced: the result now lives under its suite:task key
        remove_tree(old)
    return target


def _write_result(result: xr.Dataset, path: Path, target: Path, overwrite: bool) -> None:
    """Write the result in a temporary folder, then put it in place (swapped atomically over an old one)."""
    import zarr

    group_json(path / METHODS, path.parent)
    group_json(target.parent, path.parent)
    tmp = sibling_tmp(target)
    try:
        with zarr.config.set({"array.write_empty_chunks": True}):  # every chunk on disk: a missing one is damage
            result.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False)
        if target.exists() and overwrite:
            replace_dir(tmp, target)
        else:
            try:
                os.rename(tmp, target)
            except OSError:
                raise CircuitlabError(f"store {str(path)!r} already has a result for method {result.attrs['method']!r} "
                                      f"on task {result.attrs['task']!r} (written concurrently); pass --overwrite to "
                                      "replace it") from None
    finally:
        remove_tree(tmp)
