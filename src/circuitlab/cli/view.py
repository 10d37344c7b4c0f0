"""``circuitlab view``: a circuit, or every circuit of a bench, as offline HTML pages."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import ViewConfig
from ..errors import CircuitlabError
from .options import emit_json, json_option, setting


@click.command("view")
@click.argument("circuit", required=False, type=click.Path(dir_okay=False, path_type=Path), metavar="CIRCUIT.json")
@click.option("--bench", "bench", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Instead of one circuit: an index page of every circuits/*.json (prune, run) and cells/*.json "
                   "(bench) under DIR, with a page for each.")
@click.option("--store", "store", type=click.Path(path_type=Path), default=None, metavar="STORE",
              help="Activation store of the circuit's run: top-activating examples, node means, other methods.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="RUN",
              help="Run folder the circuit was pruned from. [default: the circuit's provenance.run]")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.html",
              help="Page to write (for --bench: the index; circuit pages go to circuits/ beside it).")
@setting(ViewConfig, "examples", help="Top-activating corpus examples per node (from --store).")
@setting(ViewConfig, "context", help="Tokens of each example shown before the highlighted one.")
@setting(ViewConfig, "ablation_pairs", help="Test pairs for the per-node ablation (the task-loss change when the "
                                            "node alone is ablated); 0 skips it.")
@setting(ViewConfig, "device", help="Torch device for the ablations, e.g. cpu or cuda.")
@json_option
def view_cmd(circuit: Path | None, bench: Path | None, store: Path | None, model_dir: Path | None, out: Path,
             examples: int, context: int, ablation_pairs: int, device: str, json_: bool) -> None:
    """Write CIRCUIT.json as one self-contained HTML page that opens offline.

    \b
    The page draws the circuit: layers left to right, node sites as rows, kept nodes as dots and
    edges coloured by the sign of their weight, thicker when larger. Hover a node for its name, mask
    score, mean activation; click it for its top-activating corpus examples (with --store) and the
    task-loss change when it alone is ablated (needs the run). With a store holding several methods
    for the task, a selector shows each and a diff colours nodes in both, only A or only B.

    A backups.json ('circuitlab backups') or track.json ('prune --checkpoints') gets a page with its
    table and plot instead.
    """
    from ..outputs import guard_output
    from ..view import write_bench, write_circuit_page
    from ..view.rounds import is_round_document, write_round_page

    if (circuit is None) == (bench is None):
        raise CircuitlabError("pass either CIRCUIT.json or --bench DIR (see 'circuitlab view --help')")
    if out.suffix.lower() not in (".html", ".htm"):
        raise CircuitlabError(f"--out {str(out)!r} must end in .html")
    guard_output(out, "page", inputs=(circuit, bench, store, model_dir))
    config = ViewConfig(examples=examples, context=context, ablation_pairs=ablation_pairs, device=device)
    if bench is not None:
        if model_dir is not None:
            raise CircuitlabError("--model applies to one circuit; a bench's pages use each circuit's own run")
        result = write_bench(bench, out, store=store, config=config)
        message = f"wrote {out} ({result['circuits']} circuits, a page each in {out.parent / 'circuits'})"
    elif is_round_document(circuit):
        if store is not None or model_dir is not None:
            raise CircuitlabError("--store and --model apply to a circuit, not to a backups.json or track.json")
        result = write_round_page(circuit, out)
        message = f"wrote {out} ({result['rows']} rows{', with the plot' if result['plot'] else ''})"
    else:
        result = write_circuit_page(circuit, out, store=store, model_dir=model_dir, config=config)
        message = f"wrote {out} ({result['nodes']} nodes; methods: {', '.join(result['methods'])})"
        for note in result["notes"].values():
            click.echo(f"note: {note}", err=True)
    if json_:
        emit_json(result)
    else:
        click.echo(message)
