"""Benchmark: cost of a topk-sparse training step relative to a dense one, throughput, model-FLOP utilisation.

For each preset shape (small, ref) it builds the model, then alternates blocks of dense steps and
topk steps (at the target density, i.e. after the anneal) in the same process, and prints:
- sparse/dense step-time ratio (goal: at most 1.05): the median over blocks of each block's ratio of
  median step times, so that a slow spell of the machine hits both sides of a ratio alike;
- tokens per second of each;
- model-FLOP utilisation (MFU): the step's FLOPs per second over the rate of a plain float32 matrix
  product (``--matmul`` x ``--matmul`` times itself) timed on the same threads between the blocks;
- peak resident memory of the process.
Run it alone: other load on the 2 cores distorts the timings.

FLOPs of one step (counted like nanoGPT's ``estimate_mfu``; the topk model runs the same dense
products, its zeros are not skipped, so both count alike). Per token, with P the weights of the
matrix products (per layer c_attn d_in x 3·h·d_head, attention c_proj h·d_head x d_model, c_fc
d_in x d_mlp, MLP c_proj d_mlp x d_model; plus the unembedding d_model x vocab; the embeddings and
the bigram table are lookups, no products):
- forward 2P (a multiply and an add per weight), backward 4P (gradients of inputs and of weights);
- attention scores and their weighted sum: 2 products of T x d_head per head and layer, 4·L·h·d_head·T
  FLOPs per token forward (the causal half counted in full, as nanoGPT does), times 3 with backward.
So a step costs (6P + 12·L·h·d_head·T) x B·T FLOPs; the optimizer, norms, activations and topk add
O(parameters + activations) element-wise work that is left out, which MFU therefore counts as loss.

    python benchmarks/train_step.py [--presets small,ref] [--steps 3] [--blocks 10] [--json]
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


def step_flops(mcfg, batch: int) -> float:
    """FLOPs of one training step (forward and backward) of a GPT with config ``mcfg`` (module docstring)."""
    d_in = mcfg.d_in
    inner = mcfg.n_head * mcfg.d_head
    per_layer = d_in * 3 * inner + inner * mcfg.d_model + d_in * mcfg.d_mlp + mcfg.d_mlp * mcfg.d_model
    p = mcfg.n_layer * per_layer + mcfg.d_model * mcfg.vocab_size
    T = mcfg.n_ctx
    return (6 * p + 12 * mcfg.n_layer * inner * T) * batch * T


def matmul_rate(n: int, reps: int = 5) -> float:
    """FLOP/s of a float32 (n, n) @ (n, n) product on this process's threads: the median of ``reps``."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def bench(preset_name: str, steps: int, blocks: int, matmul: int = 1024) -> dict:
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
    ratios, rates = [], []
    for _ in range(blocks):  # alternate so that drift in machine speed hits both alike
        rates.append(matmul_rate(matmul))
        block = {}
        for name, (model, opt, schedule) in models.items():
            block[name] = []
            for _ in range(steps):
                t0 = time.perf_counter()
                train_step(model, model, opt, schedule, x, y, 9, device)
                block[name].append(time.perf_counter() - t0)
            timings[name] += block[name]
        ratios.append(statistics.median(block["topk"]) / statistics.median(block["dense"]))
    dense, topk = statistics.median(timings["dense"]), statistics.median(timings["topk"])
    ratio, rate = statistics.median(ratios), statistics.median(rates)
    flops = step_flops(mcfg, preset.batch_size)
    tokens = preset.batch_size * mcfg.n_ctx
    return {
        "preset": preset_name,
        "shape": f"d{mcfg.d_model} L{mcfg.n_layer} h{mcfg.n_head}x{mcfg.d_head} mlp{mcfg.d_mlp} ctx{mcfg.n_ctx} batch{preset.batch_size}",
        "params": sum(p.numel() for p in models["dense"][0].parameters()),
        "dense_step_s": dense,
        "topk_step_s": topk,
        "topk_over_dense": ratio,
        "topk_over_dense_blocks": ratios,
        "dense_tokens_per_s": tokens / dense,
        "topk_tokens_per_s": tokens / topk,
        "steps_timed_each": len(timings["dense"]),
        "goal_met": ratio <= 1.05,
        "step_gflop": flops / 1e9,
        "matmul_n": matmul,
        "matmul_gflop_per_s": rate / 1e9,
        "dense_mfu": flops / dense / rate,
        "topk_mfu": flops / topk / rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,ref")
    parser.add_argument("--steps", type=int, default=3, help="steps per block")
    parser.add_argument("--blocks", type=int, default=10, help="alternating dense/topk blocks")
    parser.add_argument("--matmul", type=int, default=1024, help="size of the reference matrix product")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [bench(p, args.steps, args.blocks, args.matmul) for p in args.presets.split(",")]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps({"results": results, "peak_rss_mib": peak_mib, "threads": torch.get_num_threads()}, indent=2))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for r in results:
        print(f"{r['preset']:>6}  {r['shape']}  {r['params'] / 1e6:.2f}M params")
        print(f"        dense step {r['dense_step_s'] * 1000:.0f} ms ({r['dense_tokens_per_s']:.0f} tok/s), "
              f"topk step {r['topk_step_s'] * 1000:.0f} ms ({r['topk_tokens_per_s']:.0f} tok/s)")
        print(f"        topk/dense = {r['topk_over_dense']:.3f}, median of {len(r['topk_over_dense_blocks'])} blocks "
              f"(goal <= 1.05: {'met' if r['goal_met'] else 'NOT met'})")
        print(f"        {r['step_gflop']:.1f} GFLOP a step; {r['matmul_n']}x{r['matmul_n']} float32 product "
              f"{r['matmul_gflop_per_s']:.0f} GFLOP/s; MFU dense {r['dense_mfu']:.3f}, topk {r['topk_mfu']:.3f} "
              f"(aim: 0.5)")
    print(f"peak RSS: {peak_mib:.0f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
