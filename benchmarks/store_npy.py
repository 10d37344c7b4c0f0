"""Benchmark: the activation store's write and read throughput (zarr v3 through circuitlab.store) against .npy.

(``benchmarks/store.py`` measures what matters to ``record``: its overhead over the model's forward
passes, and the stored size and error per precision; this one compares raw throughput with numpy.)

Writes and reads one float32 activation array of EXAMPLES x TOKENS x NODES (default 4096 x 64 x 512,
512 MiB) twice: dense Gaussian, and with 75% zeros made the way AbsTopK makes them (the 25% largest
|values| of every token kept). Both formats get the same array in the same run, alternating, and the
median of --repeats is reported.

- zarr write: ``circuitlab.store.write_dataset``, the code path of ``circuitlab record`` (its default
  ``--codec auto``: Blosc lz4 + bit shuffle for the dense array, zstd level 1 for the 75%-zero one).
- zarr read: ``xarray.open_zarr(STORE, chunks=None)["activation"].values``.
- .npy write: ``np.save``; read: ``np.load``.
- "cached" timings stop when the data is in the page cache (what a reader of the page cache sees);
  "durable" timings include fsync of every file written, for both formats.
Reads come from a warm page cache. Numbers on a shared 2-core machine are noisy: run it alone.

    python benchmarks/store_npy.py            # the full 4096 x 64 x 512 array
    python benchmarks/store_npy.py --quick    # 512 x 64 x 512, one repeat: checks that it works
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WRITE_GOAL = 0.8  # zarr write throughput >= 0.8x .npy
SIZE_GOAL = 0.35  # zarr size <= 0.35x .npy on the 75%-zero array


def fsync_tree(path: Path) -> None:
    files = [path] if path.is_file() else [Path(d, f) for d, _, fs in os.walk(path) for f in fs]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def make_arrays(examples: int, tokens: int, nodes: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((examples, tokens, nodes), dtype=np.float32)
    k = nodes // 4  # AbsTopK keeping 25%: zero the 75% smallest |values| of each token
    sparse = dense.copy()
    idx = np.argpartition(np.abs(sparse), nodes - k, axis=-1)[..., : nodes - k]
    np.put_along_axis(sparse, idx, 0.0, axis=-1)
    return {"dense": dense, "75% zeros": sparse}


def write_npy(arr: np.ndarray, path: Path, durable: bool) -> None:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def write_zarr(arr: np.ndarray, path: Path, durable: bool) -> None:
    from circuitlab.model.nodes import SITE_CODES
    from circuitlab.store import ExampleBatch, base_attributes, write_dataset

    n, t, m = arr.shape
    nodes = {"layer": np.zeros(m, np.int16), "site": np.full(m, SITE_CODES["mlp.neuron"], np.int8),
             "index": np.arange(m, dtype=np.int32)}
    minus = np.full(n, -1)
    batch = ExampleBatch(activation=arr, token_ids=np.zeros((n, t), np.int32), length=np.full(n, t), task=minus,
                         side=np.full(n, 2), split=np.zeros(n), pair=minus, target=minus, contrast=minus,
                         offset=np.arange(n))
    from circuitlab.store.io import StoreLayout

    write_dataset(path, [batch], StoreLayout(num_examples=n, tokens=t, nodes=nodes, node_mean=np.zeros(m, np.float32),
                                             attributes=base_attributes(codes={"task": [], "split": ["val"]})))
    if durable:
        fsync_tree(path)


def read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def read_zarr(path: Path) -> np.ndarray:
    import xarray as xr

    return xr.open_zarr(path, consolidated=False, chunks=None)["activation"].values


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def bench(arr: np.ndarray, root: Path, repeats: int) -> dict:
    res: dict[str, list[float]] = {k: [] for k in ("npy_write", "zarr_write", "npy_write_durable",
                                                   "zarr_write_durable", "npy_read", "zarr_read")}
    sizes = {}
    for _ in range(repeats):
        for fmt, writer, reader, path in (("npy", write_npy, read_npy, root / "a.npy"),
                                          ("zarr", write_zarr, read_zarr, root / "a.zarr")):
            for durable in (False, True):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                dt, _ = timed(writer, arr, path, durable)
                res[f"{fmt}_write" + ("_durable" if durable else "")].append(dt)
            os.sync() if hasattr(os, "sync") else None
            dt, back = timed(reader, path)
            res[f"{fmt}_read"].append(dt)
            if not np.array_equal(back, arr):
                raise SystemExit(f"{fmt} read back different data")
            del back
            sizes[fmt] = size_of(path)
    mb = arr.nbytes / 1e6
    out = {k: mb / statistics.median(v) for k, v in res.items()}  # MB/s
    out["npy_bytes"], out["zarr_bytes"] = sizes["npy"], sizes["zarr"]
    out["zeros"] = float((arr == 0).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--nodes", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="512 examples, 1 repeat: a smoke run, not a measurement")
    ap.add_argument("--dir", type=Path, default=None, help="Scratch folder (default: a temporary one here).")
    ap.add_argument("--json", action="store_true", help="Print one JSON document instead of the table.")
    args = ap.parse_args(argv)
    if args.quick:
        args.examples, args.repeats = min(args.examples, 512), 1
    root = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.dir or Path.cwd()))
    try:
        # Warm up (imports, zarr's thread pool) outside the timings.
        warm = np.zeros((4, args.tokens, args.nodes), np.float32)
        write_zarr(warm, root / "warm.zarr", False)
        read_zarr(root / "warm.zarr")
        arrays = make_arrays(args.examples, args.tokens, args.nodes)
        results = {name: bench(arr, root, args.repeats) for name, arr in arrays.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    shape = f"{args.examples} x {args.tokens} x {args.nodes} float32 ({arrays['dense'].nbytes / 2**20:.0f} MiB)"
    summary = {}
    for name, r in results.items():
        summary[name] = {
            "write_ratio_cached": r["zarr_write"] / r["npy_write"],
            "write_ratio_durable": r["zarr_write_durable"] / r["npy_write_durable"],
            "read_ratio": r["zarr_read"] / r["npy_read"],
            "size_ratio": r["zarr_bytes"] / r["npy_bytes"],
        }
    sparse = summary["75% zeros"]
    goals = {
        "write_ratio_cached>=0.8": all(s["write_ratio_cached"] >= WRITE_GOAL for s in summary.values()),
        "write_ratio_durable>=0.8": all(s["write_ratio_durable"] >= WRITE_GOAL for s in summary.values()),
        "size_ratio_75pct_zeros<=0.35": sparse["size_ratio"] <= SIZE_GOAL,
    }
    doc = {"shape": shape, "repeats": args.repeats, "quick": args.quick, "results": results, "ratios": summary,
           "goals_met": goals, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"activation store vs .npy: {shape}, median of {args.repeats}, {os.cpu_count()} CPUs"
          + ("  [--quick: smoke run, noisy]" if args.quick else ""))
    print(f"{'array':<10} {'format':<5} {'write MB/s':>10} {'durable':>8} {'read MB/s':>9} {'MiB':>7}")
    for name, r in results.items():
        for fmt in ("npy", "zarr"):
            print(f"{name:<10} {fmt:<5} {r[f'{fmt}_write']:>10.0f} {r[f'{fmt}_write_durable']:>8.0f} "
                  f"{r[f'{fmt}_read']:>9.0f} {r[f'{fmt}_bytes'] / 2**20:>7.1f}")
    print("ratios zarr / npy (throughput: higher is better; size: lower is better)")
    for name, s in summary.items():
        print(f"  {name:<10} write {s['write_ratio_cached']:.2f}x (durable {s['write_ratio_durable']:.2f}x)  "
              f"read {s['read_ratio']:.2f}x  size {s['size_ratio']:.3f}x")
    worst_cached = min(s["write_ratio_cached"] for s in summary.values())
    worst_durable = min(s["write_ratio_durable"] for s in summary.values())
    print(f"goal write >= {WRITE_GOAL}x npy: cached {worst_cached:.2f}x "
          f"({'met' if worst_cached >= WRITE_GOAL else 'NOT met'}), durable {worst_durable:.2f}x "
          f"({'met' if worst_durable >= WRITE_GOAL else 'NOT met'})")
    print(f"goal size <= {SIZE_GOAL}x npy on 75% zeros: {sparse['size_ratio']:.3f}x "
          f"({'met' if goals['size_ratio_75pct_zeros<=0.35'] else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
