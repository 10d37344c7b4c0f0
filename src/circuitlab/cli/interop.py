"""``circuitlab import-oai``: open OpenAI's released circuit_sparsity checkpoints (docs/interop.md)."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import ImportConfig
from .options import emit_json, json_option, setting


@click.command("import-oai")
@click.argument("src", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), metavar="RUN",
              help="Run folder to write (model.safetensors, config.json, tokenizer.json).")
@setting(ImportConfig, "tokenizer", metavar="FILE",
         help="The model's tokenizer: a tokenizers JSON file, or encoder.json with vocab.bpe beside it. "
              "Without it, commands that need text (tasks, prune, record) refuse the run.")
@setting(ImportConfig, "corpus", metavar="DIR",
         help="Folder of .py files for ablation means and mined tasks. [default: this Python's stdlib]")
@setting(ImportConfig, "overwrite", help="Replace an existing run folder at --out.")
@json_option
def import_oai_cmd(src: Path, out: Path, tokenizer: str | None, corpus: str | None, overwrite: bool,
                   json_: bool) -> None:
    """Turn an OpenAI circuit_sparsity checkpoint folder DIR into a circuitlab run folder.

    \b
    DIR holds beeg_config.json and final_model.pt (as released, e.g. csp_yolo1, csp_yolo2,
    csp_sweep1_*). The weights are read weights-only and memory-mapped: a file that holds anything
    but tensors is refused, never unpickled. Every config key that changes the forward pass maps to
    the model config; a value circuitlab cannot honour is an error naming the key; training-only
    keys are listed as ignored. The run then works with tasks, prune, record, top and view; prune
    large models with --device cuda.
    """
    from ..interop import import_oai
    from ..outputs import guard_output

    config = ImportConfig(tokenizer=tokenizer, corpus=corpus, overwrite=overwrite)
    guard_output(out, "run", inputs=(src, tokenizer, corpus))
    summary = import_oai(src, out, config, note=lambda msg: click.echo(msg, err=True))
    if json_:
        emit_json(summary)
        return
    m = summary["model"]
    click.echo(f"wrote {summary['run']}: {m['n_layer']} layers, d_model {m['d_model']}, "
               f"{summary['stored_values'] / 1e6:.1f}M weights from {summary['source']}")
    if summary["tokenizer"] is None:
        click.echo("no --tokenizer: tasks, prune and record will refuse this run until one is supplied", err=True)
