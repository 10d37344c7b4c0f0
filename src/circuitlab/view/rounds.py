"""Pages of the documents ``circuitlab backups`` and ``prune --checkpoints`` write: their table and plot.

``circuitlab view backups.json --out page.html`` (or ``track.json``) writes one offline page: the
document's rows as a table (every value through the template's autoescaping) and the plot written
beside it (``backups.png``, ``track.png``) inlined as a ``data:`` image, which the page's policy allows
and nothing else. The page has no script.
"""

from __future__ import annotations

import base64
from pathlib import Path

from ..errors import CircuitlabError
from ..files import MAX_DOCUMENT_BYTES, read_json, read_regular, write_bytes
from ..prune.backups import BACKUPS_KIND
from ..prune.track import TRACK_KIND
from .html import _cell, render

# kind -> (key of the rows, plot beside the document, columns shown)
ROUND_DOCUMENTS = {
    BACKUPS_KIND: ("rounds", "backups.png", (
        "round", "reached", "size_min", "size_median", "size_max", "loss_mean", "train_loss_mean",
        "full_model_loss", "core", "jaccard_mean", "excluded", "excluded_frequency", "seconds")),
    TRACK_KIND: ("rows", "track.png", (
        "task", "step", "val_loss", "full_model_accuracy", "full_model_loss", "nodes", "edges", "loss",
        "reached", "jaccard_final")),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_round_document(path: str | Path) -> bool:
    """Whether ``path`` is a ``backups.json`` or ``track.json`` document (read by its ``kind``); anything
    unreadable is left to the circuit reader, whose errors name a circuit file."""
    try:
        doc = read_json(path, "document")
    except CircuitlabError:
        return False
    return isinstance(doc, dict) and doc.get("kind") in ROUND_DOCUMENTS


def _summary(doc: dict) -> list[str]:
    if doc["kind"] == BACKUPS_KIND:
        depth = doc.get("depth")
        lines = [f"task {doc.get('task')}, {doc.get('seeds')} seeds per round, target {doc.get('target_loss')}",
                 f"backup depth: {depth}" if depth is not None else f"backup depth: at least {doc.get('depth_at_least')}"]
        if doc.get("model_misses_round") is not None:
            lines.append(f"the whole model, excluded nodes ablated, misses the target from round {doc['model_misses_round']}")
        return lines
    return [f"model {doc.get('model')}, checkpoints at steps {doc.get('steps')}, target {doc.get('target_loss')}"]


def write_round_page(path: str | Path, out: str | Path) -> dict:
    """Write the page of a ``backups.json`` or ``track.json`` document to ``out``; returns a summary."""
    path = Path(path)
    doc = read_json(path, "document")
    if not isinstance(doc, dict) or doc.get("kind") not in ROUND_DOCUMENTS:
        raise CircuitlabError(f"{str(path)!r} is not a backups.json or track.json document")
    key, image, columns = ROUND_DOCUMENTS[doc["kind"]]
    rows = doc.get(key)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CircuitlabError(f"{str(path)!r}: {key!r} must be a list of rows; write it again with circuitlab")
    png = read_regular(path.parent / image, MAX_DOCUMENT_BYTES) if (path.parent / image).is_file() else None
    plot = "data:image/png;base64," + base64.b64encode(png).decode() if png and png.startswith(PNG_MAGIC) else None
    title = f"{'backups' if key == 'rounds' else 'circuits over training'}: {path}"
    html = render("rounds.html", title=title, notes=_summary(doc), header=list(columns), plot=plot,
                  rows=[[_cell(r.get(c)) for c in columns] for r in rows])
    write_bytes(out, html.encode())
    return {"page": str(out), "kind": doc["kind"], "rows": len(rows), "plot": plot is not None}
