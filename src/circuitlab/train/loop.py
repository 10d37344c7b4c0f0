"""Weight-sparse training (Gao et al. 2025, §2.2, A.2) with pluggable sparsity schedules.

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

from .. import __version__, plugins
from ..config import ModelConfig, TrainConfig, to_dict
from ..errors import CircuitlabError
from ..files import check_writable_dir, write_bytes, write_json, write_safetensors
from ..interrupts import Interrupted, deferred_signals
from ..machine import machine_provenance
from ..plugins import calls
from ..provenance import build_provenance
from . import distributed
from .checkpoint import CHECKPOINT, keep_weights, load_checkpoint, save_checkpoint
from .distributed import Dist
from .runs import RUN_KIND


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
    with torch.no_grad(), distributed.autocast(device):
        for i in range(0, n_windows, batch):
            w = ids[starts[i: i + batch, None] + offsets].to(device)  # (b, T + 1)
            _, loss = model(w[:, :-1], w[:, 1:])
            total += float(loss) * w.shape[0]
            count += w.shape[0]
    model.train()
    return total / count


def _param_groups(model: Any, config: TrainConfig) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # Decoupled decay on matrices only; the bigram table is a dense lookup the paper exempts.
        (decay if p.dim() >= 2 and "bigram" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    return torch.optim.AdamW(_param_groups(model, config), lr=config.lr, betas=(config.beta1, config.beta2),
                             eps=config.eps)


def train_step(model: Any, train_model: Any, opt: Any, schedule: Any, x: Any, y: Any, step: int, device: Any) -> float:
    """One optimizer step: loss, backward, grads scaled to RMS 1, AdamW, then the schedule's masks."""
    import torch

    with distributed.autocast(device):
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


@attrs.define
class Session:
    """Everything one training run holds while it runs."""

    config: TrainConfig
    out: Path
    dist: Dist
    device: Any
    model: Any
    train_model: Any
    opt: Any
    schedule: Any
    train_ids: Any
    val_ids: Any
    n_ctx: int
    meta: dict
    provenance: dict
    step: int = 0
    history: list = attrs.Factory(list)

    def val_loss(self) -> float:
        c = self.config
        return evaluate_loss(self.model, self.val_ids, self.n_ctx, c.eval_batches * 8, self.device)


def _check_out(out: Path, resume: bool) -> None:
    check_writable_dir(out, "--out")
    if (out / "model.safetensors").exists() and not resume:
        raise CircuitlabError(f"{str(out)!r} already holds a finished run; choose another --out")
    if (out / CHECKPOINT).exists() and not resume:
        raise CircuitlabError(f"{str(out)!r} holds an interrupted run; pass --resume to continue it or choose another --out")
    if resume and not (out / CHECKPOINT).exists() and not (out / "model.safetensors").exists():
        raise CircuitlabError(f"nothing to resume in {str(out)!r} (no {CHECKPOINT}); drop --resume to start a new run")


