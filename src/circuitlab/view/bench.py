"""``circuitlab view --bench DIR``: an index of every circuit under a folder, with a page for each.

Any folder tree works: every ``circuits/*.json`` that is a circuit becomes a row (its figures come
from the circuit file, plus the matching row of a ``summary.json`` beside the ``circuits`` folder
when there is one), and every ``summary.json`` adds its headline figures. A ``circuitlab bench``
output folder works too: each pruned cell (``cells/*.json``) is a row, with the cell's model,
control, seed, ``beats_full_model`` and CPR/CMD beside the circuit's figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from ..config import ViewConfig
from ..documents import DocumentError, structure
from ..errors import CircuitlabError
from ..files import read_json, write_bytes
from ..log import logger
from .data import page_data, read_circuit_file, store_label, store_mismatch
from .html import bench_page, circuit_page

#: Figures of a circuit file shown in its row, in order.
COLUMNS = ("task", "method", "nodes", "edges", "loss", "accuracy", "target_loss", "reached", "full_model_loss",
           "sufficiency", "necessity", "random_loss")


def _figures(circuit: dict, summary_row: dict | None) -> dict:
    v = circuit.get("validations") or {}
    task = f"{circuit['suite']}:{circuit.get('task')}" if circuit.get("suite") else circuit.get("task")
    method = store_label(circuit["method"]) if isinstance(circuit.get("method"), str) else circuit.get("method")
    figures = {"task": task, "method": method, "nodes": circuit.get("node_count"),
               "edges": circuit.get("edge_count"), "loss": circuit.get("loss"), "accuracy": circuit.get("accuracy"),
               "target_loss": circuit.get("target_loss"), "reached": circuit.get("reached"),
               "full_model_loss": circuit.get("full_model_loss"), "sufficiency": v.get("sufficiency"),
               "necessity": v.get("necessity"), "random_loss": v.get("random")}
    for k, val in (summary_row or {}).items():  # a bench's own extra figures, when scalar
        if k not in figures and k not in ("file", "suite") and isinstance(val, (int, float, str, bool)):
            figures[k] = val
    return figures


#: ``circuitlab prune``/``run`` write ``summary.json`` with this kind (summaries of earlier versions have none).
PRUNE_SUMMARY_KIND = "circuitlab-prune-summary"


@attrs.frozen(kw_only=True)
class SummaryRow:
    """One circuit's row of a prune summary; its other scalar figures are shown as they are."""

    file: str | None = None  # the circuit file the row describes


@attrs.frozen(kw_only=True)
class PruneSummaryDocument:
    """The schema of a prune summary (``prune.pipeline``'s ``summary.json``) as the bench index reads it;
    keys it does not name are ignored."""

    kind: str | None = None
    n_circuits: int | None = None
    n_reached: int | None = None
    geomean_edges: float | None = None
    geomean_nodes: float | None = None
    tasks: list[SummaryRow] = attrs.field(factory=list)


def read_summary(path: Path) -> tuple[dict, PruneSummaryDocument] | None:
    """(the document, its record) of a prune summary; None for an unreadable file or another kind of summary
    (a bench's); one ``CircuitlabError`` naming the key when a prune summary does not fit its schema."""
    try:
        doc = read_json(path, "summary")
    except CircuitlabError as exc:
        logger.info(f"skip {path}: {exc}")
        return None
    if not isinstance(doc, dict) or doc.get("kind", PRUNE_SUMMARY_KIND) != PRUNE_SUMMARY_KIND:
        return None
    return doc, structure(doc, PruneSummaryDocument, what="prune summary", source=str(path))


def _summary_rows(folder: Path) -> dict[str, dict]:
    """{circuit file name: summary row} from ``folder/summary.json`` (the folder holding ``circuits/``)."""
    path = folder / "summary.json"
    found = read_summary(path) if path.exists() else None
    if found is None:
        return {}
    rows = found[0].get("tasks", [])
    return {Path(r["file"]).name: r for r in rows if isinstance(r.get("file"), str)}


def _cell_figures(doc: dict) -> dict:
    """The bench figures of a cell document (``cells/ID.json``), shown beside its circuit's."""
    cell, result, curves = _object(doc.get("cell")), _object(doc.get("result")), _object(doc.get("faithfulness"))
    return {"model": cell.get("model_id"), "control": cell.get("control"), "prune_seed": cell.get("seed"),
            "beats_full_model": result.get("beats_full_model"), "cpr_nodes": _object(curves.get("nodes")).get("cpr"),
            "cmd_nodes": _object(curves.get("nodes")).get("cmd")}


def _object(value) -> dict:
    """A JSON object of a cell, or {} for anything else (a damaged cell shows n/a, it does not stop the index)."""
    return value if isinstance(value, dict) else {}


def find_circuits(root: Path) -> list[Path]:
    """``circuits/*.json`` (prune, run) and ``cells/*.json`` (bench) under ``root``."""
    return sorted(p for p in root.rglob("*.json") if p.parent.name in ("circuits", "cells"))


def _slug(rel: Path) -> str:
    parts = [p for p in rel.with_suffix("").parts if p not in ("circuits", "cells")]
    return "__".join(parts).replace(" ", "_") or "circuit"


def write_bench(root: str | Path, out: str | Path, *, store: str | Path | None = None,
                config: ViewConfig | None = None, pages: bool = True) -> dict:
    """Write the index page ``out`` and (with ``pages``) one circuit page per circuit beside it."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise CircuitlabError(f"--bench {str(root)!r} is not a folder; pass a folder holding circuits/*.json files")
    files = find_circuits(root)
    if not files:
        raise CircuitlabError(f"no circuits/*.json or cells/*.json under {str(root)!r}; write some with "
                              "'circuitlab prune', 'run' or 'bench'")
    rows, columns = [], list(COLUMNS)
    page_dir = out.parent / "circuits"
    for f in files:
        try:
            circuit, cell = read_circuit_file(f)
        except DocumentError:  # a circuit that does not fit its schema: one line, not a silent gap in the index
            raise
        except CircuitlabError as exc:  # not a circuit at all
            logger.info(f"skip {f}: {exc}")
            continue
        rel = f.relative_to(root)
        extra = _cell_figures(cell) if cell is not None else _summary_rows(f.parent.parent).get(f.name)
        figures = _figures(circuit, extra)
        columns += [k for k in figures if k not in columns]
        row = {"name": str(rel.with_suffix("")), "json": os.path.relpath(f.resolve(), out.parent.resolve()),
               "figures": figures}
        if pages:
            page = page_dir / f"{_slug(rel)}.html"
            logger.info(f"page for {rel}")
            why = store_mismatch(Path(store), circuit) if store is not None else None
            if why:
                logger.info(f"{rel}: not using the store ({why})")
            data = page_data(f, store=None if why else store, config=config)
            write_bytes(page, circuit_page(data).encode())
            row["page"] = os.path.relpath(page, out.parent)
        rows.append(row)
    summaries = []
    for s in sorted(root.rglob("summary.json")):
        found = read_summary(s)
        if found is not None:
            figures = found[1]
            summaries.append({"path": str(s.relative_to(root)), "n_reached": figures.n_reached,
                              "n_circuits": figures.n_circuits, "geomean_edges": figures.geomean_edges,
                              "geomean_nodes": figures.geomean_nodes})
    write_bytes(out, bench_page(f"circuits under {root}", rows, columns, summaries).encode())
    return {"index": str(out), "circuits": len(rows), "pages": [r.get("page") for r in rows]}
