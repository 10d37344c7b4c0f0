"""Cross-method comparison of the circuits stored in one activation store.

For every task and every pair of methods with a result for it: node-set and edge-set Jaccard; for each
method: its loss, node and edge counts, and the mean |activation| and activation frequency of the
nodes it kept; where the result carries them (circuits added by ``prune --store``), its interchange
figures against random node sets of its size, and its distribution over pruning seeds (``--seeds``:
core and union sizes, circuit sizes, mean pairwise Jaccard). The activation statistics are taken over the valid tokens of the task's recorded
examples (both prompts of every pair), or over the corpus windows when the task was not recorded.
Jaccard of two empty sets is 1.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from .errors import CircuitlabError
from .store import SIDES, list_methods, open_method, open_store, read_values
from .store.methods import rewrite_method


def jaccard(a: set, b: set) -> float:
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def _node_stats(ds, bases: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per basis (rows of examples): per-node mean |activation| and nonzero frequency over valid tokens."""
    act = ds["activation"]
    n_ex, T, N = act.shape
    length = read_values(ds["length"], "length")
    ce = int(act.encoding.get("chunks", (max(1, n_ex),))[0]) or 1
    member = {name: np.isin(np.arange(n_ex), rows) for name, rows in bases.items()}
    sums = {name: np.zeros(N, np.float64) for name in bases}
    nz = {name: np.zeros(N, np.int64) for name in bases}
    toks = dict.fromkeys(bases, 0)
    for lo in range(0, n_ex, ce):
        hi = min(n_ex, lo + ce)
        if not any(m[lo:hi].any() for m in member.values()):
            continue
        a = read_values(act.isel(example=slice(lo, hi)), "activation", f" of examples {lo}..{hi - 1}")
        valid = np.arange(T)[None, :] < length[lo:hi, None]  # (n, T)
        for name, m in member.items():
            sel = m[lo:hi]
            if not sel.any():
                continue
            v = a[sel][valid[sel]]  # (tokens, N)
            sums[name] += np.abs(v).sum(0, dtype=np.float64)
            nz[name] += (v != 0).sum(0)
            toks[name] += v.shape[0]
    return {name: (sums[name] / max(1, toks[name]), nz[name] / max(1, toks[name]), toks[name]) for name in bases}


def _edge_set(mds, store_attrs: dict, kept: np.ndarray, cache: dict) -> set | None:
    if mds.attrs.get("has_edge_list", True):
        src = read_values(mds["edge_src"], "edge_src")
        dst = read_values(mds["edge_dst"], "edge_dst")
        return set(zip(src.tolist(), dst.tolist(), strict=True))
    # No edge list stored: rebuild it from the recorded run, if it is still there.
    run = store_attrs.get("model", {}).get("run")
    if not run or not Path(run, "model.safetensors").exists():
        return None
    try:
        import torch

        from .prune.edges import edge_list
        from .train.runs import load_model

        if "model" not in cache:
            cache["model"] = load_model(run, need_tokenizer=False)[0]
        return set(map(tuple, edge_list(cache["model"], torch.from_numpy(kept))))
    except (ImportError, CircuitlabError):
        return None


def _task_code(recorded: list[str], task: str) -> int | None:
    """The store's code of the task key ``task``; a bare task name (a result stored before tasks were
    keyed ``suite:task``) matches a recorded ``suite:task`` when only one suite has that name."""
    if task in recorded:
        return recorded.index(task)
    if ":" in task:
        return None
    bare = [i for i, r in enumerate(recorded) if r.rpartition(":")[2] == task]
    return bare[0] if len(bare) == 1 else None


def _figures(figures: dict[str, Any]) -> dict[str, Any]:
    """A stored result's interchange and seed figures (``store.MethodResult.figures``), None where absent."""
    ic, seeds = figures.get("interchange") or {}, figures.get("seeds") or {}
    c, r = ic.get("circuit") or {}, ic.get("random") or {}
    out: dict[str, Any] = {
        "interchange": None if not c else {"accuracy": c.get("accuracy"), "logit_diff_shift": c.get("logit_diff_shift"),
                                           "random_accuracy": r.get("accuracy"),
                                           "random_logit_diff_shift": r.get("logit_diff_shift")},
        "seeds": None}
    if seeds:
        out["seeds"] = {"n": seeds.get("n"), "core": len(seeds.get("core") or []),
                        "union": len(seeds.get("union") or []), "sizes": seeds.get("sizes"),
                        "jaccard_mean": seeds.get("jaccard_mean"), "jaccard_min": seeds.get("jaccard_min"),
                        "core_share": seeds.get("core_share")}
    return out