def _start(config: TrainConfig, out: Path, model_config: ModelConfig | None, resume: bool) -> tuple[Session, Any, Any]:
    """Corpus, tokenizer, model, schedule and optimizer of a run (restored from the checkpoint on resume)."""
    import numpy as np
    import torch

    from ..data.corpus import load_corpus
    from ..data.tokenizer import encode_split, load_or_train_tokenizer, tokenizer_hash
    from ..model.gpt import GPT

    schedule_entry = plugins.get("sparsity", config.sparsity)
    _check_out(out, resume)
    # Pick this rank's GPU before the process group starts: nccl binds to the current device, and
    # touching cuda:0 from every rank would put a stray context on the first GPU.
    device = distributed.pick_device(Dist(local_rank=int(os.environ.get("LOCAL_RANK", "0"))))
    dist = distributed.setup_distributed(device.type)
    if config.batch_size % dist.world:
        raise CircuitlabError(f"--batch-size {config.batch_size} is not divisible by {dist.world} processes; "
                              "pick a multiple of the process count")
    corpus = load_corpus(config.corpus, config.max_file_bytes)
    tok = load_or_train_tokenizer(corpus)
    train_ids = torch.from_numpy(encode_split(corpus, tok, "train").astype(np.int64))
    val_ids = torch.from_numpy(encode_split(corpus, tok, "val").astype(np.int64))
    mcfg = attrs.evolve(model_config, vocab_size=tok.get_vocab_size()) if model_config else \
        config.model_config(tok.get_vocab_size())
    if len(train_ids) < 2 * (mcfg.n_ctx + 1) or len(val_ids) < mcfg.n_ctx + 2:
        raise CircuitlabError(f"corpus {corpus.root!r} is too small for n_ctx={mcfg.n_ctx} "
                              f"({len(train_ids)} train / {len(val_ids)} val tokens); pass a larger --corpus")
    torch.manual_seed(config.seed)
    model = GPT(mcfg).to(device)
    schedule = calls.build_schedule(schedule_entry, config)  # checks every call: errors name the plugin
    opt = make_optimizer(model, config)
    meta = json.loads(json.dumps({"train": to_dict(config), "model": to_dict(mcfg)}))  # as stored: lists, not tuples
    provenance = build_provenance(
        plugins=[schedule_entry], machine=machine_provenance(), seed=config.seed,
        corpus={"root": corpus.root, "hash": corpus.hash, "files": len(corpus.files),
                "skipped": corpus.skipped_counts(), "train_tokens": len(train_ids), "val_tokens": len(val_ids)},
        tokenizer_hash=tokenizer_hash(tok), device=str(device), world_size=dist.world)
    train_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    session = Session(config=config, out=out, dist=dist, device=device, model=model, train_model=train_model,
                      opt=opt, schedule=schedule, train_ids=train_ids, val_ids=val_ids, n_ctx=mcfg.n_ctx,
                      meta=meta, provenance=provenance)
    if resume and (out / CHECKPOINT).exists():
        step, session.history = load_checkpoint(out / CHECKPOINT, model, opt, schedule, meta)
        session.step = step + 1  # the checkpoint holds the state after its step
    return session, tok, corpus


def _write_start(s: Session, tok: Any, corpus: Any) -> None:
    s.out.mkdir(parents=True, exist_ok=True)
    write_bytes(s.out / "tokenizer.json", tok.to_str().encode())
    write_json(s.out / "corpus_manifest.json", corpus.manifest())
    write_json(s.out / "config.json", {"kind": RUN_KIND, "status": "training", **s.meta, "provenance": s.provenance})


def _diverged(s: Session, loss_value: float, lr: float) -> CircuitlabError:
    return CircuitlabError(
        f"training diverged at step {s.step + 1}: the loss is {loss_value} (learning rate {lr:.3g}); the likely "
        f"cause is a learning rate too high for this model; train again with a smaller --lr (the preset's is "
        f"{s.config.lr:g}) and a new --out")


