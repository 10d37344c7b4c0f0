"""Benchmark: cost of a topk-sparse training step relative to a dense one, throughput and peak RSS.

For each preset shape (small, ref) it builds the model, then alternates blocks of dense steps and
topk steps (at the target density, i.e. after the anneal) in the same process, and prints:
- sparse/dense step-time ratio (goal: at most 1.05),
- tokens per second of each,
- peak resident memory of the process.
Run it alone: other load on the 2 cores distorts the timings.

    python benchmarks/train_step.py [--presets small,ref] [--steps 12] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import attrs
import torch

from circuitlab import plugins
from circuitlab.config import TrainConfig, get_preset
from circuitlab.model import GPT
from circuitlab.train import make_optimizer, train_step


def bench(preset_name: str, steps: int, blocks: int) -> dict:
    preset = get_preset(preset_name)
    mcfg = preset.model
    device = torch.device("cpu")
    timings: dict[str, list[float]] = {"dense": [], "topk": []}
    models = {}
    for name in timings:
        torch.manual_seed(0)
        cfg = attrs.evolve(TrainConfig(), preset=preset_name, sparsity=name, steps=10,
                           density=1.0 if name == "dense" else 0.0625, batch_size=preset.batch_size)
        model = GPT(mcfg)
        schedule = plugins.get("sparsity", name).factory(cfg)
        models[name] = (model, make_optimizer(model, cfg), schedule)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, mcfg.vocab_size, (preset.batch_size, mcfg.n_ctx), generator=g)
    y = torch.randint(0, mcfg.vocab_size, (preset.batch_size, mcfg.n_ctx), generator=g)
    for model, opt, schedule in models.values():  # warm-up; step 9 of 10 is past the anneal
        for _ in range(2):
            train_step(model, model, opt, schedule, x, y, 9, device)
    for _ in range(blocks):  # alternate so that drift in machine speed hits both alike
        for name, (model, opt, schedule) in models.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                train_step(model, model, opt, schedule, x, y, 9, device)
                timings[name].append(time.perf_counter() - t0)
    dense, topk = statistics.median(timings["dense"]), statistics.median(timings["topk"])
    tokens = preset.batch_size * mcfg.n_ctx
    return {
        "preset": preset_name,
        "shape": f"d{mcfg.d_model} L{mcfg.n_layer} h{mcfg.n_head}x{mcfg.d_head} mlp{mcfg.d_mlp} ctx{mcfg.n_ctx} batch{preset.batch_size}",
        "params": sum(p.numel() for p in models["dense"][0].parameters()),
        "dense_step_s": dense,
        "topk_step_s": topk,
        "topk_over_dense": topk / dense,
        "dense_tokens_per_s": tokens / dense,
        "topk_tokens_per_s": tokens / topk,
        "steps_timed_each": len(timings["dense"]),
        "goal_met": topk / dense <= 1.05,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,ref")
    parser.add_argument("--steps", type=int, default=6, help="steps per block")
    parser.add_argument("--blocks", type=int, default=4, help="alternating dense/topk blocks")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [bench(p, args.steps, args.blocks) for p in args.presets.split(",")]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps({"results": results, "peak_rss_mib": peak_mib, "threads": torch.get_num_threads()}, indent=2))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for r in results:
        print(f"{r['preset']:>6}  {r['shape']}  {r['params'] / 1e6:.2f}M params")
        print(f"        dense step {r['dense_step_s'] * 1000:.0f} ms ({r['dense_tokens_per_s']:.0f} tok/s), "
              f"topk step {r['topk_step_s'] * 1000:.0f} ms ({r['topk_tokens_per_s']:.0f} tok/s)")
        print(f"        topk/dense = {r['topk_over_dense']:.3f}  (goal <= 1.05: {'met' if r['goal_met'] else 'NOT met'})")
    print(f"peak RSS: {peak_mib:.0f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
