"""``circuitlab train``: train a weight-sparse (or dense) GPT-2 into a run folder."""

from __future__ import annotations

import click

from .cli_options import RegistryName, emit_json, json_option


def build_train_config(sparsity: str, density: float | None, preset: str, corpus: str | None,
                       steps: int | None, seed: int, batch_size: int | None = None, lr: float | None = None,
                       ckpt_every: int | None = None):
    """TrainConfig from CLI flags, with the preset's defaults for anything not given."""
    from .config import TrainConfig, get_preset

    p = get_preset(preset)
    kwargs = {"preset": preset, "sparsity": sparsity, "seed": seed, "corpus": corpus,
              "steps": steps if steps is not None else p.steps,
              "batch_size": batch_size if batch_size is not None else p.batch_size,
              "lr": lr if lr is not None else p.lr}
    if density is not None:
        kwargs["density"] = density
    if ckpt_every is not None:
        kwargs["ckpt_every"] = ckpt_every
    if sparsity == "dense":
        kwargs["density"] = 1.0
    cfg = TrainConfig(**kwargs)
    if cfg.steps < 1:
        from .errors import CircuitlabError

        raise CircuitlabError(f"--steps must be at least 1, got {cfg.steps}")
    return cfg


@click.command("train")
@click.option("--sparsity", type=RegistryName("sparsity"), required=True,
              help="Sparsity schedule: dense, topk (the paper's), gmp, or a plugin's.")
@click.option("--density", type=float, default=None, help="Target fraction of nonzero weights per matrix, in (0, 1]. [default: 0.0625]")
@click.option("--preset", default="small", show_default=True, help="Model size and budget: tiny, small or ref.")
@click.option("--corpus", "corpus", default=None, metavar="DIR",
              help="Folder of .py files to train on. [default: this interpreter's standard library]")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps. [default: the preset's]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Sequences per step (global). [default: the preset's]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate. [default: the preset's]")
@click.option("--out", default=None, metavar="DIR", help="Run folder. [default: runs/PRESET-SPARSITY-dDENSITY-sSEED]")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@click.option("--ckpt-every", type=click.IntRange(min=1), default=None, help="Steps between checkpoints. [default: 50]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@json_option
def train_cmd(sparsity, density, preset, corpus, steps, batch_size, lr, out, resume, ckpt_every, seed, quiet, json_):
    """Train the sparse GPT-2 core on real Python code.

    Writes model.safetensors, config.json (with provenance), tokenizer.json and a resumable
    checkpoint into --out. Progress (loss, density) goes to stderr.
    """
    from .train import run_summary, train_run

    cfg = build_train_config(sparsity, density, preset, corpus, steps, seed, batch_size, lr, ckpt_every)
    if out is None:
        out = f"runs/{preset}-{sparsity}-d{cfg.density:g}-s{seed}"
    path = train_run(cfg, out, resume=resume, progress=not quiet)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    summary = run_summary(path)
    if json_:
        emit_json(summary)
    else:
        click.echo(f"run: {summary['run']}")
        click.echo(f"val loss: {summary['initial_val_loss']:.4f} -> {summary['val_loss']:.4f} "
                   f"after {summary['steps']} steps ({summary['sparsity']}, target density {summary['target_density']:g})")
