"""The client side of ``circuitlab bench SPEC --out DIR``: Dask tasks for models and cells.

Models are submitted first; as each finishes (trained or reused, tasks evaluated), the cells of the
tasks it solves are submitted. Workers write each result file atomically; the client (this process)
alone appends circuits to the activation stores and rewrites ``results.csv``, so there is never more
than one zarr writer. A finished cell (its file exists) is never recomputed: a killed bench rerun with
the same command picks up where it stopped. A worker that dies mid-cell has its cell rescheduled by
the Dask scheduler; ``bench.retries`` re-runs a cell that raised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..errors import CircuitlabError
from ..files import write_json
from ..log import logger
from ..outputs import folder_lock
from .documents import CellDocument
from .plan import Cell, ModelSpec, cells_for, model_specs
from .spec import BenchSpec
from .storing import StoreWriter
from .table import MODELS, RESULTS, TABLE_CIRCUIT_KEYS, cell_row, write_models, write_table
from .work import cell_path, model_cache_dir, prepare_model, read_done, run_cell

SUMMARY_KIND = "circuitlab-bench-summary"


def default_workers(spec: BenchSpec) -> int:
    return max(1, (os.cpu_count() or 1) // spec.threads)


def local_cluster(workers: int):
    """A LocalCluster of ``workers`` processes with one thread each, without Dask's malloc setting.

    Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it also fixes glibc's mmap
    threshold at 128 KiB, so every mid-sized torch tensor is mmapped and unmapped again: pruning ran
    3-4x slower in a worker than in one process (2M page faults per cell instead of 15k, measured with
    benchmarks/bench_overhead.py). A value the user set in the environment still wins."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            silence_logs=logging.ERROR)


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None):
    """A client of the cluster at ``scheduler``, or of a new LocalCluster of ``workers`` processes."""
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise CircuitlabError(f"--scheduler {scheduler}: cannot connect ({exc}); start the scheduler first "
                                  "or drop --scheduler to use a local cluster") from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = local_cluster(workers)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class Bench:
    """State of one bench run on the client: model files, cell results, failures."""

    def __init__(self, spec: BenchSpec, out: Path):
        self.spec, self.out = spec, out
        self.models = {m.model_id: m for m in model_specs(spec)}
        self.model_docs: dict[str, dict] = {}
        self.cells: dict[str, dict] = {}  # cell id -> result document
        self.known: set[str] = set()  # every cell id submitted or found done
        self.failures: list[tuple[str, str]] = []
        self.store = StoreWriter(spec, out)
        self.reused = self.computed = 0
        self.t0 = time.perf_counter()

    def new_cells(self, model_id: str) -> list[tuple[Cell, dict]]:
        """Cells that can start now that ``model_id`` is ready (its own, or its init twin's)."""
        ready = []
        for m in self.models.values():
            if m.model_id not in self.model_docs:
                continue
            if m.kind == "init":
                twin = self.model_docs.get(m.twin)
                if twin is None or model_id not in (m.model_id, m.twin):
                    continue
                cells = cells_for(self.spec, m, [], twin["solved"])
            elif m.model_id == model_id:
                cells = cells_for(self.spec, m, self.model_docs[model_id]["solved"])
            else:
                continue
            ready += [(c, self.model_docs[m.model_id]) for c in cells if c.cell_id not in self.known]
        return ready

    def finish_cell(self, doc: dict, fresh: bool) -> None:
        model_doc = self.model_docs[doc["model"]["model_id"]]
        self.store.append(doc, model_doc)
        self.cells[doc["cell_id"]] = _table_part(doc)
        self.computed += fresh
        self.reused += not fresh
        self.write_table()
        if fresh:
            left = len(self.known) - len(self.cells) - len(self.failures)
            models_left = len(self.models) - len(self.model_docs)
            r = doc.get("result") or {}
            what = (f"{r['nodes']} nodes, {r['edges']} edges, test loss {r['loss']:.3f}"
                    if doc["status"] == "done" else f"skipped: {doc.get('reason')}")
            # Cells of models not yet ready are not known yet: while models_left > 0, "queued" is not all that is left.
            more = f", {models_left} models not ready (their cells come after)" if models_left else ""
            logger.info(f"[{len(self.cells)} cells done, {left} queued{more}] "
                        f"{doc['cell_id']}: {what} ({doc['seconds']:.1f}s)")

    def write_table(self) -> None:
        rows = [cell_row(d, str(cell_path(self.out, _cell_of(d)).relative_to(self.out))) for d in self.cells.values()]
        write_table(self.out / RESULTS, rows)

    def summary(self) -> dict[str, Any]:
        docs = list(self.cells.values())
        return {"kind": SUMMARY_KIND, "spec": self.spec.source, "spec_hash": self.spec.spec_hash,
                "out": str(self.out), "results": str(self.out / RESULTS), "models": len(self.model_docs),
                "models_planned": len(self.models), "cells": len(docs),
                "done": sum(d["status"] == "done" for d in docs),
                "skipped": sum(d["status"] == "skipped" for d in docs),
                "computed_now": self.computed, "reused": self.reused,
                "failed": [{"task": k, "error": e} for k, e in self.failures],
                "seconds": time.perf_counter() - self.t0}


