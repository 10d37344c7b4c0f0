"""A benchmark is a file: the TOML spec, read into frozen records and checked on load.

A spec names the model grid (schedules x densities x widths x step budgets x training seeds), the
tasks pinned by the sha256 of their standard pair-set files, the pruning grid (pruners x objectives x
pruning seeds, target loss, ablation) and the controls. Every problem is one line naming the file and
the key (``benchmarks/x.toml: models[1].densities[0]: must be in (0, 1], got 2``). The layout is in
docs/bench.md; ``benchmarks/quick.toml`` is the smallest example.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import attrs

from ..config import ABLATIONS, PRESETS, get_preset, to_dict
from ..errors import CircuitlabError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .spec_checks import Table, at_least, closed_fraction, fraction, name, one_of_names, positive


@attrs.frozen(kw_only=True)
class ModelGroup:
    """One line of the model grid: every combination of its lists is one model."""

    group: str  # label in tables and plots, e.g. "topk" or "dense"
    preset: str  # the shape and budget the lists below vary
    sparsity: str  # a registered sparsity schedule
    densities: tuple[float, ...] = (0.0625,)  # target kept fractions; a dense schedule always trains at 1
    widths: tuple[int | None, ...] = (None,)  # d_model (d_mlp = 4 d_model, heads of 16); None = the preset's
    steps: tuple[int | None, ...] = (None,)  # training step budgets; None = the preset's
    seeds: tuple[int, ...] = (0,)  # training seeds
    lr: float | None = None  # peak learning rate; None = the preset's

    @property
    def is_dense(self) -> bool:
        return self.sparsity == "dense"


@attrs.frozen(kw_only=True)
class PruneGrid:
    """Every (pruner, objective, pruning seed) is pruned on every solved (model, task)."""

    pruners: tuple[str, ...]
    objectives: tuple[str, ...] = ("binary_ce",)
    seeds: tuple[int, ...] = (0,)  # pruning seeds (seed variance: at least 3 in standard and night)
    target_loss: float = 0.15
    ablation: str = "mean"
    min_accuracy: float = 0.9  # a task is "solved" (and pruned) at this full-model test accuracy
    n_train: int = 256
    n_test: int = 128
    steps: int | None = None  # mask steps; None = the pruner's
    lr: float | None = None
    penalty_coef: float | None = None
    batch_pairs: int = 32
    random_draws: int = 3
    mine_from: str | None = None  # folder of .py files the mined tasks are cut from; None = held-out corpus


@attrs.frozen(kw_only=True)
class Controls:
    """Control cells, run with the first pruner, objective and pruning seed on the models in scope."""

    nonsense: bool = True  # the same prompts, answers relabelled by a rule unrelated to the task
    freeze_norm: bool = True  # the final RMSNorm scale fixed to the unpruned model's
    ablations: tuple[str, ...] = ()  # further ablations besides the grid's, e.g. ("zero", "task_mean")
    random_init: bool = True  # the same architecture, untrained, pruned the same way
    groups: tuple[str, ...] | None = None  # model groups that get the controls; None = every group
    first_seed_only: bool = True  # only the first training seed of each model gets the controls
    seeds: int = 1  # control cells use the first `seeds` pruning seeds of the grid


@attrs.frozen(kw_only=True)
class BenchSpec:
    name: str
    description: str
    tasks: dict[str, str]  # task qualname -> sha256 of its standard pair-set file
    models: tuple[ModelGroup, ...]
    prune: PruneGrid
    controls: Controls
    threads: int = 1  # torch threads per cell (and per Dask worker)
    retries: int = 2  # re-runs of a cell whose worker raised; a dead worker's cell is rescheduled anyway
    corpus: str | None = None  # folder of .py files for training; None = the stdlib
    source: str = ""  # the file it was read from

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def spec_hash(self) -> str:
        payload = {k: v for k, v in self.to_dict().items() if k != "source"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------
# Loading


def _model_group(t: Table) -> ModelGroup:
    preset = t.get("preset", str, required=True, check=one_of_names("preset", PRESETS))
    sparsity = t.get("sparsity", str, required=True, check=name)
    group = t.get("group", str, default=sparsity, check=name)
    densities = t.get_list("densities", float, default=(1.0,) if sparsity == "dense" else (0.0625,), check=fraction)
    if sparsity == "dense":
        densities = (1.0,)
    d_head = get_preset(preset).model.d_head

    def width_ok(value: int) -> str | None:
        return None if value >= d_head and value % d_head == 0 else f"must be a multiple of {d_head} (the head size)"

    widths = t.get_list("widths", int, default=(None,), check=width_ok)
    steps = t.get_list("steps", int, default=(None,), check=at_least(1))
    seeds = t.get_list("seeds", int, default=(0,), check=at_least(0))
    lr = t.get("lr", float, default=None, check=positive)
    t.done()
    return ModelGroup(group=group, preset=preset, sparsity=sparsity, densities=densities, widths=widths,
                      steps=steps, seeds=seeds, lr=lr)


def _prune_grid(t: Table) -> PruneGrid:
    grid = PruneGrid(
        pruners=t.get_list("pruners", str, required=True, check=name),
        objectives=t.get_list("objectives", str, default=("binary_ce",), check=name),
        seeds=t.get_list("seeds", int, default=(0,), check=at_least(0)),
        target_loss=t.get("target_loss", float, default=0.15, check=positive),
        ablation=t.get("ablation", str, default="mean", check=one_of_names("ablation", ABLATIONS)),
        min_accuracy=t.get("min_accuracy", float, default=0.9, check=closed_fraction),
        n_train=t.get("n_train", int, default=256, check=at_least(2)),
        n_test=t.get("n_test", int, default=128, check=at_least(2)),
        steps=t.get("steps", int, default=None, check=at_least(1)),
        lr=t.get("lr", float, default=None, check=positive),
        penalty_coef=t.get("penalty_coef", float, default=None, check=positive),
        batch_pairs=t.get("batch_pairs", int, default=32, check=at_least(1)),
        random_draws=t.get("random_draws", int, default=3, check=at_least(1)),
        mine_from=t.get("mine_from", str, default=None),
    )
    t.done()
    return grid


def _controls(t: Table) -> Controls:
    controls = Controls(
        nonsense=t.get("nonsense", bool, default=True),
        freeze_norm=t.get("freeze_norm", bool, default=True),
        ablations=t.get_list("ablations", str, default=(), check=one_of_names("ablation", ABLATIONS)),
        random_init=t.get("random_init", bool, default=True),
        groups=t.get_list("groups", str, default=None, check=name),
        first_seed_only=t.get("first_seed_only", bool, default=True),
        seeds=t.get("seeds", int, default=1, check=at_least(1)),
    )
    t.done()
    return controls


def _tasks(t: Table, mined_hash: str | None) -> dict[str, str]:
    from .pins import check_pins

    pins = {key: t.get(key, str, required=True) for key in t.keys()}
    if not pins:
        raise t.error("", "names no task; add lines like \"python:if_equals\" = \"SHA256\"")
    check_pins(pins, t.error, mined_hash)
    return pins


def _mine_from(grid: PruneGrid, root: Table) -> tuple[PruneGrid, str | None]:
    """``prune.mine_from`` resolved against the spec's folder, and the content hash its mined tasks pin."""
    if grid.mine_from is None:
        return grid, None
    from ..data.corpus import load_code_folder

    folder = Path(grid.mine_from)
    folder = folder if folder.is_absolute() else Path(root.source).parent / folder
    try:
        code = load_code_folder(folder, flag="mine_from")
    except CircuitlabError as exc:
        raise root.error("prune.mine_from", str(exc)) from None
    return attrs.evolve(grid, mine_from=code.root), code.hash


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> BenchSpec:
    """Check a parsed TOML document and build its ``BenchSpec`` (a ``CircuitlabError`` names the key)."""
    root = Table(data, source, "")
    bench = root.table("bench", required=True)
    models_raw = root.get("models", list, required=True)
    if not models_raw:
        raise root.error("models", "must list at least one [[models]] table")
    models = tuple(_model_group(root.item_table("models", i)) for i in range(len(models_raw)))
    groups = [m.group for m in models]
    prune, mined_hash = _mine_from(_prune_grid(root.table("prune", required=True)), root)
    spec = BenchSpec(
        name=bench.get("name", str, required=True, check=name),
        description=bench.get("description", str, default=""),
        threads=bench.get("threads", int, default=1, check=at_least(1)),
        retries=bench.get("retries", int, default=2, check=at_least(0)),
        corpus=bench.get("corpus", str, default=None),
        tasks=_tasks(root.table("tasks", required=True), mined_hash),
        models=models,
        prune=prune,
        controls=_controls(root.table("controls", required=False)),
        source=source,
    )
    bench.done()
    root.done()
    for g in spec.controls.groups or ():
        if g not in groups:
            raise root.error("controls.groups", f"names unknown model group {g!r}; groups: {', '.join(groups)}")
    if spec.corpus is not None and not Path(spec.corpus).is_absolute():
        spec = attrs.evolve(spec, corpus=str((Path(source).parent / spec.corpus).resolve()))
    return spec


def load_spec(path: str | Path) -> BenchSpec:
    """Read and check a spec file; plugin names (pruners, objectives, schedules) are checked too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CircuitlabError(f"benchmark spec {str(path)!r} does not exist; see benchmarks/*.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CircuitlabError(f"benchmark spec {str(path)!r} cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CircuitlabError(f"{path}: not valid TOML ({exc})") from None
    spec = parse_spec(data, str(path))
    _check_plugins(spec)
    return spec


def _check_plugins(spec: BenchSpec) -> None:
    from .. import plugins

    src = spec.source
    for i, m in enumerate(spec.models):
        _named(src, f"models[{i}].sparsity", lambda m=m: plugins.get("sparsity", m.sparsity))
    for key, kind in (("pruners", "pruner"), ("objectives", "objective")):
        for i, value in enumerate(getattr(spec.prune, key)):
            _named(src, f"prune.{key}[{i}]", lambda kind=kind, value=value: plugins.get(kind, value))


def _named(source: str, key: str, lookup) -> None:
    try:
        lookup()
    except CircuitlabError as exc:
        raise CircuitlabError(f"{source}: {key}: {exc}") from None
