"""The client's writes into the activation stores: one zarr store per model, one method result per cell.

Only the client process calls this, so a store never has two writers. Each store is recorded on first
use (``circuitlab.store.ensure_store``: the bench's tasks, 16 test pairs each, 64 corpus windows), and
each finished cell's circuit is added through ``add_circuit`` under the cell's method label
(``hardconcrete.s0``, ``hardconcrete.nonsense.s0``...). ``stored.json`` lists the cells already added,
so a resumed bench adds each circuit once; a result left by an interrupted add is replaced.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import RecordConfig
from ..files import write_json
from ..log import logger
from .spec import BenchSpec

LEDGER = "stored.json"


def store_path(out: Path, model_id: str) -> Path:
    return out / "stores" / f"{model_id}.zarr"


def record_config(spec: BenchSpec) -> RecordConfig:
    """A light recording: the bench's tasks (one suite: by name; several: every task), test split only."""
    suites = {t.partition(":")[0] for t in spec.tasks}
    if len(suites) == 1:
        tasks = f"{suites.pop()}:{','.join(t.partition(':')[2] for t in spec.tasks)}"
    else:
        tasks = "all"
    return RecordConfig(tasks=tasks, pairs=16, splits=("test",), corpus_windows=64)


class StoreWriter:
    def __init__(self, spec: BenchSpec, out: Path):
        self.spec, self.out = spec, out
        self.ledger_path = out / LEDGER
        try:
            self.ledger: dict[str, str] = json.loads(self.ledger_path.read_text())
        except (FileNotFoundError, ValueError):
            self.ledger = {}

    def append(self, doc: dict, model_doc: dict) -> None:
        """Add a finished cell's circuit to its model's store (once)."""
        from ..store import add_circuit, ensure_store
        from ..train.runs import read_run

        if doc["status"] != "done" or doc["cell_id"] in self.ledger or "circuit" not in doc:
            return
        info = read_run(model_doc["run"])
        path = store_path(self.out, model_doc["model_id"])
        ensure_store(path, info, note=logger.info, config=record_config(self.spec))
        add_circuit(path, doc["circuit"], doc["method_label"],  # keyed by the circuit's suite:task run=info, overwrite=True,
                    provenance={"bench_cell": doc["cell_id"], "bench_spec": self.spec.source})
        self.ledger[doc["cell_id"]] = str(path.relative_to(self.out))
        write_json(self.ledger_path, self.ledger)