def _loop(s: Session, progress: bool) -> float:
    """Steps from ``s.step`` to the end, with evaluations and checkpoints; returns tokens per second.

    SIGINT/SIGTERM stop it after the current step, with a checkpoint at that step (``Interrupted``)."""
    from tqdm import tqdm

    c, dist = s.config, s.dist
    bar = tqdm(total=c.steps, initial=s.step, disable=not (progress and dist.main), file=sys.stderr,
               desc=f"train {c.sparsity}", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 5.0)  # keep logs short when not a terminal
    t0, tokens_done = time.perf_counter(), 0
    if s.step == 0 and dist.main:
        s.history.append({"step": 0, "val_loss": s.val_loss(), "density": 1.0})
    s.model.train()
    with deferred_signals() as received:
        while s.step < c.steps:
            density = s.schedule.density_at(s.step)
            lr = lr_at(c, s.step, density)
            for group in s.opt.param_groups:
                group["lr"] = lr
            x, y = _batch(s.train_ids, s.step, c, s.n_ctx, dist, s.device)
            loss_value = train_step(s.model, s.train_model, s.opt, s.schedule, x, y, s.step, s.device)
            if not math.isfinite(loss_value):
                raise _diverged(s, loss_value, lr)  # the last checkpoint (before the blow-up) stays
            tokens_done += x.numel() * dist.world
            bar.set_postfix(loss=f"{loss_value:.3f}", density=f"{density:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            last = s.step == c.steps - 1
            if dist.main and (last or (s.step + 1) % c.eval_every == 0):
                val = s.val_loss()
                s.history.append({"step": s.step + 1, "val_loss": val, "train_loss": loss_value, "density": density})
                if progress:
                    bar.write(f"step {s.step + 1}: val loss {val:.4f}, density {density:.4f}", file=sys.stderr)
            if dist.main and c.keep_every and not last and (s.step + 1) % c.keep_every == 0:
                keep_weights(s.out, s.step + 1, s.model, {"kind": RUN_KIND, **s.meta, "provenance": s.provenance},
                             s.val_loss())
            signum = received()
            if dist.main and (last or signum or (s.step + 1) % c.ckpt_every == 0):
                save_checkpoint(s.out / CHECKPOINT, s.model, s.opt, s.schedule, s.step, s.history, s.meta)
            if signum and not last:
                bar.close()
                raise Interrupted(signum, f"interrupted at step {s.step + 1} of {c.steps}; the checkpoint holds it")
            s.step += 1
    bar.close()
    seconds = time.perf_counter() - t0
    return tokens_done / seconds if seconds > 0 and tokens_done else None


def _write_final(s: Session, tokens_per_second: float | None, untrained: bool = False) -> None:
    c = s.config
    if not s.history or (s.history[-1]["step"] != c.steps and not untrained):  # resumed from the final checkpoint
        s.history.append({"step": c.steps, "density": s.schedule.density_at(c.steps - 1), "val_loss": s.val_loss()})
    final = {"steps": 0 if untrained else c.steps, "val_loss": s.history[-1]["val_loss"],
             "initial_val_loss": s.history[0]["val_loss"], "tokens_per_second": tokens_per_second,
             "densities": s.schedule.densities(s.model), "history": s.history, "untrained": untrained}
    write_json(s.out / "config.json", {"kind": RUN_KIND, "status": "complete", **s.meta,
                                       "provenance": s.provenance, "final": final})
    state = {n: p.detach().cpu().contiguous() for n, p in s.model.named_parameters()}
    write_safetensors(s.out / "model.safetensors", state,
                      {"circuitlab_version": __version__, "config": json.dumps(s.meta["model"], sort_keys=True)})


def train_run(config: TrainConfig, out: str | Path, *, model_config: ModelConfig | None = None,
              resume: bool = False, progress: bool = True) -> Path:
    """Train a model into the run folder ``out`` and return its path.

    ``model_config`` overrides the preset's shape (its vocabulary size is taken from the tokenizer)."""
    out = Path(out)
    session, tok, corpus = _start(config, out, model_config, resume)
    if session.dist.main:
        _write_start(session, tok, corpus)
    tokens_per_second = _loop(session, progress)
    if session.dist.main:
        _write_final(session, tokens_per_second)
    distributed.teardown_distributed(session.dist)
    return out


def init_run(config: TrainConfig, out: str | Path, *, model_config: ModelConfig | None = None) -> Path:
    """The random-init control: a finished run folder holding the *untrained* model of ``config``.

    The weights are the initialisation a run of ``config`` starts from (same seed), with the sparsity
    schedule's final masks applied, so the model has the trained one's architecture and density and
    none of its learning. ``config.json`` says ``final.untrained: true`` and ``final.steps: 0``."""
    import torch

    out = Path(out)
    session, tok, corpus = _start(config, out, model_config, resume=False)
    if session.dist.world > 1:
        raise CircuitlabError("an untrained control run is written by one process; run it without torchrun")
    with torch.no_grad():
        session.schedule.apply(session.model, config.steps - 1)
    session.history.append({"step": 0, "val_loss": session.val_loss(),
                            "density": session.schedule.density_at(config.steps - 1)})
    _write_start(session, tok, corpus)
    _write_final(session, None, untrained=True)
    return out
