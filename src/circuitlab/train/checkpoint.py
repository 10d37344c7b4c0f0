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
#: Kept weights (``TrainConfig.keep_every``): ``checkpoints/step-NNNNNN/``, each a run folder of its own.
KEPT = "checkpoints"


def kept_dir(out: Path, step: int) -> Path:
    return Path(out) / KEPT / f"step-{step:06d}"


def keep_weights(out: Path, step: int, model: Any, run_doc: dict, val_loss: float) -> Path:
    """Write the weights after ``step`` steps as the run folder ``checkpoints/step-NNNNNN`` (config.json
    with ``final.steps`` and ``final.val_loss``, model.safetensors, and the run's tokenizer and corpus
    manifest), built in a temporary folder and renamed into place. An existing one is kept: a resumed
    run recomputes the same weights."""
    import os
    import shutil
    import tempfile

    from ..files import write_json

    dest = kept_dir(out, step)
    if (dest / "model.safetensors").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name in ("tokenizer.json", "corpus_manifest.json"):
            if (Path(out) / name).exists():
                shutil.copyfile(Path(out) / name, tmp / name)
        state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()}
        write_safetensors(tmp / "model.safetensors", state,
                          {"circuitlab_version": __version__, "config": json.dumps(run_doc["model"], sort_keys=True)})
        write_json(tmp / "config.json", {**run_doc, "status": "complete",
                                         "final": {"steps": step, "val_loss": val_loss, "checkpoint_of": str(out)}})
        if dest.exists():  # an incomplete folder (no weights) from a crash: replaced
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


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
