"""``circuitlab import-oai``: open OpenAI's released circuit_sparsity checkpoints (docs/interop.md)."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import CircuitImportConfig, GraphExportConfig, ImportConfig
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

    config = ImportConfig(tokenizer=tokenizer, corpus=corpus, overwrite=overwrite)
    summary = import_oai(src, out, config, note=lambda msg: click.echo(msg, err=True))
    if json_:
        emit_json(summary)
        return
    m = summary["model"]
    click.echo(f"wrote {summary['run']}: {m['n_layer']} layers, d_model {m['d_model']}, "
               f"{summary['stored_values'] / 1e6:.1f}M weights from {summary['source']}")
    if summary["tokenizer"] is None:
        click.echo("no --tokenizer: tasks, prune and record will refuse this run until one is supplied", err=True)


@click.command("import-oai-circuit")
@click.argument("viz_data", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path),
                metavar="VIZ_DATA...")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              metavar="RUN", help="Run folder imported (import-oai) from the model the circuits were found on.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Folder for the circuit files, one <task>.<sweep>.<k>.json per VIZ_DATA.")
@setting(CircuitImportConfig, "task", help="Task name. [default: from the path .../<task>/<sweep>/<k>/viz_data.pt]")
@setting(CircuitImportConfig, "suite", help="Task suite the task belongs to.")
@setting(CircuitImportConfig, "store", metavar="STORE",
         help="Also add each circuit to this activation store as method openai-<sweep>, for "
              "'circuitlab compare' (recorded from RUN first if it does not exist).")
@setting(CircuitImportConfig, "skip_unmapped",
         help="Import the nodes that map and list the rest, instead of refusing the file.")
@setting(CircuitImportConfig, "overwrite", help="Replace existing circuit files and store results.")
@json_option
def import_oai_circuit_cmd(viz_data: tuple[Path, ...], model_dir: Path, out: Path, task: str | None, suite: str,
                           store: str | None, skip_unmapped: bool, overwrite: bool, json_: bool) -> None:
    """Turn OpenAI's released circuits (viz_data.pt files) into circuitlab circuit files on RUN.

    \b
    Each file is read weights-only (anything else is refused, never unpickled). Node IDs
    L.attn.act_in|q|k|v|resid_delta:I, L.mlp.act_in|post_act|resid_delta:I and final_resid:I become
    L.attn.in|q|k|v|out.I, L.mlp.in|neuron|out.I and final.I. The file's losses are two-sided (summed
    over a pair's two prompts) and are halved to circuitlab's per-prompt mean; the provenance says so.
    The file's own within-block edge count is kept beside circuitlab's edge count on RUN's weights.
    Open a result with 'circuitlab view', or compare it with circuitlab's circuits via --store.
    """
    from ..exchange import import_oai_circuits

    config = CircuitImportConfig(task=task, suite=suite, store=store, skip_unmapped=skip_unmapped,
                                 overwrite=overwrite)
    summaries = import_oai_circuits(list(viz_data), model_dir, out, config,
                                    note=lambda msg: click.echo(msg, err=True))
    if json_:
        emit_json({"circuits": summaries})
        return
    for s in summaries:
        loss = "n/a" if s["loss"] is None else f"{s['loss']:.4g}"
        click.echo(f"wrote {s['circuit']}: {s['nodes']} nodes, {s['file_edges']} edges in the file "
                   f"(circuitlab counts {s['edges']} on the run), loss {loss} (halved from the file)")


@click.command("export-graph")
@click.argument("circuit", type=click.Path(dir_okay=False, path_type=Path), metavar="CIRCUIT.json")
@click.option("--format", "fmt", type=click.Choice(["circuit-tracer"]), default="circuit-tracer", show_default=True,
              help="Graph format: circuit-tracer's attribution-graph JSON (its local viewer, Neuronpedia).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="F.json",
              help="Graph file to write; graph-metadata.json beside it lists it for the viewer.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="RUN",
              help="Run the circuit was found on. [default: the circuit's provenance.run]")
@setting(GraphExportConfig, "pair", help="Which task pair (index into the split's pairs).")
@setting(GraphExportConfig, "prompt", type=click.Choice(["a", "b"]),
         help="Which prompt of the pair; nodes sit at its last position.")
@setting(GraphExportConfig, "split", help="Task split the pair comes from.")
@click.option("--store", type=click.Path(path_type=Path), default=None, metavar="STORE",
              help="Activation store of the run: each node's top-activating corpus tokens go into its clerp.")
@setting(GraphExportConfig, "top", help="Top-activating tokens per node (with --store).")
@json_option
def export_graph_cmd(circuit: Path, fmt: str, out: Path, model_dir: Path | None, pair: int, prompt: str, split: str,
                     store: Path | None, top: int, json_: bool) -> None:
    """Export CIRCUIT.json as a graph file another viewer opens.

    \b
    circuit-tracer: nodes are the circuit's nodes at the last position of one prompt of a task pair,
    with their activations there; links are the circuit's edges weighted by the weights behind them,
    plus final nodes to the answer logits. Serve the folder with circuit-tracer's local viewer:
      python -c "from circuit_tracer.frontend import serve; serve('OUT_FOLDER', port=8032)"
    """
    from ..exchange import export_graph

    config = GraphExportConfig(pair=pair, prompt=prompt, split=split, top=top)
    result = export_graph(circuit, out, model_dir=model_dir, store=store, config=config)
    if json_:
        emit_json(result)
        return
    click.echo(f"wrote {result['graph']} ({result['nodes']} nodes, {result['links']} links; listed in "
               f"{result['index']})")


@click.command("import-replication")
@click.argument("src", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), metavar="RUN",
              help="Run folder to write (model.safetensors, config.json, tokenizer.json).")
@setting(ImportConfig, "tokenizer", metavar="FILE",
         help="The model's tokenizer (a tokenizers JSON file). [default: DIR/tokenizer.json when present]")
@setting(ImportConfig, "corpus", metavar="DIR",
         help="Folder of .py files for ablation means and mined tasks. [default: this Python's stdlib]")
@setting(ImportConfig, "overwrite", help="Replace an existing run folder at --out.")
@json_option
def import_replication_cmd(src: Path, out: Path, tokenizer: str | None, corpus: str | None, overwrite: bool,
                           json_: bool) -> None:
    """Turn a checkpoint of the open replication (jacobcd52/sparse_pretrain_public) into a run folder.

    \b
    DIR holds config.json (model_config, sparsity_config) and pytorch_model.bin, or, for a bridges
    run, sparse_model.bin and bridges.bin (the bridges are not imported: they are not part of the
    sparse model's forward pass); model.safetensors is read too. Weights are read weights-only, never
    unpickled. Every config key maps to the model config or is listed as ignored; a setting
    circuitlab cannot honour (resid_pre activation sparsity) is an error naming it.
    """
    from ..interop import import_replication

    config = ImportConfig(tokenizer=tokenizer, corpus=corpus, overwrite=overwrite)
    summary = import_replication(src, out, config, note=lambda msg: click.echo(msg, err=True))
    if json_:
        emit_json(summary)
        return
    m = summary["model"]
    click.echo(f"wrote {summary['run']}: {m['n_layer']} layers, d_model {m['d_model']}, "
               f"{summary['stored_values'] / 1e6:.2f}M weights from {summary['source']}/{summary['weights_file']}")
    if summary["tokenizer"] is None:
        click.echo("no tokenizer.json in DIR and no --tokenizer: tasks, prune and record will refuse this run "
                   "until one is supplied", err=True)
