"""Backup circuits: exclude the node most seeds keep, prune again, and count how long the task survives.

Each round prunes one task with ``config.seeds`` pruning seeds (``prune.seeds``), with every node
excluded so far ablated whatever the mask says (``PruneConfig.exclude``). The node kept by the most
seeds (ties: the lowest node index) is excluded from the next round on. The run stops at the first
round whose target cannot be reached any more (with the excluded nodes ablated, even keeping every
other node misses the target, so no seed reaches it), when a circuit of no nodes reaches it, or after
``rounds`` rounds. The **backup depth** is the number of nodes excluded when the task failed (the
failing round's index; round 0 excludes nothing); a task that did not fail within ``rounds`` rounds
has depth "at least ``rounds``" (``depth`` None, ``depth_at_least`` set).
``model_misses_round`` is the first round whose whole model (the excluded nodes ablated, every other
node kept) misses the target on the test pairs: a circuit can still reach the target after that,
because ablating more nodes can undo the damage.

The procedure is the backup-circuit analysis of Hao & Goldstein (``Anwen0507/sparse_pretrain_release``).

Every finished round is written atomically as ``round-NNN.json`` under the output folder; a killed
run, started again with the same settings, continues after its last finished round. The folder also
gets ``backups.json`` (every round and the depth) and ``backups.png``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import attrs

from ..config import PruneConfig, to_dict
from ..errors import CircuitlabError
from ..files import read_json, write_json
from ..log import logger
from .parallel import TaskJob
from .search import TaskData
from .seeds import _prune_jobs, seed_distribution, seed_jobs

BACKUPS_KIND = "circuitlab-backups"
ROUND_KIND = "circuitlab-backup-round"


@attrs.frozen(kw_only=True)
class PreparedTask:
    """One task of one run, ready to prune: the model, the task's prepared data (``prune.task.prepare_task``:
    encoded pairs, ablation values, provenance) and what a resumed run must match."""

    run: Path | None  # None: a model not loaded from a run folder (pruned in this process)
    model: Any = attrs.field(repr=False)
    task: Any
    data: TaskData = attrs.field(repr=False)
    provenance: dict = attrs.field(repr=False)


def prepare_task(run: str | Path, config: PruneConfig) -> PreparedTask:
    """Load ``run`` and the one task ``config.tasks`` names (``SUITE:task``), through the steps of
    ``circuitlab.prune.prune_task`` before the search.

    A spec naming no task or several, or a task the model cannot be pruned on, is one-line error."""
    from ..tasks import check_suite, resolve_tasks, task_context_for_run
    from .task import LoadedModel, Skipped
    from .task import prepare_task as prepare_one

    check_suite(config.tasks)
    loaded = LoadedModel.load(run, config.device)
    context = task_context_for_run(loaded.info, config.mine_from)
    tasks = resolve_tasks(config.tasks, context)
    if len(tasks) != 1:
        raise CircuitlabError(f"--task {config.tasks!r} selects {len(tasks)} tasks; name one as SUITE:task")
    task = tasks[0]
    data = prepare_one(loaded, task, config, context=context, announce=False)
    if isinstance(data, Skipped):
        fix = "pick a task it solves or lower --min-accuracy" if data.accuracy is not None else \
            "pick another task ('circuitlab tasks --model RUN' lists the usable ones)"
        raise CircuitlabError(f"task {task.qualname} cannot be pruned on this model: {data.reason}; {fix}")
    prov = {k: data.provenance.get(k) for k in ("run", "run_config_hash", "task", "pairs", "ablation")}
    return PreparedTask(run=loaded.info.path, model=loaded.model, task=task, data=data, provenance=prov)


def _settings(prepared: PreparedTask, config: PruneConfig, rounds: int) -> dict[str, Any]:
    """What the rounds of a folder depend on (a resumed run must match it)."""
    cfg = {k: v for k, v in to_dict(config).items() if k not in ("jobs", "exclude")}
    return {"prune_config": cfg, "rounds_asked": rounds, **prepared.provenance}


def _round_path(out: Path, r: int) -> Path:
    return out / f"round-{r:03d}.json"


def _finished_rounds(out: Path, settings: dict) -> list[dict]:
    """The rounds an earlier run with the same settings finished, in order."""
    done = []
    r = 0
    while _round_path(out, r).exists():
        doc = read_json(_round_path(out, r), "backup round")
        if not isinstance(doc, dict) or doc.get("kind") != ROUND_KIND:
            raise CircuitlabError(f"{str(_round_path(out, r))!r} is not a backup round; pass another --out")
        same = {k: v for k, v in doc.get("settings", {}).items() if k != "rounds_asked"} == \
            {k: v for k, v in settings.items() if k != "rounds_asked"}
        if not same:
            raise CircuitlabError(f"{str(out)!r} holds backup rounds of other settings (model, task or pruning "
                                  "flags); pass another --out to keep them, or the same flags to continue them")
        done.append(doc)
        r += 1
    return done


def _round(prepared: PreparedTask, config: PruneConfig, r: int, excluded: list[str], settings: dict) -> dict:
    """Prune with every seed, excluding ``excluded``; the round's document."""
    t0 = time.perf_counter()
    cfg = attrs.evolve(config, exclude=tuple(excluded))
    job = TaskJob(index=r, data=prepared.data)
    circuits = [c for _, c in _prune_jobs(prepared.model, prepared.run, seed_jobs(job, cfg), cfg)]
    dist = seed_distribution(sorted(circuits, key=lambda c: c.provenance["prune_config"]["seed"]), config.core_share)
    reached = any(dist["reached"])
    chosen = dist["union"][0] if reached and dist["union"] else None
    stop = None if chosen is not None else ("target not reached" if not reached else "reached with no nodes")
    ok = [i for i, x in enumerate(dist["reached"]) if x]
    return {"kind": ROUND_KIND, "round": r, "settings": settings, "excluded_before": list(excluded),
            "reached": reached, "excluded": chosen, "excluded_frequency": dist["frequency"].get(chosen),
            "stop": stop, "seconds": time.perf_counter() - t0,
            "size_min": min((dist["sizes"][i] for i in ok), default=None),
            "size_median": statistics.median([dist["sizes"][i] for i in ok]) if ok else None,
            "size_max": max((dist["sizes"][i] for i in ok), default=None),
            "loss_mean": statistics.fmean(dist["losses"][i] for i in ok) if ok else None,
            "train_loss_mean": statistics.fmean(dist["train_losses"][i] for i in ok) if ok else None,
            "full_model_loss": circuits[0].full_model_loss, "seeds": dist}


