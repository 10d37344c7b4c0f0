"""Training checkpoints: weights, optimizer moments, schedule state and RNG in one safetensors file.

A checkpoint is written atomically after every ``ckpt_every`` steps and at the end; ``--resume``
restores it exactly, so a resumed run reproduces the uninterrupted one bit for bit on the same machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CircuitlabError
from ..files import write_safetensors

CHECKPOINT = "checkpoint.safetensors"


def save_checkpoint(path: Path, model: Any, opt: Any, schedule: Any, step: int, history: list, meta: dict) -> None:
    import torch

    tensors: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        tensors[f"model.{n}"] = p.detach().cpu().contiguous()
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{names[id(p)]}.{key}"] = t.detach().cpu().contiguous()
    for key, value in schedule.state_dict().items():
        tensors[f"schedule.{key}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {"step": str(step), "history": json.dumps(history), "train": json.dumps(meta["train"]),
                "model": json.dumps(meta["model"]), "circuitlab_version": __version__}
    write_safetensors(path, tensors, metadata)


def _read(path: Path, fix: str) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CircuitlabError(f"checkpoint {str(path)!r} is corrupt or truncated ({exc}); {fix}") from None


def _check_same_config(metadata: dict, meta: dict, path: Path, fix: str) -> tuple[int, list]:
    try:
        step = int(metadata["step"])
        history = json.loads(metadata["history"])
        saved_train = json.loads(metadata["train"])
        saved_model = json.loads(metadata["model"])
    except (KeyError, ValueError) as exc:
        raise CircuitlabError(f"checkpoint {str(path)!r} lacks its metadata ({exc}); {fix}") from None
    if saved_train != meta["train"] or saved_model != meta["model"]:
        diff = sorted(k for k in meta["train"] if saved_train.get(k) != meta["train"][k])
        raise CircuitlabError(f"--resume with a different config than the checkpoint (differs in {diff or 'model'}); "
                              "rerun with the original flags or use a new --out")
    return step, history


def load_checkpoint(path: Path, model: Any, opt: Any, schedule: Any, meta: dict) -> tuple[int, list]:
    """Restore a checkpoint into ``model``, ``opt`` and ``schedule``; returns (step, history)."""
    import torch

    fix = f"delete {str(path)!r} and train again without --resume"
    metadata, tensors = _read(path, fix)
    step, history = _check_same_config(metadata, meta, path, fix)
    params = dict(model.named_parameters())
    try:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[f"model.{n}"])
        for group in opt.param_groups:
            for p in group["params"]:
                name = next(n for n, q in params.items() if q is p)
                state = {k.rsplit(".", 1)[1]: v for k, v in tensors.items()
                         if k.startswith(f"optim.{name}.") and k.count(".") == name.count(".") + 2}
                if state:  # moments follow the parameter's device; AdamW keeps "step" on the CPU
                    opt.state[p] = {k: v if k == "step" else v.to(p.device) for k, v in state.items()}
        schedule.load_state_dict({k[len("schedule."):]: v for k, v in tensors.items() if k.startswith("schedule.")})
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, RuntimeError) as exc:
        raise CircuitlabError(f"checkpoint {str(path)!r} does not match this model ({exc}); {fix}") from None
    return step, history
