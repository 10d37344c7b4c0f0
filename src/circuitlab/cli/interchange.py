"""``circuitlab interchange``: the interchange figures of a circuit already written."""

from __future__ import annotations

import click

from .options import emit_json, json_option


@click.command("interchange")
@click.argument("circuit_path", metavar="CIRCUIT.json")
@click.option("--model", "model_dir", default=None, metavar="DIR",
              help="The run the circuit was pruned on. [default: the circuit's provenance.run]")
@click.option("--draws", type=click.IntRange(min=3), default=3, show_default=True,
              help="Random node sets of the circuit's size (the control).")
@click.option("--write", is_flag=True, help="Also store the figures in the circuit file, under 'interchange'.")
@json_option
def interchange_cmd(circuit_path, model_dir, draws, write, json_):
    """Patch a circuit's nodes from each test pair's other prompt (and the reverse): how often does the
    prediction follow? The same for random node sets of its size. `prune` computes this for every new
    circuit; this command does it for one written earlier (or a bench cell's)."""
    from ..files import write_json
    from ..prune.interchange import circuit_interchange
    from ..view.data import read_circuit_file

    circuit, cell = read_circuit_file(circuit_path)
    figures = circuit_interchange(circuit, model_dir, draws=draws)
    if write:
        circuit["interchange"] = figures
        write_json(circuit_path, cell if cell is not None else circuit)
    if json_:
        emit_json(figures)
        return
    c, r = figures["circuit"], figures["random"]
    click.echo(f"{circuit['task']}: {figures['nodes']} nodes, {figures['n_pairs']} test pairs "
               f"(clean accuracy {figures['clean_accuracy']:.3f})")
    click.echo(f"  circuit:      interchange accuracy {c['accuracy']:.3f}, logit-difference shift "
               f"{c['logit_diff_shift']:.3f}")
    click.echo(f"  random sets:  interchange accuracy {r['accuracy']:.3f}, logit-difference shift "
               f"{r['logit_diff_shift']:.3f} (mean of {len(r['draws'])}, {figures['random_pool']})")
