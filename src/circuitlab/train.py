"""Weight-sparse training (paper-spec §2) with pluggable sparsity schedules.

One step: forward and cross-entropy; backward; gradients scaled to RMS 1; AdamW (betas 0.9/0.95,
eps 0.1, weight decay 0.1); then the schedule's ``apply`` enforces its masks. The learning rate is
``lr * warmup * linear decay * sqrt(target density / current density)`` (the paper's "sharkfin").

Batches are drawn from a generator seeded by (seed, step), so a resumed run sees exactly the
batches an uninterrupted one would. Checkpoints are single safetensors files written atomically.
Under ``torchrun`` the global batch is split across ranks (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from . import __version__, plugins
from .config import ModelConfig, TrainConfig, from_dict, get_preset, to_dict
from .errors import CircuitlabError
from .files import atomic_path, read_json, write_bytes, write_json
from .runs import RUN_KIND

CHECKPOINT = "checkpoint.safetensors"


@attrs.frozen
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_type: str) -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(dist: Dist) -> Any:
    import torch

    if torch.cuda.is_available() and os.environ.get("CIRCUITLAB_DEVICE", "") != "cpu":
        if dist.local_rank >= torch.cuda.device_count():
            # Falling back to the CPU here would mix nccl and gloo ranks in one job, which hangs.
            raise CircuitlabError(f"process with LOCAL_RANK {dist.local_rank} has no GPU of its own "
                                  f"({torch.cuda.device_count()} visible); use --nproc_per_node <= "
                                  f"{torch.cuda.device_count()} or CIRCUITLAB_DEVICE=cpu")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def lr_at(config: TrainConfig, step: int, density: float) -> float:
    """Warmup x linear decay x sqrt(target L0 / current L0)."""
    warmup_steps = max(1, round(config.warmup_frac * config.steps))
    warmup = min(1.0, (step + 1) / warmup_steps)
    decay = max(0.0, 1.0 - step / config.steps)
    return config.lr * warmup * decay * math.sqrt(config.density / density) if density > 0 else 0.0


def _batch(ids: Any, step: int, config: TrainConfig, n_ctx: int, dist: Dist, device: Any):
    """The global batch of a step is fixed by (seed, step); each rank takes its slice."""
    import torch

    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    starts = torch.randint(0, len(ids) - n_ctx - 1, (config.batch_size,), generator=g)
    per_rank = config.batch_size // dist.world
    starts = starts[dist.rank * per_rank: (dist.rank + 1) * per_rank]
    offsets = torch.arange(n_ctx + 1)
    window = ids[starts[:, None] + offsets]  # (B, T + 1)
    return window[:, :-1].to(device), window[:, 1:].to(device)


def evaluate_loss(model: Any, ids: Any, n_ctx: int, n_windows: int, device: Any, batch: int = 16) -> float:
    """Mean next-token loss on fixed, evenly spaced validation windows."""
    import torch

    n_windows = max(1, min(n_windows, (len(ids) - 1) // (n_ctx + 1)))
    starts = torch.linspace(0, len(ids) - n_ctx - 2, n_windows).long()
    offsets = torch.arange(n_ctx + 1)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), _autocast(device):
        for i in range(0, n_windows, batch):
            w = ids[starts[i: i + batch, None] + offsets].to(device)  # (b, T + 1)
            _, loss = model(w[:, :-1], w[:, 1:])
            total += float(loss) * w.shape[0]
            count += w.shape[0]
    model.train()
    return total / count


def _autocast(device: Any):
    """bf16 autocast on CUDA (bf16's range needs no GradScaler, unlike the paper's fp16); fp32 on CPU."""
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _param_groups(model: Any, config: TrainConfig) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # Decoupled decay on matrices only; the bigram table is a dense lookup the paper exempts.
        (decay if p.dim() >= 2 and "bigram" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save_checkpoint(path: Path, model: Any, opt: Any, schedule: Any, step: int, history: list,
                     meta: dict) -> None:
    import torch
    from safetensors.torch import save_file

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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _load_checkpoint(path: Path, model: Any, opt: Any, schedule: Any, meta: dict) -> tuple[int, list]:
    import torch
    from safetensors import safe_open

    fix = f"delete {str(path)!r} and train again without --resume"
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CircuitlabError(f"checkpoint {str(path)!r} is corrupt or truncated ({exc}); {fix}") from None
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


def train_step(model: Any, train_model: Any, opt: Any, schedule: Any, x: Any, y: Any, step: int, device: Any) -> float:
    """One optimizer step: loss, backward, grads scaled to RMS 1, AdamW, then the schedule's masks."""
    import torch

    with _autocast(device):
        _, loss = train_model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        n = sum(g.numel() for g in grads)
        rms = torch.sqrt(sum(g.pow(2).sum() for g in grads) / n)
        for g in grads:  # every step, not only above 1: the paper's RMS normalisation
            g.div_(rms + 1e-5)
    opt.step()
    with torch.no_grad():
        schedule.apply(model, step)
    return loss.detach().item()


