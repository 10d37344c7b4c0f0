"""Which machine settings change a trained model's bits? Trains the same config under each setting.

    python benchmarks/repro.py                      # tiny preset, 150 steps, every variant
    python benchmarks/repro.py --preset small --steps 200

Each variant is a fresh ``circuitlab train`` process with one environment change (thread count,
torch's kernel ISA via ATEN_CPU_CAPABILITY, oneMKL's code path via MKL_CBWR). The first variant
(the machine's defaults) is run twice: that is the same-machine guarantee. For every variant it
prints whether the weights are bit-identical to the baseline, the largest absolute weight
difference, the final validation loss and the training seconds. A machine of another CPU kind
differs from this one in exactly these settings (plus the CPU itself), so a variant that changes
the bits here is one that can explain two machines training different models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("defaults", {}),
    ("defaults, again", {}),
    ("1 thread", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
    ("ATEN_CPU_CAPABILITY=default (no AVX kernels)", {"ATEN_CPU_CAPABILITY": "default"}),
    ("MKL_CBWR=COMPATIBLE", {"MKL_CBWR": "COMPATIBLE"}),
    ("MKL_CBWR=AVX", {"MKL_CBWR": "AVX"}),
]


def train(out: Path, preset: str, steps: int, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "circuitlab", "train", "--preset", preset, "--sparsity", "topk",
           "--steps", str(steps), "--out", str(out), "--quiet"]
    subprocess.run(cmd, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def weights(path: Path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        for i, (name, env) in enumerate(VARIANTS):
            out = Path(tmp) / f"v{i}"
            seconds = train(out, args.preset, args.steps, env)
            w = weights(out)
            meta = json.loads((out / "config.json").read_text())
            machine = meta["provenance"].get("machine", {})
            if base is None:
                base = w
            same = set(w) == set(base) and all(np.array_equal(w[k], base[k]) for k in w)
            diff = max(float(np.abs(w[k].astype(np.float64) - base[k]).max()) for k in w)
            rows.append({"variant": name, "env": env, "bit_identical": same, "max_abs_weight_diff": diff,
                         "val_loss": meta.get("final", {}).get("val_loss"), "seconds": seconds,
                         "threads": machine.get("threads"), "cpu_capability": machine.get("cpu_capability")})
            print(f"{name:<46} identical={str(same):<5} max|dw|={diff:.3g} val={rows[-1]['val_loss']:.4f} "
                  f"threads={rows[-1]['threads']} isa={rows[-1]['cpu_capability']} {seconds:.1f}s",
                  file=sys.stderr)
    doc = {"preset": args.preset, "steps": args.steps, "machine": machine, "variants": rows}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"preset {args.preset}, {args.steps} steps, CPU {machine.get('cpu', {}).get('model')}")
        for r in rows:
            print(f"  {r['variant']:<46} {'bit-identical' if r['bit_identical'] else 'DIFFERENT':<13} "
                  f"max |dw| {r['max_abs_weight_diff']:.3g}  val loss {r['val_loss']:.4f}  {r['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