def compare_store(path: str | os.PathLike) -> dict[str, Any]:
    """The comparison as one JSON-able document (see the module docstring)."""
    path = Path(path)
    ds = open_store(path)
    results = list_methods(path)
    if not results:
        raise CircuitlabError(f"store {str(path)!r} has no method results yet; add some with "
                              "'circuitlab prune ... --store STORE' or 'circuitlab run ... --store STORE'")
    codes = ds.attrs["codes"]
    task_code = read_values(ds["task"], "task")
    side = read_values(ds["side"], "side")
    tasks = sorted({t for _, t in results})
    bases, basis_of = {}, {}
    for t in tasks:
        code = _task_code(codes["task"], t)
        rows = np.flatnonzero(task_code == code) if code is not None else np.zeros(0, int)
        if len(rows):
            bases[t], basis_of[t] = rows, t
        else:
            bases.setdefault("(corpus)", np.flatnonzero(side == SIDES.index("corpus")))
            basis_of[t] = "(corpus)"
    stats = _node_stats(ds, bases)
    cache: dict = {}
    out: dict[str, Any] = {"store": str(path), "model": ds.attrs.get("model", {}), "tasks": {}}
    for t in tasks:
        mean_abs, freq, n_tok = stats[basis_of[t]]
        methods, sets = {}, {}
        for m in sorted(mm for mm, tt in results if tt == t):
            mds = open_method(path, m, t)
            kept = read_values(mds["kept"], f"methods/{m}/{t}/kept", fix=rewrite_method(m, t)).astype(bool)
            if len(kept) != len(mean_abs):
                raise CircuitlabError(f"method result {m}/{t} has {len(kept)} nodes but the store has "
                                      f"{len(mean_abs)}; it was written for another model")
            edges = _edge_set(mds, ds.attrs, kept, cache)
            sets[m] = (set(np.flatnonzero(kept).tolist()), edges)
            a = mds.attrs
            methods[m] = {
                "loss": a.get("loss"), "nodes": a.get("nodes"), "edges": a.get("edges"),
                "mean_abs_activation": float(mean_abs[kept].mean()) if kept.any() else None,
                "activation_frequency": float(freq[kept].mean()) if kept.any() else None,
                "edge_list": edges is not None, "provenance": a.get("provenance", {}),
                **_figures(a.get("figures") or {}),
            }
        pairs = []
        for a_, b_ in itertools.combinations(sorted(methods), 2):
            (na, ea), (nb, eb) = sets[a_], sets[b_]
            pairs.append({"a": a_, "b": b_, "node_jaccard": jaccard(na, nb),
                          "edge_jaccard": jaccard(ea, eb) if ea is not None and eb is not None else None})
        out["tasks"][t] = {"basis": basis_of[t], "basis_tokens": int(n_tok), "methods": methods, "pairs": pairs}
    return out


