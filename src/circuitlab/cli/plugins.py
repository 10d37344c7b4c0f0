"""``circuitlab plugins``: what is installed, per plugin and kind; ``--check`` runs the contract checks."""

from __future__ import annotations

import sys
from typing import Any

import click

from .options import emit_json, json_option


def _listing(reg: Any) -> dict[str, Any]:
    from .. import PLUGIN_API_VERSION, plugins

    by_plugin: dict[str, dict[str, Any]] = {}
    for kind in plugins.KINDS:
        for entry in reg.all_entries(kind):
            rec = by_plugin.setdefault(entry.plugin, {"plugin": entry.plugin, "dist": entry.dist,
                                                      "version": entry.version, "builtin": entry.builtin,
                                                      "registered": {k: [] for k in plugins.KINDS}})
            # "use": what to type for it, the short name or DIST:NAME when the short name is refused or a built-in's
            rec["registered"][kind].append({"name": entry.name, "qualname": entry.qualname, "use": reg.address(entry),
                                            "summary": entry.summary})
    failed = [{"plugin": f.plugin, "dist": f.dist, "version": f.version, "error": f.error} for f in reg.pm.failures]
    skipped = [{"kind": s.kind, "name": s.name, "plugin": s.plugin, "dist": s.dist, "reason": s.reason}
               for s in reg.skipped]
    conflicts = [{"kind": kind, "name": name, "plugins": [e.plugin for e in entries],
                  "qualnames": [e.qualname for e in entries if e.qualname in reg.qualified[kind]],
                  "error": reg.conflict_message(kind, name)} for (kind, name), entries in reg.conflicts.items()]
    shadowed = [{"kind": e.kind, "name": e.name, "qualname": e.qualname, "plugin": e.plugin, "dist": e.dist}
                for e in reg.shadowed]
    return {"plugin_api_version": PLUGIN_API_VERSION, "plugins": list(by_plugin.values()), "failed": failed,
            "skipped": skipped, "conflicts": conflicts, "shadowed": shadowed,
            "names": {k: reg.names(k) for k in plugins.KINDS}}


def _print_listing(doc: dict[str, Any]) -> None:
    from .. import plugins

    width = max([16] + [len(i["use"]) for rec in doc["plugins"] for items in rec["registered"].values() for i in items])
    for rec in doc["plugins"]:
        click.echo(f"{rec['plugin']}  ({rec['dist']} {rec['version']})")
        for kind, items in rec["registered"].items():
            for item in items:
                click.echo(f"  {plugins.KIND_LABELS[kind]:<22} {item['use']:<{width}} {item['summary']}")
    for s in doc["skipped"]:
        click.echo(f"{s['plugin']}  ({s['dist']})  SKIPPED {s['kind']} {s['name']!r}: {s['reason']}")
    for c in doc["conflicts"]:
        click.echo(f"CONFLICT: {c['error']}")
    for s in doc["shadowed"]:
        click.echo(f"SHADOWED: {s['kind']} {s['name']!r} of {s['plugin']!r} ({s['dist']}) is a built-in's short name; "
                   f"use {s['qualname']!r}")
    for f in doc["failed"]:
        click.echo(f"{f['plugin']}  ({f['dist']} {f['version']})  FAILED TO LOAD: {f['error']}")


@click.command("plugins")
@click.option("--check", "checks", multiple=True, metavar="NAME",
              help="Run the contract checks (circuitlab.testing) of a registered NAME, DIST:NAME (e.g. "
                   "circuitlab-example:margin), KIND:NAME (e.g. sparsity:topk) or 'all', and print a pass/fail table. Repeatable. Exit code 1 if a check fails.")
@json_option
def plugins_cmd(checks: tuple[str, ...], json_: bool) -> None:
    """List plugins (distribution, version), the names each registered per kind, and any that were
    skipped, conflict or failed to load; or check plugins against their protocols (--check).

    \b
    The checks run each plugin on a tiny real model in seconds: shapes, ranges, a monotone
    density_at, the schedule state through safetensors, the seed reproducing, a suite's pair
    counts, tokens and train/test disjointness. Plugin authors run the same checks in their
    tests with circuitlab.testing (docs/plugins.md).
    """
    from .. import plugins

    reg = plugins.get_registry()
    if not checks:
        doc = _listing(reg)
        if json_:
            emit_json(doc)
        else:
            _print_listing(doc)
        return
    from ..testing import check_registered

    reports = [report for spec in checks for report in check_registered(spec)]
    passed = all(r.passed for r in reports)
    if json_:
        emit_json({"passed": passed, "reports": [r.to_json() for r in reports]})
    else:
        for report in reports:
            click.echo(report.table())
        n_failed = sum(not r.passed for r in reports)
        click.echo(f"{len(reports) - n_failed} of {len(reports)} plugin entries passed every check", err=True)
    sys.stdout.flush()
    if not passed:
        sys.exit(1)
