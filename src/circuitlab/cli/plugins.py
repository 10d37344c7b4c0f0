"""``circuitlab plugins``: what is installed, per plugin and kind."""

from __future__ import annotations

from typing import Any

import click

from .options import emit_json, json_option


@click.command("plugins")
@json_option
def plugins_cmd(json_: bool) -> None:
    """List plugins (distribution, version) and the names each registered, per kind."""
    from .. import plugins

    reg = plugins.get_registry()
    by_plugin: dict[str, dict[str, Any]] = {}
    for kind in plugins.KINDS:
        for entry in reg.entries[kind].values():
            rec = by_plugin.setdefault(entry.plugin, {"plugin": entry.plugin, "dist": entry.dist,
                                                      "version": entry.version,
                                                      "registered": {k: [] for k in plugins.KINDS}})
            rec["registered"][kind].append({"name": entry.name, "summary": entry.summary})
    failed = [{"plugin": f.plugin, "dist": f.dist, "version": f.version, "error": f.error} for f in reg.pm.failures]
    if json_:
        emit_json({"plugins": list(by_plugin.values()), "failed": failed,
                   "names": {k: reg.names(k) for k in plugins.KINDS}})
        return
    for rec in by_plugin.values():
        click.echo(f"{rec['plugin']}  ({rec['dist']} {rec['version']})")
        for kind, items in rec["registered"].items():
            for item in items:
                click.echo(f"  {plugins.KIND_LABELS[kind]:<22} {item['name']:<16} {item['summary']}")
    for f in failed:
        click.echo(f"{f['plugin']}  ({f['dist']} {f['version']})  FAILED TO LOAD: {f['error']}")