def _fmt(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def format_table(result: dict[str, Any]) -> str:
    lines = []
    for t, r in result["tasks"].items():
        basis = "task examples" if r["basis"] == t else "corpus windows"
        lines.append(f"task {t}  (activation stats over {r['basis_tokens']} tokens of {basis})")
        w = max([len("method")] + [len(m) for m in r["methods"]])
        lines.append(f"  {'method':<{w}}  {'loss':>9}  {'nodes':>6}  {'edges':>7}  {'mean|act|':>9}  {'freq':>6}")
        for m, s in r["methods"].items():
            lines.append(f"  {m:<{w}}  {_fmt(s['loss']):>9}  {_fmt(s['nodes']):>6}  {_fmt(s['edges']):>7}  "
                         f"{_fmt(s['mean_abs_activation']):>9}  {_fmt(s['activation_frequency'], '.3f'):>6}")
        trust = [(m, s) for m, s in r["methods"].items() if s.get("interchange") or s.get("seeds")]
        if trust:
            lines.append(f"  {'method':<{w}}  {'interchange acc (random)':>24}  {'shift (random)':>15}  "
                         f"{'seeds':>5}  {'core/union':>10}  {'sizes min-max':>13}  {'mean J':>6}")
            for m, s in trust:
                ic, sd = s.get("interchange") or {}, s.get("seeds") or {}
                acc = f"{_fmt(ic.get('accuracy'), '.2f')} ({_fmt(ic.get('random_accuracy'), '.2f')})" if ic else "-"
                shift = (f"{_fmt(ic.get('logit_diff_shift'), '.2f')} ({_fmt(ic.get('random_logit_diff_shift'), '.2f')})"
                         if ic else "-")
                sizes = sd.get("sizes") or []
                lines.append(f"  {m:<{w}}  {acc:>24}  {shift:>15}  {_fmt(sd.get('n')):>5}  "
                             f"{(str(sd['core']) + '/' + str(sd['union'])) if sd else '-':>10}  "
                             f"{(str(min(sizes)) + '-' + str(max(sizes))) if sizes else '-':>13}  "
                             f"{_fmt(sd.get('jaccard_mean'), '.2f'):>6}")
        if r["pairs"]:
            pw = max(len(f"{p['a']} vs {p['b']}") for p in r["pairs"])
            lines.append(f"  {'pair':<{pw}}  {'node J':>7}  {'edge J':>7}")
            for p in r["pairs"]:
                lines.append(f"  {p['a'] + ' vs ' + p['b']:<{pw}}  {_fmt(p['node_jaccard'], '.3f'):>7}  "
                             f"{_fmt(p['edge_jaccard'], '.3f'):>7}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_edges(result: dict[str, Any], png: str | os.PathLike) -> Path:
    """Grouped bars: circuit edges per task (groups) per method (bars), log-scale y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_path

    tasks = list(result["tasks"])
    methods = sorted({m for r in result["tasks"].values() for m in r["methods"]})
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(tasks) * max(1, len(methods)) ** 0.5 + 2), 3.6))
    x = np.arange(len(tasks))
    for i, m in enumerate(methods):
        vals = [result["tasks"][t]["methods"].get(m, {}).get("edges") for t in tasks]
        heights = [v - 0.8 if v else np.nan for v in vals]  # bars start at 0.8; 0 or missing: no bar
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, heights, width, bottom=0.8, label=m)
        ax.bar_label(bars, labels=["" if v is None else str(v) for v in vals], fontsize="x-small", padding=1)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    ax.set_xticks(x, tasks, rotation=20, ha="right")
    ax.set_ylabel("circuit edges (log scale)")
    ax.set_title("Circuit size per task and method")
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    png = Path(png)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return png


@attrs.frozen
class Comparison:
    """What ``circuitlab compare STORE --json`` prints, with tables: per task, each method's loss, node
    and edge counts and activation statistics (``methods``), and each pair of methods' node and edge
    Jaccard (``pairs``)."""

    doc: dict = attrs.field(repr=False)

    @property
    def methods(self):
        import pandas as pd

        rows = []
        for t, r in self.doc["tasks"].items():
            for m, s in r["methods"].items():
                ic, sd = s.get("interchange") or {}, s.get("seeds") or {}
                rows.append({"task": t, "method": m, **{k: v for k, v in s.items() if k != "provenance"},
                             "interchange_accuracy": ic.get("accuracy"),
                             "random_interchange_accuracy": ic.get("random_accuracy"),
                             "seeds": sd.get("n"), "seed_core": sd.get("core"), "seed_union": sd.get("union"),
                             "seed_jaccard_mean": sd.get("jaccard_mean")})
        return pd.DataFrame(rows, columns=["task", "method", "loss", "nodes", "edges", "mean_abs_activation",
                                           "activation_frequency", "edge_list", "interchange_accuracy",
                                           "random_interchange_accuracy", "seeds", "seed_core", "seed_union",
                                           "seed_jaccard_mean"])

    @property
    def pairs(self):
        import pandas as pd

        rows = [{"task": t, **p} for t, r in self.doc["tasks"].items() for p in r["pairs"]]
        return pd.DataFrame(rows, columns=["task", "a", "b", "node_jaccard", "edge_jaccard"])

    def plot(self, png: str | os.PathLike) -> Path:
        """Circuit edges per task and method, as a bar chart in ``png`` (``circuitlab compare --plot``)."""
        return plot_edges(self.doc, png)

    def to_json(self) -> dict:
        return self.doc

    def __repr__(self) -> str:
        return format_table(self.doc).rstrip()

    def _repr_html_(self) -> str:
        return (f"<p>store {self.doc['store']}</p>{self.methods.to_html(index=False)}"
                f"{self.pairs.to_html(index=False)}")


from . import _callable_module  # noqa: E402  (circuitlab.compare(...) is the API function: docs/api.md)

_callable_module(__name__)
