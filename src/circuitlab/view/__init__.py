"""Circuit pages: one self-contained, offline HTML file per circuit, and an index of a bench.

``write_circuit_page`` (``circuitlab view CIRCUIT.json``) and ``write_bench`` (``circuitlab view --bench
DIR``). The data of a page is computed in ``data`` and ``ablate``; ``html`` inlines it with the
script and styles in ``static/``. Layer: above ``jobs`` (it reads circuits, runs and stores), below ``cli``.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ViewConfig
from ..files import write_bytes
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


__all__ = ["page_data", "write_bench", "write_circuit_page"]