def backup_rows(rounds: list[dict]) -> list[dict[str, Any]]:
    """One table row per round (the round documents without the per-seed detail)."""
    keys = ("round", "excluded", "excluded_frequency", "reached", "size_min", "size_median", "size_max",
            "loss_mean", "train_loss_mean", "full_model_loss", "seconds")
    return [{**{k: d.get(k) for k in keys}, "core": len(d["seeds"]["core"]),
             "jaccard_mean": d["seeds"]["jaccard_mean"]} for d in rounds]


def backup_circuits(run: str | Path, config: PruneConfig, rounds: int, out: str | Path) -> dict[str, Any]:
    """Backup rounds of the task ``config.tasks`` names on the run ``run`` (see the module), at most
    ``rounds`` rounds of ``config.seeds`` seeds each; writes under ``out`` and returns ``backups.json``."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise CircuitlabError(f"--rounds must be an integer of at least 1, got {rounds!r}")
    return backup_rounds(prepare_task(run, config), config, rounds, out)


def backup_rounds(prepared: PreparedTask, config: PruneConfig, rounds: int, out: str | Path) -> dict[str, Any]:
    """``backup_circuits`` on a prepared task (``prepare_task``, or a ``PreparedTask`` built by hand
    with ``run=None``: every seed is then pruned in this process)."""
    out = Path(out)
    settings = _settings(prepared, config, rounds)
    docs = _finished_rounds(out, settings)
    if docs:
        logger.info(f"continuing after {len(docs)} finished round(s) in {out}")
    while len(docs) < rounds and (not docs or docs[-1]["stop"] is None):
        r = len(docs)
        excluded = [d["excluded"] for d in docs]
        logger.info(f"round {r}: {prepared.task.qualname} with {config.seeds} seed(s), {len(excluded)} node(s) excluded")
        doc = _round(prepared, config, r, excluded, settings)
        write_json(_round_path(out, r), doc)
        docs.append(doc)
        logger.info(f"round {r}: {'reached' if doc['reached'] else 'NOT reached'}; sizes {doc['size_min']}-"
                    f"{doc['size_max']}; excluding {doc['excluded']} next ({doc['seconds']:.1f}s)")
    failed = next((d["round"] for d in docs if not d["reached"]), None)
    # Pruning can beat the damaged model: mean-ablating more nodes may undo what an excluded node broke,
    # so the round from which the whole model (excluded nodes ablated, every other node kept) misses the
    # target is a second depth, of the model's redundancy rather than of the search's.
    model_misses = next((d["round"] for d in docs if d["full_model_loss"] > config.target_loss), None)
    summary = {"kind": BACKUPS_KIND, "model": None if prepared.run is None else str(prepared.run), "task": prepared.task.qualname,
               "seeds": config.seeds, "rounds_asked": rounds, "target_loss": config.target_loss,
               "excluded": [d["excluded"] for d in docs if d["excluded"] is not None],
               "failed_round": failed, "depth": failed,
               "depth_at_least": failed if failed is not None else sum(d["reached"] for d in docs),
               "model_misses_round": model_misses,
               "stop": docs[-1]["stop"] or f"{rounds} round(s) done",
               "seconds_per_round": statistics.fmean(d["seconds"] for d in docs),
               "rounds": backup_rows(docs), "settings": settings, "out": str(out)}
    write_json(out / "backups.json", summary)
    plot_backups(summary, out / "backups.png")
    return summary


def plot_backups(summary: dict, path: Path) -> Path:
    """Circuit size (median, min-max over seeds) and mean test loss per round; the failing round marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import write_figure

    rows = summary["rounds"]
    x = [r["round"] for r in rows if r["reached"]]
    med = [r["size_median"] for r in rows if r["reached"]]
    lo = [r["size_median"] - r["size_min"] for r in rows if r["reached"]]
    hi = [r["size_max"] - r["size_median"] for r in rows if r["reached"]]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.errorbar(x, med, yerr=[lo, hi], marker="o", capsize=3, label="circuit nodes (median, min-max over seeds)")
    if summary["failed_round"] is not None:
        ax.axvline(summary["failed_round"], color="red", linestyle="--", label="target not reached")
    ax.set_xlabel("round (= nodes excluded)")
    ax.set_ylabel("nodes")
    ax2 = ax.twinx()
    ax2.plot(x, [r["loss_mean"] for r in rows if r["reached"]], color="gray", marker=".", label="test loss (mean)")
    ax2.plot([r["round"] for r in rows], [r["full_model_loss"] for r in rows], color="gray", linestyle=":",
             label="whole model, excluded nodes ablated (test loss)")
    ax2.axhline(summary["target_loss"], color="gray", linewidth=0.5)
    ax2.set_ylabel("test loss")
    ax.set_title(f"backups: {summary['task']} ({summary['seeds']} seeds)", fontsize=9)
    handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=2, frameon=False)
    fig.subplots_adjust(bottom=0.25)
    write_figure(path, fig)
    plt.close(fig)
    return path
