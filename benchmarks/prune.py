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

A/B against an earlier commit, in one run on one model:

    python benchmarks/prune.py --model DIR --pruner hardconcrete --against REV [--seeds 2] [--json]
    python benchmarks/prune.py --model DIR --against REV --patience 20   # the current code with early stopping

checks REV out into a temporary ``git worktree`` and prunes the same tasks with the code there and
with the current code, each in its own process (``PYTHONPATH`` = that tree's ``src`` and plugin
``src`` folders), one task at a time (``--jobs 1``), alternating which goes first, once per pruning
seed. It prints per circuit the seconds (the circuit's own, from ``prune_task``), nodes, train and
test loss of both and the seconds ratio; the process start-up (process wall minus its circuits'
seconds); and the checks: every circuit reaches the target (where the earlier code's does), the node
geomean within 10% of the earlier code's or smaller, the mean test loss no worse than the earlier
code's plus its spread over pruning seeds (mean over tasks of max - min), and the goal of a median
seconds per circuit at least 4x lower.
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


ROOT = Path(__file__).resolve().parents[1]
AB_KEYS = ("task", "nodes", "reached", "train_loss", "loss", "seconds")


def code_path(tree: Path) -> str:
    """PYTHONPATH for the code of a source tree: its ``src`` and every plugin's ``src``."""
    return ":".join(str(p) for p in [tree / "src", *sorted((tree / "plugins").glob("*/src"))])


def worker(args) -> int:
    """Prune with whatever circuitlab is on the path; one JSON line of rows on stdout."""
    from circuitlab.config import PruneConfig
    from circuitlab.prune.pipeline import prune_model

    settings = {"steps": args.steps} if args.steps else {}
    settings.update({"patience": args.patience} if args.patience is not None else {})
    config = PruneConfig(pruner=args.pruner, tasks=args.tasks, min_accuracy=args.min_accuracy,
                         threads=args.threads, jobs=1, seed=args.seed, **settings)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = prune_model(args.model, config, Path(tmp) / "out")
    rows = [{k: r.get(k) for k in AB_KEYS} for r in summary["tasks"]]
    print(json.dumps({"rows": rows, "wall_seconds": time.perf_counter() - t}))
    return 0


def run_side(tree: Path, args, seed: int) -> dict:
    """One worker process on the code of ``tree``; its rows, wall seconds and start-up seconds."""
    import os
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", str(args.model),
           "--pruner", args.pruner, "--min-accuracy", str(args.min_accuracy), "--threads", str(args.threads),
           "--seed", str(seed)]
    cmd += ["--tasks", args.tasks] if args.tasks else []
    cmd += ["--steps", str(args.steps)] if args.steps else []
    cmd += ["--patience", str(args.patience)] if getattr(args, "patience", None) is not None and tree == ROOT else []
    env = dict(os.environ, PYTHONPATH=code_path(tree))
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=tree)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"the prune worker on {tree} failed (exit {proc.returncode}); see its stderr above")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    doc["process_seconds"] = wall
    doc["startup_seconds"] = wall - sum(r["seconds"] for r in doc["rows"])
    return doc


def _median(xs):
    import statistics

    return statistics.median(xs) if xs else None


def ab_report(rev: str, runs: dict[str, list[dict]], speedup_goal: float = 4.0) -> dict:
    """The A/B document from each side's worker results (one per seed, seed 0 first): per-circuit rows and checks."""
    from circuitlab.prune.circuit import geomean

    first = {side: {r["task"]: r for r in docs[0]["rows"]} for side, docs in runs.items()}
    tasks = [t for t in first["old"] if t in first["new"]]
    rows = []
    for t in tasks:
        o, n = first["old"][t], first["new"][t]
        rows.append({"task": t, "old": o, "new": n,
                     "speedup": o["seconds"] / n["seconds"] if n["seconds"] > 0 else None,
                     "same_nodes": o["nodes"] == n["nodes"]})
    spreads = []
    for t in tasks:
        losses = [d["rows"][i]["loss"] for d in runs["old"] for i, r in enumerate(d["rows"]) if r["task"] == t]
        if len(losses) > 1:
            spreads.append(max(losses) - min(losses))
    old_sec, new_sec = [r["old"]["seconds"] for r in rows], [r["new"]["seconds"] for r in rows]
    med_old, med_new = _median(old_sec), _median(new_sec)
    speedup = med_old / med_new if rows and med_new else None
    # Over every task both sides pruned; a circuit that misses the target counts with its size (the whole model).
    g_old = geomean(r["old"]["nodes"] for r in rows)
    g_new = geomean(r["new"]["nodes"] for r in rows)
    loss_old = sum(r["old"]["loss"] for r in rows) / len(rows) if rows else None
    loss_new = sum(r["new"]["loss"] for r in rows) / len(rows) if rows else None
    spread = sum(spreads) / len(spreads) if spreads else None
    checks = {
        "reached": all(r["new"]["reached"] or not r["old"]["reached"] for r in rows),
        "geomean_nodes_within_10pct": None if g_old is None or g_new is None else g_new <= 1.10 * g_old,
        "test_loss_within_seed_spread": None if spread is None else loss_new <= loss_old + spread,
        "median_speedup_goal": None if speedup is None else speedup >= speedup_goal,
    }
    return {"against": rev, "tasks": rows, "median_seconds_old": med_old, "median_seconds_new": med_new,
            "median_speedup": speedup, "speedup_goal": speedup_goal, "geomean_nodes_old": g_old,
            "geomean_nodes_new": g_new, "mean_test_loss_old": loss_old, "mean_test_loss_new": loss_new,
            "seed_spread": spread, "seeds": len(runs["old"]), "identical_circuits": all(r["same_nodes"] for r in rows),
            "startup_seconds_old": _median([d["startup_seconds"] for d in runs["old"]]),
            "startup_seconds_new": _median([d["startup_seconds"] for d in runs["new"]]),
            "checks": checks}


