"""Circuit pages: one self-contained, offline HTML file per circuit, and an index of a bench.

``write_circuit_page`` (``circuitlab view CIRCUIT.json``) and ``write_bench`` (``circuitlab view --bench
DIR``). The data of a page is computed in ``data`` and ``ablate``; ``html`` inlines it with the
script and styles in ``static/``. Layer: above ``jobs`` (it reads circuits, runs and stores), below ``cli``.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from ..config import ViewConfig
from ..files import write_bytes
from ..prune import circuit as _circuit
from .bench import write_bench
from .data import page_data
from .html import circuit_page


def write_circuit_page(circuit: str | Path, out: str | Path, *, store: str | Path | None = None,
                       model_dir: str | Path | None = None, config: ViewConfig | None = None) -> dict:
    """Write the page of one circuit file to ``out``; returns a summary."""
    data = page_data(circuit, store=store, model_dir=model_dir, config=config)
    write_bytes(out, circuit_page(data).encode())
    return {"page": str(out), "nodes": len(data["methods"][0]["nodes"]), "methods": [m["label"] for m in data["methods"]],
            "notes": data["notes"]}


def circuit_html(circuit: dict, *, store: str | Path | None = None, model_dir: str | Path | None = None,
                 config: ViewConfig | None = None, height: int = 640) -> str:
    """The page of one circuit document (``Circuit.to_json()``) as HTML for a notebook cell.

    The page is the one ``write_circuit_page`` writes, inside an ``<iframe srcdoc>``: its styles and
    element ids stay out of the notebook's, two circuits on one notebook page do not collide, and its
    Content-Security-Policy still forbids every fetch. ``sandbox`` lets its script run and nothing else."""
    page = circuit_page(page_data(circuit, store=store, model_dir=model_dir, config=config))
    return (f'<iframe class="circuitlab-circuit" sandbox="allow-scripts" srcdoc="{escape(page, quote=True)}" '
            f'style="width: 100%; height: {int(height)}px; border: 1px solid #d0d7de; border-radius: 6px">'
            "</iframe>")


# A Circuit shown in Jupyter renders through this (prune sits below view, so view installs it).
_circuit.HTML_RENDERER = circuit_html

__all__ = ["circuit_html", "page_data", "write_bench", "write_circuit_page"]
