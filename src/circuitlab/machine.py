"""What a result depends on besides its config: the CPU, the kernels torch picks for it, and threads.

Two machines of the same kind (2 cores, torch 2.13.0) trained different ``small`` models from one config.
Float sums are not associative, so anything that changes the order of a reduction changes the last
bits of a result, and 1,200 steps of training turn last bits into different weights. On CPU that
order is fixed by:

- the vector width of torch's own kernels (``torch.backends.cpu.get_cpu_capability()``: AVX2 or
  AVX512 lanes for sums, softmax, norms), chosen per CPU at start-up unless ``ATEN_CPU_CAPABILITY``
  pins it;
- the GEMM code path oneMKL/oneDNN choose for the CPU (per ISA, and per vendor: oneMKL takes other
  paths on AMD than on Intel) unless ``MKL_CBWR`` pins it;
- the number of intra-op threads, which splits some reductions.

``machine_provenance()`` records all of these, so two results can be checked for comparability, and
docs/training.md says which guarantee holds. No torch at import time.
"""

from __future__ import annotations

import os
import platform
import re

#: The CPU flags that decide which kernels run (vector ISA); the full flag list is long and says little more.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "neon", "asimd", "sve")

#: Environment variables that change kernel choice or threading, recorded when set.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
              "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")


def cpu_description(cpuinfo: str | None = None) -> dict:
    """CPU model name, vendor and the ISA flags of ``ISA_FLAGS`` it has (from /proc/cpuinfo on Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key not in fields:
            fields[key] = value.strip()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"model": fields.get("model name") or platform.processor() or None,
            "vendor": fields.get("vendor_id") or None,
            "isa_flags": [f for f in ISA_FLAGS if f in flags],
            "logical_cpus": os.cpu_count()}


def _library_versions(config_text: str) -> dict:
    """oneMKL and oneDNN versions as torch was built with them (from ``torch.__config__.show()``)."""
    found = {}
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config_text)
    dnn = re.search(r"oneDNN v?([\w.]+)", config_text) or re.search(r"MKL-DNN v?([\w.]+)", config_text)
    if mkl:
        found["mkl"] = mkl.group(1)
    if dnn:
        found["onednn"] = dnn.group(1)
    return found


def machine_provenance() -> dict:
    """Everything besides the config that can change a result's bits; stored in every output's provenance."""
    import torch

    try:
        config_text = torch.__config__.show()
    except Exception:  # noqa: BLE001 - the build description is informative only
        config_text = ""
    return {
        "cpu": cpu_description(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "libraries": _library_versions(config_text),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }


def comparable(a: dict, b: dict) -> list[str]:
    """The fields (of two ``machine_provenance()`` records) on which bit-identical results depend and that
    differ; an empty list means the two results can be expected to match bit for bit."""
    keys = ("torch", "cpu_capability", "libraries", "threads", "deterministic_algorithms", "env")
    out = [k for k in keys if a.get(k) != b.get(k)]
    if (a.get("cpu") or {}).get("vendor") != (b.get("cpu") or {}).get("vendor"):
        out.append("cpu.vendor")
    if (a.get("cpu") or {}).get("isa_flags") != (b.get("cpu") or {}).get("isa_flags"):
        out.append("cpu.isa_flags")
    return out
