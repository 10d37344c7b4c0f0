"""Where a circuit's seconds go: forward passes, prompts, tokens and seconds per phase of pruning.

    python benchmarks/prune_profile.py --model DIR --pruner hardconcrete --tasks python:else_elif [--patience N]

Prunes in this process (``--jobs 1``) and counts every masked forward pass of the evaluator by the
phase it serves: ``setup`` (reference logits), ``mask`` (mask training; its backward passes are the
rest of the phase's wall seconds), ``bisection`` and ``validations`` (test loss, sufficiency,
necessity, random circuits). Tokens are padded tokens (rows x their chunk's longest row; a packed row
holds both prompts of a pair, their shared prefix once).
``imports`` is this script's own imports (torch is imported later, lazily); the seconds of pruning
outside the circuits' own seconds are model loading, task pairs, full-model checks and node means. Seconds depend on
the machine's load; the counts do not.

``--compile`` measures ``torch.compile`` (dynamic shapes, inductor) of the model's masked pass, which
the library does not use, in the mask steps only: the first mask training includes compiling it, and
the later ones run the compiled code (recompiled where a shape or hook differs).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="run folder")
    ap.add_argument("--pruner", default="hardconcrete")
    ap.add_argument("--tasks", default="python:else_elif")
    ap.add_argument("--min-accuracy", type=float, default=0.0)
    ap.add_argument("--patience", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model's masked pass (a measurement)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from circuitlab.config import PruneConfig
    from circuitlab.prune import circuit, evaluator, search
    from circuitlab.prune.pipeline import prune_model

    phase = ["setup"]
    counts: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: {"passes": 0, "prompts": 0, "tokens": 0, "forward_seconds": 0.0, "wall_seconds": 0.0})
    chunk = evaluator.Evaluator._chunk
    packed_chunk = getattr(evaluator.Evaluator, "_packed_chunk", None)  # absent in earlier code

    def count(n_prompts, tokens, t):
        c = counts[phase[0]]
        c["passes"] += 1
        c["prompts"] += n_prompts
        c["tokens"] += tokens
        c["forward_seconds"] += time.perf_counter() - t

    def counted_chunk(self, gate, rows, record_scale, *dtype):
        t = time.perf_counter()
        out = chunk(self, gate, rows, record_scale, *dtype)
        count(len(rows), len(rows) * (int(self.batch.last[rows].max()) + 1), t)
        return out

    def counted_packed_chunk(self, gate, pairs, record_scale, *dtype):
        t = time.perf_counter()
        out = packed_chunk(self, gate, pairs, record_scale, *dtype)
        count(2 * len(pairs), len(pairs) * int(self.packed.length[pairs].max()), t)
        return out

    def in_phase(module, name, label):
        f = getattr(module, name)

        def wrapped(*a, **k):
            before, phase[0] = phase[0], label
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                counts[label]["wall_seconds"] += time.perf_counter() - t
                phase[0] = before

        setattr(module, name, wrapped)

    evaluator.Evaluator._chunk = counted_chunk
    if packed_chunk is not None:
        evaluator.Evaluator._packed_chunk = counted_packed_chunk
    if args.compile:
        train_mask = search.train_mask

        def compiled_train_mask(train_eval, *a, **k):
            import torch

            model = train_eval.model
            if not hasattr(model, "_profile_compiled"):  # one compiled function per model, as a library would keep
                model._profile_compiled = torch.compile(model.last_logits, dynamic=True)
            model.last_logits = model._profile_compiled  # the mask steps only
            try:
                return train_mask(train_eval, *a, **k)
            finally:
                del model.last_logits  # the class's method again

        search.train_mask = compiled_train_mask
    in_phase(search, "train_mask", "mask")
    in_phase(search, "search_k", "bisection")
    in_phase(circuit, "_validations", "validations")
    # --patience only when set, so that the script also profiles earlier code (PYTHONPATH=<its src>)
    config = PruneConfig(pruner=args.pruner, tasks=args.tasks, min_accuracy=args.min_accuracy, jobs=1, seed=args.seed,
                         **({"patience": args.patience} if args.patience else {}))
    startup = time.perf_counter() - T_START
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = prune_model(args.model, config, Path(tmp) / "out")
        circuits = [json.loads(Path(r["file"]).read_text()) for r in summary["tasks"]]
    doc = {"model": args.model, "pruner": args.pruner, "patience": args.patience, "seed": args.seed, "compile": args.compile,
           "startup_seconds": startup,
           "prune_seconds": time.perf_counter() - t, "phases": dict(counts),
           "circuits": [{"task": c["task"], "nodes": c["node_count"], "reached": c["reached"], "loss": c["loss"],
                         "seconds": c["seconds"], "evaluations": len(c["bisection"]),
                         "attempts": c["provenance"]["attempts"]} for c in circuits]}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    outside = doc["prune_seconds"] - sum(c["seconds"] for c in doc["circuits"])
    print(f"imports {startup:.1f} s; pruning {doc['prune_seconds']:.1f} s, of which {outside:.1f} s outside the circuits "
          f"(model loading, task pairs and full-model checks, node means)")
    for c in doc["circuits"]:
        steps = sum(a.get("steps_run", a["steps"]) for a in c["attempts"] if a["lr"] is not None)
        print(f"{c['task']}: {c['nodes']} nodes, reached {c['reached']}, test loss {c['loss']:.4f}, {c['seconds']:.1f} s, "
              f"{len(c['attempts'])} attempt(s), {steps} mask steps, {c['evaluations']} bisection evaluations")
    print(f"{'phase':<12} {'passes':>7} {'prompts':>8} {'tokens':>10} {'forward s':>10} {'wall s':>8}")
    for name, c in doc["phases"].items():
        print(f"{name:<12} {c['passes']:>7} {c['prompts']:>8} {c['tokens']:>10} {c['forward_seconds']:>10.2f} "
              f"{c['wall_seconds']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