def print_ab(doc: dict) -> None:
    def yes(v):
        return "n/a" if v is None else ("met" if v else "NOT met")

    print(f"A/B against {doc['against']} ({doc['seeds']} pruning seed(s); rows: seed 0)")
    print(f"{'task':<28} {'s old':>7} {'s new':>7} {'ratio':>6} {'nodes':>11} {'train loss':>15} {'test loss':>15}")
    for r in doc["tasks"]:
        o, n = r["old"], r["new"]
        ratio = f"{r['speedup']:.2f}" if r["speedup"] else "-"
        print(f"{r['task']:<28} {o['seconds']:>7.1f} {n['seconds']:>7.1f} {ratio:>6} {o['nodes']:>5}/{n['nodes']:<5} "
              f"{o['train_loss']:>7.4f}/{n['train_loss']:<7.4f} {o['loss']:>7.4f}/{n['loss']:<7.4f}"
              + ("" if n["reached"] else "  NOT reached"))
    c = doc["checks"]
    med = (f"{doc['median_seconds_old']:.1f} s -> {doc['median_seconds_new']:.1f} s, "
           f"{doc['median_speedup']:.2f}x" if doc["median_speedup"] else "n/a")
    print(f"median seconds per circuit: {med} (goal >= {doc['speedup_goal']:g}x lower: {yes(c['median_speedup_goal'])})")
    print(f"process start-up (median): {doc['startup_seconds_old']:.1f} s old, {doc['startup_seconds_new']:.1f} s new")
    print(f"every circuit reaches the target where the old code's does: {yes(c['reached'])}")
    def g(v):
        return "n/a" if v is None else f"{v:.1f}"

    print(f"node geomean {g(doc['geomean_nodes_old'])} -> {g(doc['geomean_nodes_new'])} "
          f"(within 10% or smaller: {yes(c['geomean_nodes_within_10pct'])})")
    spread = "n/a (one seed)" if doc["seed_spread"] is None else f"{doc['seed_spread']:.4f}"
    if doc["mean_test_loss_old"] is not None:
        print(f"mean test loss {doc['mean_test_loss_old']:.4f} -> {doc['mean_test_loss_new']:.4f}, seed spread {spread} "
              f"(no worse than the spread: {yes(c['test_loss_within_seed_spread'])})")
    print(f"identical circuits (same node counts): {doc['identical_circuits']}")


def against(args) -> int:
    """Check REV out into a temporary worktree and run both sides, alternating."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="circuitlab-ab-") as tmp:
        tree = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.against],
                       check=True)
        try:
            sides = {"old": tree, "new": ROOT}
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for seed in range(args.seeds):
                order = ["old", "new"] if seed % 2 == 0 else ["new", "old"]
                for side in order:
                    print(f"seed {seed}: pruning with the {side} code", file=sys.stderr, flush=True)
                    runs[side].append(run_side(sides[side], args, seed))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    doc = ab_report(args.against, runs)
    doc.update(model=str(args.model), pruner=args.pruner, patience=args.patience, runs=runs)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_ab(doc)
    return 0


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
    ap.add_argument("--against", metavar="REV", help="A/B: also prune with the code at this git revision")
    ap.add_argument("--seeds", type=int, default=2, help="A/B: pruning seeds per side (the test-loss spread)")
    ap.add_argument("--steps", type=int, default=None, help="mask training steps (default: the pruner's)")
    ap.add_argument("--patience", type=int, default=None,
                    help="A/B: mask early stopping for the current code only (PruneConfig.patience)")
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.against:
        if args.seeds < 1:
            ap.error("--seeds must be at least 1")
        if args.model is None:
            from circuitlab.config import TrainConfig
            from circuitlab.train import ensure_model

            args.model, _ = ensure_model(TrainConfig.for_preset("small", sparsity="topk"))
        return against(args)

    import attrs

    from circuitlab.config import PruneConfig, TrainConfig
    from circuitlab.prune.pipeline import prune_model
    from circuitlab.train import ensure_model

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
