"""HTML of the pages: Jinja2 templates (``templates/``) with autoescaping on, one file each.

Every value from a document (a circuit file, a summary, a bench cell, the store) reaches the HTML
through the templates' autoescaping, or inside the page's JSON data block, where ``<`` and ``>``
are written as ``\\u003c`` and ``\\u003e`` (no ``</script>`` can close it); the page's script puts
that data on screen with ``textContent`` and ``setAttribute`` only, never as markup.

A Content-Security-Policy meta tag is the second wall. It forbids every fetch (``default-src
'none'``), so the page can make no network request even by mistake; it needs none: fonts are the
system's, the graph is inline SVG. Scripts and styles run only when their sha256 is in the policy
(the page's own ``circuit.js`` and ``page.css``, inlined so the file stands alone): an injected
``<script>``, ``onerror=`` attribute, ``javascript:`` link or ``style`` attribute does nothing.
Trusted Types are required, so even the page's own script could not write markup from a string.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from functools import cache
from importlib import resources
from urllib.parse import quote


def static(name: str) -> str:
    return resources.files("circuitlab.view").joinpath("static", name).read_text(encoding="utf-8")


def source_hash(text: str) -> str:
    """The CSP source that allows exactly this inline script or style."""
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def csp(script: str | None, style: str) -> str:
    """The page's policy: nothing fetched, only these inline script and style blocks run."""
    scripts = source_hash(script) if script is not None else "'none'"
    return (f"default-src 'none'; script-src {scripts}; "
            f"style-src {source_hash(style)}; img-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'; "
            "require-trusted-types-for 'script'; trusted-types 'none'")


def embed_json(obj) -> str:
    """JSON safe inside a <script> element: no ``</script>``, no ``<!--``; a non-finite number (a store
    attribute, an activation) is null, which the page shows as n/a."""
    return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c").replace(
        ">", "\\u003e")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@cache
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("circuitlab.view", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, *, script: str | None = None, **values) -> str:
    """A page from ``templates/<template>``; ``script`` (trusted, from ``static/``) is inlined and hashed."""
    from markupsafe import Markup

    style = static("page.css")
    for text, tag in ((style, "</style"), (script or "", "</script")):
        if tag in text.lower():  # the inlined files are circuitlab's own; this keeps them from closing their block
            raise ValueError(f"an inlined file holds {tag}>")
    return _environment().get_template(template).render(
        csp=Markup(csp(script, style)), style=Markup(style), script=Markup(script or ""), **values)


def circuit_page(data: dict) -> str:
    from markupsafe import Markup

    c = data["circuit"]
    title = f"circuit: {c.get('suite') + ':' if c.get('suite') else ''}{c.get('task')} ({c.get('method')})"
    return render("circuit.html", script=static("circuit.js"), title=title, data=Markup(embed_json(data)))


def _cell(value) -> dict:
    if value is None:
        return {"text": "n/a", "bad": False}
    if isinstance(value, bool):
        return {"text": "yes" if value else "no", "bad": not value}
    if isinstance(value, float):
        return {"text": f"{value:.4g}", "bad": False}
    return {"text": str(value), "bad": False}


def href(path: str) -> str:
    """A relative link to a file: percent-encoded, and starting with ``./`` or ``../`` so no part of a file
    name can read as a scheme (``javascript:``)."""
    link = quote(path.replace(os.sep, "/"))
    return link if link.startswith(("./", "../")) else "./" + link


def bench_page(title: str, rows: list[dict], columns: list[str], summaries: list[dict]) -> str:
    """The index of a bench: one row of figures per circuit, linking its page and its JSON."""
    shown = [{"name": r["name"], "page": href(r["page"]) if r.get("page") else None, "json": href(r["json"]),
              "cells": [_cell(r["figures"].get(c)) for c in columns]} for r in rows]
    sums = [{"path": s["path"], "n_reached": _count(s.get("n_reached")), "n_circuits": _count(s.get("n_circuits")),
             "geomean_edges": _num(s.get("geomean_edges")), "geomean_nodes": _num(s.get("geomean_nodes"))}
            for s in summaries]
    return render("bench.html", title=title, header=["circuit", *columns, "json"], rows=shown, summaries=sums)


def _count(x) -> str:
    return "n/a" if x is None else str(x)


def _num(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1f}"