def make_optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    return torch.optim.AdamW(_param_groups(model, config), lr=config.lr, betas=(config.beta1, config.beta2),
                             eps=config.eps)


def resolve_model_config(config: TrainConfig, vocab_size: int, model_config: ModelConfig | None = None) -> ModelConfig:
    base = model_config or get_preset(config.preset).model
    return attrs.evolve(base, vocab_size=vocab_size)


def train_run(config: TrainConfig, out: str | Path, *, model_config: ModelConfig | None = None,
              resume: bool = False, progress: bool = True) -> Path:
    """Train a model into the run folder ``out`` and return its path."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from .corpus import load_corpus
    from .model import GPT
    from .tokenizer import encode_split, load_or_train_tokenizer, tokenizer_hash

    out = Path(out)
    schedule_entry = plugins.get("sparsity", config.sparsity)
    if (out / "model.safetensors").exists() and not resume:
        raise CircuitlabError(f"{str(out)!r} already holds a finished run; choose another --out")
    if (out / CHECKPOINT).exists() and not resume:
        raise CircuitlabError(f"{str(out)!r} holds an interrupted run; pass --resume to continue it or choose another --out")
    if resume and not (out / CHECKPOINT).exists() and not (out / "model.safetensors").exists():
        raise CircuitlabError(f"nothing to resume in {str(out)!r} (no {CHECKPOINT}); drop --resume to start a new run")

    # Pick this rank's GPU before the process group starts: nccl binds to the current device, and
    # touching cuda:0 from every rank would put a stray context on the first GPU.
    device = _device(Dist(local_rank=int(os.environ.get("LOCAL_RANK", "0"))))
    dist = _setup_distributed(device.type)
    if config.batch_size % dist.world:
        raise CircuitlabError(f"--batch-size {config.batch_size} is not divisible by {dist.world} processes; "
                              "pick a multiple of the process count")

    corpus = load_corpus(config.corpus)
    tok = load_or_train_tokenizer(corpus)
    train_ids = torch.from_numpy(encode_split(corpus, tok, "train").astype(np.int64))
    val_ids = torch.from_numpy(encode_split(corpus, tok, "val").astype(np.int64))
    mcfg = resolve_model_config(config, tok.get_vocab_size(), model_config)
    if len(train_ids) < 2 * (mcfg.n_ctx + 1) or len(val_ids) < mcfg.n_ctx + 2:
        raise CircuitlabError(f"corpus {corpus.root!r} is too small for n_ctx={mcfg.n_ctx} "
                              f"({len(train_ids)} train / {len(val_ids)} val tokens); pass a larger --corpus")

    torch.manual_seed(config.seed)
    model = GPT(mcfg).to(device)
    schedule = schedule_entry.factory(config)
    opt = make_optimizer(model, config)
    meta = json.loads(json.dumps({"train": to_dict(config), "model": to_dict(mcfg)}))  # as stored: lists, not tuples
    provenance = {
        "circuitlab_version": __version__,
        "plugins": [schedule_entry.provenance()],
        "seed": config.seed,
        "corpus": {"root": corpus.root, "hash": corpus.hash, "files": len(corpus.files),
                   "train_tokens": len(train_ids), "val_tokens": len(val_ids)},
        "tokenizer_hash": tokenizer_hash(tok),
        "torch_version": torch.__version__,
        "device": str(device),
        "world_size": dist.world,
    }

    step, history = 0, []
    if resume and (out / CHECKPOINT).exists():
        step, history = _load_checkpoint(out / CHECKPOINT, model, opt, schedule, meta)
        step += 1  # the checkpoint holds the state after its step
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes(out / "tokenizer.json", tok.to_str().encode())
        write_json(out / "corpus_manifest.json", corpus.manifest())
        write_json(out / "config.json", {"kind": RUN_KIND, "status": "training", **meta, "provenance": provenance})

    train_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[dist.local_rank] if device.type == "cuda" else None)

    bar = tqdm(total=config.steps, initial=step, disable=not (progress and dist.main), file=sys.stderr,
               desc=f"train {config.sparsity}", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 5.0)  # keep logs short when not a terminal
    t0, tokens_done = time.perf_counter(), 0
    if step == 0 and dist.main:
        history.append({"step": 0, "val_loss": evaluate_loss(model, val_ids, mcfg.n_ctx, config.eval_batches * 8, device),
                        "density": 1.0})
    model.train()
    while step < config.steps:
        density = schedule.density_at(step)
        lr = lr_at(config, step, density)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = _batch(train_ids, step, config, mcfg.n_ctx, dist, device)
        loss_value = train_step(model, train_model, opt, schedule, x, y, step, device)
        tokens_done += x.numel() * dist.world
        bar.set_postfix(loss=f"{loss_value:.3f}", density=f"{density:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
        last = step == config.steps - 1
        if dist.main and (last or (step + 1) % config.eval_every == 0):
            val = evaluate_loss(model, val_ids, mcfg.n_ctx, config.eval_batches * 8, device)
            history.append({"step": step + 1, "val_loss": val, "train_loss": loss_value, "density": density})
            bar.write(f"step {step + 1}: val loss {val:.4f}, density {density:.4f}", file=sys.stderr)
        if dist.main and (last or (step + 1) % config.ckpt_every == 0):
            _save_checkpoint(out / CHECKPOINT, model, opt, schedule, step, history, meta)
        step += 1
    bar.close()
    seconds = time.perf_counter() - t0

    if dist.main:
        if not history or history[-1]["step"] != config.steps:  # resumed from the final checkpoint
            history.append({"step": config.steps, "density": schedule.density_at(config.steps - 1),
                            "val_loss": evaluate_loss(model, val_ids, mcfg.n_ctx, config.eval_batches * 8, device)})
        densities = schedule.densities(model)
        final = {"steps": config.steps, "val_loss": history[-1]["val_loss"], "initial_val_loss": history[0]["val_loss"],
                 "tokens_per_second": tokens_done / seconds if seconds > 0 and tokens_done else None,
                 "densities": densities, "history": history}
        write_json(out / "config.json", {"kind": RUN_KIND, "status": "complete", **meta, "provenance": provenance,
                                         "final": final})
        state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()}
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"circuitlab_version": __version__, "config": json.dumps(meta["model"])})
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return out


def run_summary(out: str | Path) -> dict:
    meta = read_json(Path(out) / "config.json", "run config")
    final = meta.get("final", {})
    from .sparsity import is_block_matrix

    block = {k: v for k, v in final.get("densities", {}).items() if is_block_matrix(k)}
    return {
        "run": str(out),
        "sparsity": meta["train"]["sparsity"],
        "target_density": meta["train"]["density"] if meta["train"]["sparsity"] != "dense" else 1.0,
        "steps": final.get("steps"),
        "initial_val_loss": final.get("initial_val_loss"),
        "val_loss": final.get("val_loss"),
        "tokens_per_second": final.get("tokens_per_second"),
        "max_block_matrix_density": max(block.values()) if block else None,
        "corpus_hash": meta["provenance"]["corpus"]["hash"],
    }


def load_train_config(out: str | Path) -> TrainConfig:
    return from_dict(TrainConfig, read_json(Path(out) / "config.json", "run config")["train"], "train config")
