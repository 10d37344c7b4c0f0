"""Import a checkpoint of csp_yolo2's shape (about 475M parameters, 1.7 GB of float32) and load it.

Measures wall time and peak RSS of ``circuitlab import-oai`` and of loading the imported run plus one
forward pass, each in its own process. The target is a 24 GB machine: the import streams the
memory-mapped weights into safetensors, and the loaded model is held about once.

    .venv/bin/python benchmarks/import_oai.py [--layers 8 --d-model 2048 --heads 128 --work /tmp/oai-bench]

The weights are random (the released file is not fetched: nothing here reaches the network). The
shape follows the config reported for csp_yolo2: 8 layers, d_model 2048, 128 heads of 16, d_mlp 8192,
vocabulary 2048, context 1024, a sink, a bigram table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Each measurement runs in its own process and reports its own peak RSS (kB on Linux).
IMPORT = """
import resource, sys
from circuitlab.cli import main
try:
    main(["import-oai", sys.argv[1], "--out", sys.argv[2]])
except SystemExit as exc:
    assert not exc.code, exc.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
LOAD = """
import resource, sys, torch
from circuitlab.train.runs import load_model
model, _, _ = load_model(sys.argv[1], need_tokenizer=False)
with torch.no_grad():
    logits, _ = model(torch.randint(0, model.config.vocab_size, (1, 64)))
assert torch.isfinite(logits).all()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def build(folder: Path, layers: int, d_model: int, heads: int, d_head: int, d_mlp: int, vocab: int, ctx: int) -> int:
    import torch

    config = {"block_size": ctx, "vocab_size": vocab, "n_layer": layers, "n_head": heads, "d_head": d_head,
              "d_model": d_model, "d_mlp": d_mlp, "bias": True, "ln_bias": True, "rms_norm": True,
              "activation_type": "gelu", "afrac": 0.25, "tied_unembed": False, "enable_bigram_table": True,
              "learnable_bigram_table": True, "sink": True, "flash": True, "pfrac": 0.001}
    g = torch.Generator().manual_seed(0)
    inner = heads * d_head

    def w(*shape):
        return torch.empty(*shape).normal_(0, 0.02, generator=g)

    sd = {"transformer.wte.weight": w(vocab, d_model), "transformer.wpe.weight": w(ctx, d_model),
          "transformer.ln_f.weight": torch.ones(d_model), "lm_head.weight": w(vocab, d_model),
          "bigram_table": w(vocab, vocab), "final_logits_bias": torch.zeros(vocab)}
    for i in range(layers):
        p = f"transformer.h.{i}"
        sd.update({f"{p}.ln_1.weight": torch.ones(d_model), f"{p}.ln_2.weight": torch.ones(d_model),
                   f"{p}.attn.c_attn.weight": w(3 * inner, d_model), f"{p}.attn.c_attn.bias": torch.zeros(3 * inner),
                   f"{p}.attn.c_proj.weight": w(d_model, inner), f"{p}.attn.c_proj.bias": torch.zeros(d_model),
                   f"{p}.attn.attn_imp.sink_logit": torch.zeros(heads),
                   f"{p}.mlp.c_fc.weight": w(d_mlp, d_model), f"{p}.mlp.c_fc.bias": torch.zeros(d_mlp),
                   f"{p}.mlp.c_proj.weight": w(d_model, d_mlp), f"{p}.mlp.c_proj.bias": torch.zeros(d_model)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "beeg_config.json").write_text(json.dumps(config))
    torch.save(sd, folder / "final_model.pt")
    return sum(t.numel() for t in sd.values())


def child(script: str, *args: str) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of ``script`` run in a fresh interpreter."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - t, int(proc.stdout.strip().splitlines()[-1]) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=128)
    ap.add_argument("--d-head", type=int, default=16)
    ap.add_argument("--d-mlp", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--work", type=Path, default=Path("/tmp/oai-import-bench"))
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    src, run = a.work / "oai", a.work / "run"
    t = time.perf_counter()
    n = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"from import_oai import build; from pathlib import Path; print(build(Path({str(src)!r}), "
                        f"{a.layers}, {a.d_model}, {a.heads}, {a.d_head}, {a.d_mlp}, {a.vocab}, {a.ctx}))"],
                       capture_output=True, text=True, check=True).stdout.strip()
    built = time.perf_counter() - t
    imp_s, imp_gb = child(IMPORT, str(src), str(run))
    load_s, load_gb = child(LOAD, str(run))
    print(json.dumps({"parameters": int(n), "checkpoint_gb": (src / "final_model.pt").stat().st_size / 1e9,
                      "build_seconds": round(built, 1), "import_seconds": round(imp_s, 1),
                      "import_peak_rss_gb": round(imp_gb, 2), "load_and_forward_seconds": round(load_s, 1),
                      "load_peak_rss_gb": round(load_gb, 2)}, indent=2))
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