def _table_part(doc: dict) -> dict:
    """What ``cell_row`` reads of a cell document: all but the circuit's scores, edges and provenance,
    which are large and stay in the cell file (the table keeps the kept node names and the bisection)."""
    part = {k: v for k, v in doc.items() if k != "circuit"}
    if "circuit" in doc:
        part["circuit"] = {k: doc["circuit"][k] for k in TABLE_CIRCUIT_KEYS if k in doc["circuit"]}
    return part


def _cell_of(doc: dict) -> Cell:
    return Cell(**doc["cell"])


def _submit_cells(client, bench: Bench, ac, kinds: dict, model_id: str) -> None:
    for cell, model_doc in bench.new_cells(model_id):
        bench.known.add(cell.cell_id)
        done = read_done(cell_path(bench.out, cell), CellDocument)
        if done is not None:
            bench.finish_cell(done.to_json(), fresh=False)
            continue
        f = client.submit(run_cell, cell, model_doc, bench.spec, str(bench.out), key=f"cell-{cell.cell_id}",
                          pure=False, retries=bench.spec.retries)
        kinds[f.key] = ("cell", cell.cell_id)
        ac.add(f)


def run_bench(spec: BenchSpec, out: str | Path, *, workers: int | None = None,
              scheduler: str | None = None) -> dict[str, Any]:
    """Run every model and cell of ``spec`` into ``out`` (resumable); returns the summary document.

    One client per folder: while this runs, another ``run_bench`` on ``out`` is refused with one line naming
    this process (``circuitlab.outputs.folder_lock``); the lock of a client that died is taken over."""
    out = Path(out)
    with folder_lock(out, "circuitlab bench"):  # one client per folder: a second one is refused
        return _run_bench(spec, out, workers, scheduler)


def _run_bench(spec: BenchSpec, out: Path, workers: int | None, scheduler: str | None) -> dict[str, Any]:
    from distributed import as_completed

    write_json(out / "spec.json", spec.to_dict())
    bench = Bench(spec, out)
    n = workers or default_workers(spec)
    logger.info(f"bench {spec.name}: {len(bench.models)} models; "
                f"{'scheduler ' + scheduler if scheduler else f'{n} local Dask worker processes'}; results in {out}")
    to_train = [m for m in bench.models.values()
                if m.kind != "init" and not (model_cache_dir(m) / "model.safetensors").exists()]
    if to_train:  # otherwise the first progress line comes only when the first model is ready
        logger.info(f"training {len(to_train)} models first (minutes each; --dry-run estimates them); "
                    "a model's cells start as soon as it is ready")
    with dask_client(n, scheduler) as client:
        ac = as_completed()
        kinds: dict[str, tuple[str, str]] = {}
        for m in bench.models.values():
            f = client.submit(prepare_model, m, spec, str(out), key=f"model-{m.model_id}-{m.config_hash}",
                              pure=False, retries=spec.retries)
            kinds[f.key] = ("model", m.model_id)
            ac.add(f)
        for fut in ac:
            kind, ident = kinds[fut.key]
            try:
                doc = fut.result()
            except Exception as exc:  # a cell or model that failed every retry; the others go on
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                bench.failures.append((ident, f"{type(exc).__name__}: {msg}"))
                logger.warning(f"{kind} {ident} failed: {type(exc).__name__}: {msg}")
                continue
            finally:
                fut.release()
            if kind == "model":
                bench.model_docs[ident] = doc
                write_models(out / MODELS, bench.model_docs.values(), spec.prune.min_accuracy)
                _log_model(doc, bench.models[ident])
                _submit_cells(client, bench, ac, kinds, ident)
            else:
                bench.finish_cell(doc, fresh=True)
    bench.write_table()
    summary = bench.summary()
    write_json(out / "summary.json", summary)
    if bench.failures:
        ident, err = bench.failures[0]
        raise CircuitlabError(f"{len(bench.failures)} bench task(s) failed (first: {ident}: {err}); results of the "
                              f"others are in {out / RESULTS}; rerun the same command to retry the failed ones")
    return summary


def _log_model(doc: dict, model: ModelSpec) -> None:
    how = "reused" if doc["reused"] else f"trained in {doc['train_seconds']:.0f}s"
    solved = len(doc["solved"])
    vl = doc.get("val_loss")
    logger.info(f"model {model.model_id} ({how}): val loss {vl:.3f}, solves {solved}/{len(doc['tasks'])} tasks"
                if vl is not None else f"model {model.model_id} ({how}): solves {solved} tasks")
