"""Benchmark: seconds per circuit and peak RSS when pruning a `small` preset model.

    python benchmarks/prune.py                          # train (or reuse) small/topk, prune solved tasks
    python benchmarks/prune.py --model DIR --pruner hardconcrete --tasks python:var_if,indent_for
    python benchmarks/prune.py --all-pruners --min-accuracy 0
    python benchmarks/prune.py --model DIR --pruner hardconcrete --compare-jobs 1   # also one process

Goals: every task the model solves pruned in <= 60 s in total on 2 cores, no single
circuit over 30 s, circuits no larger than one process's (the geomean within 10%). Tasks are pruned
side by side in ``--jobs`` worker processes (default: one per core). Output: one line per circuit
(stdout), then per pruner the total wall seconds, the seconds per circuit and their maximum, each
against its goal, and the peak RSS of this process (workers not included). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run folder; default: the small/topk model of `circuitlab run` (trained if missing)")
    ap.add_argument("--pruner", default="heaviside")
    ap.add_argument("--all-pruners", action="store_true", help="benchmark heaviside, hardconcrete and sigmoid")
    ap.add_argument("--tasks", default=None, help="SUITE or SUITE:task,task (default: every task)")
    ap.add_argument("--min-accuracy", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core)")
    ap.add_argument("--compare-jobs", type=int, default=None,
                    help="also prune with this many workers and compare circuits and wall time")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args(argv)

    import attrs

    from circuitlab.config import PruneConfig, TrainConfig
    from circuitlab.jobs import ensure_model
    from circuitlab.prune.pipeline import prune_model

    model = args.model
    if model is None:
        model, _ = ensure_model(TrainConfig.for_preset("small", sparsity="topk"))
    pruners = ["heaviside", "hardconcrete", "sigmoid"] if args.all_pruners else [args.pruner]
    results = []
    t0 = time.perf_counter()
    other = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in pruners:
            config = PruneConfig(pruner=pruner, tasks=args.tasks, min_accuracy=args.min_accuracy,
                                 threads=args.threads, jobs=args.jobs)  # every other setting: the defaults
            t = time.perf_counter()
            summary = prune_model(model, config, Path(tmp) / pruner)
            summary["wall_seconds"] = time.perf_counter() - t
            results.append(summary)
            if args.compare_jobs is not None:
                t = time.perf_counter()
                alt = prune_model(model, attrs.evolve(config, jobs=args.compare_jobs), Path(tmp) / f"{pruner}-alt")
                same = [json.loads(Path(a["file"]).read_text())["nodes"] == json.loads(Path(b["file"]).read_text())["nodes"]
                        for a, b in zip(summary["tasks"], alt["tasks"], strict=True)]
                other[pruner] = {"jobs": args.compare_jobs, "wall_seconds": time.perf_counter() - t,
                                 "geomean_nodes": alt["geomean_nodes"], "same_circuits": all(same)}
    total = time.perf_counter() - t0
    doc = {"model": str(model), "threads": args.threads, "peak_rss_mib": peak_rss_mib(), "total_seconds": total,
           "jobs": args.jobs, "compared": other,
           "pruners": {s["pruner"]: {"wall_seconds": s["wall_seconds"], "seconds_per_circuit": (sum(r["seconds"] for r in s["tasks"]) / len(s["tasks"])
                                                             if s["tasks"] else None),
                                     "max_seconds": max((r["seconds"] for r in s["tasks"]), default=None),
                                     "geomean_nodes": s["geomean_nodes"], "geomean_edges": s["geomean_edges"],
                                     "tasks": [{k: r[k] for k in ("task", "nodes", "edges", "loss", "reached",
                                                                  "seconds")} for r in s["tasks"]]}
                       for s in results}}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"model: {model}  threads: {args.threads}  jobs: {args.jobs or 'one per core'}")
    print(f"{'pruner':<13} {'task':<28} {'nodes':>6} {'edges':>7} {'loss':>7} {'reached':>7} {'seconds':>8}")
    for name, p in doc["pruners"].items():
        for r in p["tasks"]:
            print(f"{name:<13} {r['task']:<28} {r['nodes']:>6} {r['edges']:>7} {r['loss']:>7.4f} "
                  f"{'yes' if r['reached'] else 'NO':>7} {r['seconds']:>8.1f}")
    for name, p in doc["pruners"].items():
        spc = p["seconds_per_circuit"]
        print(f"{name}: {len(p['tasks'])} circuits in {p['wall_seconds']:.1f} s wall "
              f"(goal <= 60 s: {'met' if p['wall_seconds'] <= 60 else 'NOT met'}), "
              + (f"{spc:.1f} s per circuit, max {p['max_seconds']:.1f} s (goal <= 30 s: "
                 f"{'met' if p['max_seconds'] <= 30 else 'NOT met'})" if spc is not None else "no circuits"))
        if name in other:
            o = other[name]
            print(f"  with --jobs {o['jobs']}: {o['wall_seconds']:.1f} s wall, geomean nodes {o['geomean_nodes']}, "
                  f"same circuits: {o['same_circuits']}")
    print(f"peak RSS: {doc['peak_rss_mib']:.0f} MiB   total: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
