"""HTML of the circuit page: one file with its data, script and styles inline.

A Content-Security-Policy meta tag forbids every fetch (``default-src 'none'``), so the page can make no
network request even by mistake; it needs none: fonts are the system's, the graph is inline SVG.
"""

from __future__ import annotations

import html
import json
from importlib import resources

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
       "connect-src 'none'; form-action 'none'; base-uri 'none'")


def static(name: str) -> str:
    return resources.files("circuitlab.view").joinpath("static", name).read_text(encoding="utf-8")


def embed_json(obj) -> str:
    """JSON safe inside a <script> element: no ``</script>``, no ``<!--``."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e")


def head(title: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta name="generator" content="circuitlab">\n'  # what lets the output guard replace it
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{static('page.css')}</style></head>\n")


def circuit_page(data: dict) -> str:
    c = data["circuit"]
    title = f"circuit: {c.get('suite') + ':' if c.get('suite') else ''}{c.get('task')} ({c.get('method')})"
    return head(title) + f"""<body>
<header><h1>{html.escape(title)}</h1>
<table class="summary"><tbody id="summary"></tbody></table><ul id="notes"></ul></header>
<div class="controls">
  <span id="methods-box"><label>method <select id="method-a"></select></label>
  <label>compare with <select id="method-b"><option value="-1">(none)</option></select></label></span>
  <label><input type="checkbox" id="residual" checked> residual edges</label>
  <span class="legend"><span><span class="swatch" style="background:#1a7f37"></span>positive weight</span>
  <span><span class="swatch" style="background:#cf222e"></span>negative weight</span>
  <span id="legend-diff" hidden><span><span class="swatch" style="background:#8250df"></span>both</span>
  <span><span class="swatch" style="background:#0969da"></span>only A</span>
  <span><span class="swatch" style="background:#d4770b"></span>only B</span></span></span>
  <span id="shown" class="muted"></span>
</div>
<main><div id="canvas"><svg id="graph" xmlns="http://www.w3.org/2000/svg"></svg></div>
<aside id="details"></aside></main>
<div id="tip" hidden></div>
<script type="application/json" id="circuit-data">{embed_json(data)}</script>
<script>{static('circuit.js')}</script>
</body></html>
"""


def _cell(value) -> str:
    if value is None:
        return "<td>n/a</td>"
    if isinstance(value, bool):
        return "<td>yes</td>" if value else '<td class="bad">no</td>'
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def bench_page(title: str, rows: list[dict], columns: list[str], summaries: list[dict]) -> str:
    """The index of a bench: one row of figures per circuit, linking its page and its JSON."""
    head_cells = "".join(f"<th>{html.escape(c)}</th>" for c in ["circuit", *columns, "json"])
    body = []
    for r in rows:
        link = (f'<a href="{html.escape(r["page"])}">{html.escape(r["name"])}</a>' if r.get("page")
                else html.escape(r["name"]))
        cells = "".join(_cell(r["figures"].get(c)) for c in columns)
        body.append(f'<tr><td class="name">{link}</td>{cells}'
                    f'<td class="name"><a href="{html.escape(r["json"])}">json</a></td></tr>')
    sums = "".join(
        f"<li>{html.escape(s['path'])}: {s.get('n_reached', 'n/a')} of {s.get('n_circuits', 'n/a')} circuits reached "
        f"the target; geomean edges {_num(s.get('geomean_edges'))}, nodes {_num(s.get('geomean_nodes'))}</li>"
        for s in summaries)
    return head(title) + f"""<body>
<header><h1>{html.escape(title)}</h1>
<p class="muted">{len(rows)} circuits. Each name opens its circuit page; json is the circuit file itself.</p>
<ul id="notes">{sums}</ul></header>
<table class="bench"><thead><tr>{head_cells}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
</body></html>
"""


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"
