"""Dask scheduling overhead of `circuitlab bench`, per cell, against the same cells run in one process.

    python benchmarks/bench_overhead.py [--spec benchmarks/quick.toml] [--cells 6] [--workers 1]

Trains (or reuses, from the cache) the spec's first model, then runs its first N cells twice into
fresh folders: once by calling the worker function in this process, once as Dask tasks on a
LocalCluster of --workers processes (one thread each). Prints the cluster start-up time, the seconds
per cell both ways, and the difference per cell (scheduling, pickling, result transfer, worker
imports). With --workers 1 the two runs do the same work on one core, so the difference is overhead.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(Path(__file__).with_name("quick.toml")))
    ap.add_argument("--cells", type=int, default=6)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    from distributed import Client, wait

    from circuitlab.bench.plan import cells_for, model_specs
    from circuitlab.bench.runner import local_cluster
    from circuitlab.bench.spec import load_spec
    from circuitlab.bench.work import prepare_model, run_cell

    spec = load_spec(args.spec)
    model = model_specs(spec)[0]
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        doc = prepare_model(model, spec, str(Path(tmp) / "prep"))
        cells = cells_for(spec, model, doc["solved"])[: args.cells]
        if not cells:
            raise SystemExit(f"model {model.model_id} solves no task of {args.spec}; nothing to time")

        t0 = time.perf_counter()
        inside_inproc = [run_cell(cell, doc, spec, str(Path(tmp) / "inproc"))["seconds"] for cell in cells]
        inproc = time.perf_counter() - t0

        t0 = time.perf_counter()
        cluster = local_cluster(args.workers)  # what `circuitlab bench` starts
        client = Client(cluster)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        futures = [client.submit(run_cell, c, doc, spec, str(Path(tmp) / "dask"), key=f"cell-{c.cell_id}", pure=False)
                   for c in cells]
        wait(futures)
        inside_dask = [f.result()["seconds"] for f in futures]
        on_dask = time.perf_counter() - t0
        client.close()
        cluster.close()

    n = len(cells)
    print(f"{n} cells of {model.model_id} ({os.cpu_count()} CPUs, {args.workers} Dask worker(s), "
          f"{spec.threads} thread(s) per cell)")
    print(f"LocalCluster start-up: {startup:.2f} s (once per bench)")
    print(f"in one process: {inproc:.2f} s ({inproc / n:.2f} s per cell; first cell {inside_inproc[0]:.2f} s, "
          f"the others {sum(inside_inproc[1:]) / max(n - 1, 1):.2f} s each)")
    print(f"as Dask tasks:  {on_dask:.2f} s ({on_dask / n:.2f} s per cell; first cell {inside_dask[0]:.2f} s inside "
          f"its worker, the others {sum(inside_dask[1:]) / max(n - 1, 1):.2f} s each)")
    if args.workers == 1:
        print(f"overhead per cell, all in: {(on_dask - inproc) / n:+.2f} s; scheduling and transfer alone (wall "
              f"minus the time inside the cells): {(on_dask - sum(inside_dask)) / n:+.3f} s")
    else:
        print(f"speed-up over one process: {inproc / on_dask:.2f}x on {args.workers} workers")


if __name__ == "__main__":
    main()
