"""``circuitlab record``, ``compare`` and ``top``: activation stores (schema: docs/store.md).

torch, xarray and zarr are imported inside the command bodies only, so ``circuitlab --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..config import RecordConfig
from ..errors import CircuitlabError
from .options import emit_json, json_option, setting


def _store_size(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


@click.command("record")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder written by 'circuitlab train'.")
@setting(RecordConfig, "tasks", help="Tasks whose prompt pairs to record: all, or a list like prune's --tasks; 'none' "
                                     "for corpus only.")
@setting(RecordConfig, "pairs", help="Pairs per task and split (both prompts of each pair are recorded).")
@click.option("--splits", default=",".join(RecordConfig().splits), show_default=True,
              help="Task splits to record, comma-separated.")
@setting(RecordConfig, "corpus_windows", help="Random windows of the corpus' validation split to record (for "
                                              "'circuitlab top').")
@setting(RecordConfig, "window", help="Tokens per corpus window (capped at the model's context).")
@setting(RecordConfig, "seed", help="Seed of the corpus window sample.")
@setting(RecordConfig, "precision", help="Stored precision of the activations, read back as float32: float32 (exact), "
                                         "float16, bfloat16, or bitround-N (N = 1..22 mantissa bits kept); see "
                                         "docs/store.md for each one's size and error.")
@setting(RecordConfig, "codec", help="Compression of the activations: auto (Blosc lz4 after a bit shuffle, or zstd "
                                     "level 1 when 10%+ of them are zero; 35%+ at a rounded precision), zstd-1, "
                                     "zstd-3, blosc-{lz4,zstd}-{shuffle,bitshuffle}.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Store folder to write. [default: MODEL/activations.zarr]")
@click.option("--overwrite", is_flag=True, help="Re-record an existing store of the same model (keeps its method "
                                                "results).")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option
def record_cmd(model_dir: Path, tasks: str, pairs: int, splits: str, corpus_windows: int, window: int,
               seed: int, precision: str, codec: str, out: Path | None, overwrite: bool, quiet: bool,
               json_: bool) -> None:
    """Record every node's activation on task prompt pairs and corpus windows into a zarr store.

    \b
    The store holds activation (example x token x node), token ids, the per-node means used for mean
    ablation, and integer-coded coordinates with their lookup tables in the root attrs. Reopen it
    with plain xarray:  xarray.open_zarr(STORE)
    """
    from ..store import open_store, record_run
    from ..train.runs import read_run

    config = RecordConfig(tasks=tasks, pairs=pairs, splits=[s.strip() for s in splits.split(",") if s.strip()],
                          corpus_windows=corpus_windows, window=window, seed=seed, precision=precision, codec=codec)
    out = out or (Path(model_dir) / "activations.zarr")
    read_run(model_dir)

    def progress(done: int, total: int) -> None:
        if not quiet:
            click.echo(f"\rrecording {done}/{total} examples", err=True, nl=done >= total)

    def note(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    path = record_run(out, model_dir, config, overwrite=overwrite, progress=progress, note=note)
    ds = open_store(path)
    summary = {"store": str(path), "examples": int(ds.sizes["example"]), "tokens": int(ds.sizes["token"]),
               "nodes": int(ds.sizes["node"]), "tasks": ds.attrs["codes"]["task"],
               "corpus_windows": ds.attrs["record"]["corpus_windows"],
               "activation_chunks": list(ds["activation"].encoding["chunks"]), "storage": ds.attrs.get("storage", {}),
               "uncompressed_bytes": int(ds["activation"].nbytes), "bytes_on_disk": _store_size(path)}
    if json_:
        emit_json(summary)
    else:
        click.echo(f"wrote {summary['store']}: {summary['examples']} examples x {summary['tokens']} tokens x "
                   f"{summary['nodes']} nodes ({len(summary['tasks'])} tasks, {summary['corpus_windows']} corpus "
                   f"windows), {summary['bytes_on_disk'] / 1e6:.1f} MB on disk "
                   f"({summary['uncompressed_bytes'] / 1e6:.1f} MB of activations uncompressed; "
                   f"{summary['storage'].get('precision', 'float32')}, {summary['storage'].get('activation_codec', 'zstd-1')})")


@click.command("compare")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of circuit edges per task per method (log scale).")
@json_option
def compare_cmd(store: Path, plot: Path | None, json_: bool) -> None:
    """Compare the circuits of every method on every task in STORE.

    Per task and method pair: node-set and edge-set Jaccard; per method: loss, nodes, edges, and the
    mean |activation| and activation frequency of the nodes it kept.
    """
    from ..compare import compare_store, format_table, plot_edges
    from ..files import check_writable_dir

    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise CircuitlabError(f"--plot {str(plot)!r} must end in .png")
        check_writable_dir(plot.parent, "--plot")
    result = compare_store(store)
    if plot is not None:
        result["plot"] = str(plot_edges(result, plot))
    if json_:
        emit_json(result)
        return
    click.echo(format_table(result), nl=False)
    if plot is not None:
        click.echo(f"wrote {plot}", err=True)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


@click.command("top")
@click.option("--store", "store", required=True, type=click.Path(path_type=Path), help="Store written by "
                                                                                       "'circuitlab record'.")
@click.option("--node", required=True, help="Node name LAYER.SITE.INDEX (e.g. 0.mlp.neuron.5) or final.INDEX.")
@click.option("--k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="How many examples.")
@click.option("--source", type=click.Choice(["corpus", "tasks", "all"]), default="corpus", show_default=True,
              help="Search corpus windows, task prompts, or both.")
@click.option("--context", type=click.IntRange(min=0), default=24, show_default=True,
              help="Tokens shown before the highlighted one.")
@json_option
def top_cmd(store: Path, node: str, k: int, source: str, context: int, json_: bool) -> None:
    """Show the examples where NODE fires most, with the token highlighted.

    The highlighted token is the one at which the activation was read: [[token]] (or reverse video on a
    terminal). Newlines show as \\n.
    """
    from ..store import top_examples

    result = top_examples(store, node, k=k, source=source, context=context)
    if json_:
        emit_json(result)
        return
    tty = sys.stdout.isatty()
    click.echo(f"node {result['node']} (index {result['node_index']}) over {result['examples']} {source} examples: "
               f"mean |act| {result['mean_abs']:.4g}, active on {100 * result['frequency']:.1f}% of tokens")
    for h in result["top"]:
        tok = _escape(h["token"])
        mark = click.style(tok, reverse=True, bold=True) if tty else f"[[{tok}]]"
        where = f"ex {h['example']}:{h['position']}" + (f" {h['task']}" if h["task"] else "")
        click.echo(f"{h['rank']:>3}  {h['activation']:+.4f}  {where:<16} {_escape(h['before'])}{mark}"
                   f"{_escape(h['after'])}")
