"""``circuitlab train``: train a weight-sparse (or dense) GPT-2 into a run folder."""

from __future__ import annotations

import os

import click

from ..config import TrainConfig
from .options import RegistryName, emit_json, json_option, setting


@click.command("train")
@click.option("--sparsity", type=RegistryName("sparsity"), required=True,
              help="Sparsity schedule: dense, topk (the paper's), gmp, or a plugin's.")
@setting(TrainConfig, "density", help="Target fraction of nonzero weights per matrix, in (0, 1].")
@setting(TrainConfig, "preset", help="Model size and budget: tiny, small or ref.")
@click.option("--corpus", "corpus", default=None, metavar="DIR",
              help="Folder of .py files to train on. [default: this interpreter's standard library]")
@setting(TrainConfig, "steps", default=None, help="Optimizer steps. [default: the preset's]")
@setting(TrainConfig, "batch_size", default=None, help="Sequences per step (global). [default: the preset's]")
@setting(TrainConfig, "lr", default=None, help="Peak learning rate. [default: the preset's]")
@click.option("--out", default=None, metavar="DIR", help="Run folder. [default: runs/PRESET-SPARSITY-dDENSITY-sSEED]")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@setting(TrainConfig, "ckpt_every", help="Steps between checkpoints.")
@setting(TrainConfig, "keep_every", "--keep-checkpoints", "keep_every", metavar="EVERY",
         help="Keep the weights every EVERY steps as run folders under checkpoints/ (for 'circuitlab prune "
              "--checkpoints'). [default: keep only the final model]")
@setting(TrainConfig, "seed", help="Seed of the initialisation and the batch order.")
@setting(TrainConfig, "max_file_bytes", help="Corpus files larger than this are skipped (and counted).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@json_option
def train_cmd(sparsity, density, preset, corpus, steps, batch_size, lr, out, resume, ckpt_every, keep_every, seed,
              max_file_bytes, quiet, json_):
    """Train the sparse GPT-2 core on real Python code.

    Writes model.safetensors, config.json (with provenance), tokenizer.json and a resumable
    checkpoint into --out. Progress (loss, density) goes to stderr.
    """
    from ..data.corpus import default_corpus_dir
    from ..outputs import guard_output
    from ..train import run_summary, train_run

    cfg = TrainConfig.for_preset(preset, sparsity=sparsity, density=density, corpus=corpus, steps=steps,
                                 batch_size=batch_size, lr=lr, ckpt_every=ckpt_every, keep_every=keep_every, seed=seed,
                                 max_file_bytes=max_file_bytes)
    if out is None:
        out = f"runs/{preset}-{sparsity}-d{cfg.density:g}-s{seed}"
    guard_output(out, "run", inputs=(corpus if corpus is not None else default_corpus_dir(),))
    path = train_run(cfg, out, resume=resume, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    summary = run_summary(path)
    if json_:
        emit_json(summary)
    else:
        click.echo(f"run: {summary['run']}")
        skipped = summary["corpus_skipped"]
        click.echo(f"corpus: {summary['corpus_files']} files (skipped: {skipped.get('too_large', 0)} too large, "
                   f"{skipped.get('binary', 0)} binary, {skipped.get('not_utf8', 0)} not UTF-8)")
        click.echo(f"val loss: {summary['initial_val_loss']:.4f} -> {summary['val_loss']:.4f} "
                   f"after {summary['steps']} steps ({summary['sparsity']}, target density {summary['target_density']:g})")
