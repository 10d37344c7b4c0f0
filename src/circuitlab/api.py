"""The Python API: what a notebook needs, on the same functions the command line runs (docs/api.md).

    import circuitlab

    m = circuitlab.load("runs/small-topk")              # model, tokenizer and run info
    circuitlab.tasks("python", model=m)                 # the tasks, as --tasks selects them
    c = circuitlab.prune(m, "python:if_equals", pruner="heaviside", steps=200)
    c                                                   # in Jupyter: the circuit page of 'circuitlab view'
    c.nodes, c.edges, c.to_networkx(), c.save("if_equals.json")
    store = circuitlab.record(m, "acts.zarr", tasks="python:if_equals")
    circuitlab.compare(store, c, other)                 # node and edge Jaccard, activation statistics
    s = circuitlab.seeds(m, "python:if_equals", n=5)    # five pruning seeds: core, union, Jaccard
    circuitlab.interchange(m, c)                        # patch the circuit across each pair's prompts
    circuitlab.backups(m, "python:if_equals", "backups/", seeds=5, rounds=10)
    circuitlab.track(m, "python:if_equals", "track/")   # circuits at every kept checkpoint

``circuitlab.tasks``, ``circuitlab.prune`` and ``circuitlab.compare`` are also the modules of those names;
calling one calls the function here (``circuitlab._ApiModule``). This module sits at the top of the
import layers, beside ``circuitlab.cli``: it may use every layer, and none uses it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

# circuitlab.tasks, .prune and .compare are loaded with the API: calling one of them calls the function here.
from . import compare as _compare_module  # noqa: F401
from . import prune as _prune_module  # noqa: F401
from . import tasks as _tasks_module  # noqa: F401
from . import view  # noqa: F401  (installs the page a Circuit shows in Jupyter: prune.circuit.HTML_RENDERER)
from .compare import Comparison
from .config import PruneConfig, RecordConfig
from .errors import CircuitlabError, UnknownNameError
from .prune.circuit import Circuit
from .prune.seeds import SeedCircuits
from .prune.task import LoadedModel as _PruneModel
from .tasks.types import Task
from .train.runs import RunInfo

PathLike = str | os.PathLike


@attrs.frozen(kw_only=True, eq=False)  # one loaded model is equal only to itself
class LoadedModel(_PruneModel):
    """A finished run folder in memory: the model (eval mode), its tokenizer (None for an imported
    checkpoint without one: logits only), the run's ``RunInfo`` (configs and provenance) and the
    device. The record ``circuitlab.prune.prune_task`` takes, with a notebook's conveniences."""

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def config(self):
        """The model's shape (``circuitlab.config.ModelConfig``)."""
        return self.info.model

    @property
    def num_nodes(self) -> int:
        from .model.nodes import NodeSpace

        return NodeSpace.from_config(self.info.model).num_nodes

    def __repr__(self) -> str:
        c, t = self.info.model, self.info.train
        imported = self.info.provenance.get("imported_from")
        kind = f"imported ({imported.get('format')})" if imported else (
            f"{t.sparsity} density {t.density:g}, {t.steps} steps")
        tok = "tokenizer" if self.tokenizer is not None else "no tokenizer (logits only)"
        return (f"LoadedModel({str(self.path)!r}: {c.n_layer} layers, d_model {c.d_model}, {self.num_nodes} nodes, "
                f"{kind}, {tok}, on {self.device})")


class TaskList(list):
    """The tasks ``circuitlab.tasks`` selected: a list of ``circuitlab.tasks.Task``, shown as a table."""

    def table(self):
        """suite, task and description of each task, as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame({"suite": [t.suite for t in self], "task": [t.name for t in self],
                             "description": [t.description for t in self]})

    @property
    def names(self) -> list[str]:
        """Each task's ``suite:task``, as ``prune`` and ``--tasks`` take it."""
        return [t.qualname for t in self]

    def _repr_html_(self) -> str:
        return self.table().to_html(index=False)


class TaskSkipped(CircuitlabError):
    """``prune`` was asked for a task it does not prune: the full model does not solve it (its accuracy's
    95% Wilson interval lies below ``min_accuracy``), or the tokenizer cannot express it. ``reason`` says
    which; ``record`` is the ``circuitlab.prune.Skipped`` record (the verdict, accuracy and its interval)."""

    def __init__(self, task: str, record: Any):
        self.task = task
        self.record = record
        self.reason = record.reason
        hint = " (pass min_accuracy=0 to prune it anyway)" if record.verdict == "unsolved" else ""
        super().__init__(f"task {task!r} is not pruned: {self.reason}{hint}")


# ----------------------------------------------------------------------------------------------------
# The functions


def load(run: PathLike, *, device: str = "cpu") -> LoadedModel:
    """Load a finished run folder, trained (``circuitlab train``/``run``) or imported (``import-oai``).

    A run without ``tokenizer.json`` loads too (``tokenizer`` is None): its logits are there, and what
    needs text (tasks, pruning, recording) says how to add a tokenizer."""
    from .prune.task import torch_device
    from .train.runs import load_model

    dev = torch_device(device)
    model, tok, info = load_model(run, dev, need_tokenizer=False)
    return LoadedModel(model=model, tokenizer=tok, info=info, device=dev)


def tasks(spec: str | None = None, *, model: LoadedModel | PathLike | None = None,
          mine_from: PathLike | None = None) -> TaskList:
    """The tasks ``spec`` selects, with the syntax of ``--tasks``: None or ``"all"`` (every suite),
    ``"SUITE"`` or ``"SUITE:task,task"``.

    With ``model``, the tasks are built for that run (its tokenizer, and mined tasks cut from its
    corpus' held-out files); without, for the default corpus and tokenizer (the stdlib), as
    ``circuitlab tasks`` lists them. ``mine_from``: cut the mined tasks from this folder of code."""
    from .tasks import check_suite, default_task_context, resolve_tasks, task_context_for_run

    check_suite(spec)
    mine = None if mine_from is None else str(mine_from)
    if model is None:
        context = default_task_context(mine)
    else:
        context = task_context_for_run(_info(model), mine, "mine_from")
    return TaskList(resolve_tasks(spec, context))


def prune(model: LoadedModel | PathLike, task: Task | str, *, pruner: str = "heaviside",
          objective: str = "binary_ce", **settings: Any) -> Circuit:
    """Prune one task of one model to its circuit, as ``circuitlab prune`` does.

    ``task``: a ``Task`` (from ``tasks``) or its name, ``"suite:task"`` (a bare task name works when one
    suite has it). ``settings``: any other field of ``circuitlab.config.PruneConfig`` (``target_loss``,
    ``steps``, ``ablation``, ``min_accuracy``, ``seed`` ...); an unknown one is an error naming the valid
    ones. Raises ``TaskSkipped`` when the full model does not solve the task (pass ``min_accuracy=0``
    to prune it anyway) or its tokenizer cannot express it."""
    loaded, config, resolved = _prune_setup(model, task, pruner, objective, settings)
    result = _prune_task(loaded, resolved, config)
    if not isinstance(result, Circuit):
        raise TaskSkipped(resolved.qualname, result)
    return result


def record(model: LoadedModel | PathLike, out: PathLike, *, overwrite: bool = False, **settings: Any) -> Path:
    """Record an activation store of the model at ``out`` (``circuitlab record``; docs/store.md) and
    return its path. ``settings``: fields of ``circuitlab.config.RecordConfig`` (``tasks``, ``pairs``,
    ``splits``, ``corpus_windows``, ``window``, ``seed``, ``precision``, ``codec``). An existing store
    is re-recorded only with ``overwrite=True`` (its method results are kept)."""
    from .store import record_run

    config = _record(RecordConfig, "record", {}, settings)
    return record_run(out, _info(model), config, overwrite=overwrite)


def compare(store: PathLike, *circuits: Circuit, overwrite: bool = False) -> Comparison:
    """Compare the methods stored in an activation store (``circuitlab compare STORE``).

    Each circuit given is first added to the store under its method's label (``heaviside``,
    ``sigmoid+kl``), as ``circuitlab prune --store`` adds it; a store that does not exist yet is recorded
    for the circuits' run with ``record``'s defaults. A method that already has a result for the task is
    an error unless ``overwrite=True``."""
    from .compare import compare_store

    labels = [(_label(c), c.key) for c in circuits]
    twice = sorted({f"{m} on {t}" for m, t in labels if labels.count((m, t)) > 1})
    if twice:
        raise CircuitlabError(f"two circuits of one method and task ({', '.join(twice)}); a store holds one "
                              "result per method and task: compare them in two stores")
    for c in circuits:
        _add_circuit(Path(store), c, overwrite)
    return Comparison(compare_store(store))


def seeds(model: LoadedModel | PathLike, task: Task | str, *, n: int = 5, pruner: str = "heaviside",
          objective: str = "binary_ce", **settings: Any) -> SeedCircuits:
    """Prune one task with ``n`` pruning seeds (``seed``, ``seed + 1`` ...), as ``circuitlab prune --seeds N``
    does, in this process. Returns a ``SeedCircuits``: ``.circuits`` (seed order), ``.circuit`` (the first
    seed's) and ``.distribution`` (per-node frequency, the core kept in at least ``core_share`` of the
    seeds, the union, sizes and pairwise Jaccard: the circuit JSON's ``"seeds"``). ``settings`` as for
    ``prune``. Raises ``TaskSkipped`` as ``prune`` does."""
    from .prune.seeds import prune_seeds
    from .prune.task import Skipped, prepare_task
    from .tasks import task_context_for_run

    loaded, config, resolved = _prune_setup(model, task, pruner, objective, {**settings, "seeds": n})
    context = task_context_for_run(loaded.info, config.mine_from, "mine_from")
    if loaded.tokenizer is None:
        loaded = attrs.evolve(loaded, tokenizer=context.tokenizer)
    data = prepare_task(loaded, resolved, config, context=context)
    if isinstance(data, Skipped):
        raise TaskSkipped(resolved.qualname, data)
    with _threads(config):
        return prune_seeds(loaded.model, data.train, data.test, data.values, config,
                           task=f"{data.suite}:{data.task}" if data.suite else data.task, provenance=data.provenance)


def interchange(model: LoadedModel | PathLike, circuit: Circuit, *, draws: int = 3) -> dict[str, Any]:
    """Interchange figures of a circuit on its task's test pairs (``circuitlab interchange``): patch the
    circuit's nodes from each pair's other prompt and report how often the prediction follows
    (``accuracy``) and the mean logit-difference shift, for the circuit and for ``draws`` random node
    sets of its size. The circuit must come from this model."""
    from .prune.interchange import circuit_interchange

    return circuit_interchange(circuit.to_json(), _info(model).path, draws=draws)


def backups(model: LoadedModel | PathLike, task: Task | str, out: PathLike, *, seeds: int = 5, rounds: int = 10,
            pruner: str = "heaviside", objective: str = "binary_ce", **settings: Any) -> dict[str, Any]:
    """Backup circuits (``circuitlab backups``): each round prunes the task with ``seeds`` seeds, then
    ablates the node kept most often from then on, until the target is missed or ``rounds`` rounds
    pass. Writes under ``out`` (a rerun continues) and returns the ``backups.json`` document: per
    round the excluded node, sizes and losses, and the backup depth."""
    from .outputs import guard_output
    from .prune.backups import backup_circuits

    loaded, config, resolved = _prune_setup(model, task, pruner, objective, {**settings, "seeds": seeds})
    out = Path(out)
    guard_output(out, "backups", inputs=(loaded.info.path, config.mine_from))
    with _threads(config):
        return backup_circuits(loaded.info.path, attrs.evolve(config, tasks=resolved.qualname), rounds, out)


def track(model: LoadedModel | PathLike, tasks: str, out: PathLike, *, pruner: str = "heaviside",
          objective: str = "binary_ce", **settings: Any) -> dict[str, Any]:
    """Circuits over training (``circuitlab prune --checkpoints``): prune ``tasks`` (``--tasks`` syntax)
    at every checkpoint the run kept (``train --keep-checkpoints``) and at the final model. Writes under
    ``out`` and returns the track document: per task and checkpoint, validation loss, full-model
    accuracy, circuit size and loss, and the Jaccard with the final circuit."""
    from .outputs import guard_output
    from .prune.track import track_circuits

    info = _info(model)
    config = _record(PruneConfig, "track", {"pruner": pruner, "objective": objective, "tasks": tasks}, settings)
    out = Path(out)
    guard_output(out, "track", inputs=(info.path, config.mine_from))
    return track_circuits(info.path, config, out)


# ----------------------------------------------------------------------------------------------------
# Internals


def _prune_setup(model: LoadedModel | PathLike, task: Task | str, pruner: str, objective: str,
                 settings: dict) -> tuple[LoadedModel, PruneConfig, Task]:
    """The loaded model, the prune settings and the resolved task of ``prune``, ``seeds`` and ``backups``;
    an unknown name or setting fails here, before any work."""
    loaded = model if isinstance(model, LoadedModel) else load(model)
    config = _record(PruneConfig, "prune", {"pruner": pruner, "objective": objective}, settings,
                     refused={"tasks": "the task is prune's second argument",
                              "jobs": "prune() prunes one task in this process",
                              "eval_on": "use 'circuitlab prune --eval-on' for transfer figures",
                              "device": "the model's device is chosen by circuitlab.load(run, device=...)"})
    config = attrs.evolve(config, device=str(loaded.device))
    from . import plugins

    plugins.get("pruner", config.pruner)  # an unknown name: did-you-mean before any work
    plugins.get("objective", config.objective)
    return loaded, config, _task(loaded, task, config)


class _threads:
    """``config.threads`` torch threads inside the block, the caller's number after it."""

    def __init__(self, config: PruneConfig):
        self.threads = config.threads

    def __enter__(self):
        import torch

        self.old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.old)


def _info(model: LoadedModel | PathLike) -> RunInfo:
    from .train.runs import read_run

    return model.info if isinstance(model, LoadedModel) else read_run(model)


def _record(cls, what: str, fixed: dict, settings: dict, refused: dict[str, str] | None = None):
    """``cls(**fixed, **settings)``, with one clear error for a setting ``cls`` does not have."""
    refused = refused or {}
    valid = [a.alias for a in attrs.fields(cls) if a.alias not in fixed and a.alias not in refused]
    for name in settings:
        if name in refused:
            raise CircuitlabError(f"{what}() does not take the setting {name!r}: {refused[name]}")
        if name not in valid:
            raise UnknownNameError(f"{what} setting", name, valid, f"(the fields of circuitlab.config.{cls.__name__})")
    return cls(**fixed, **settings)


def _task(loaded: LoadedModel, task: Task | str, config: PruneConfig) -> Task:
    """The task named (or given) in the model's own task context: its tokenizer, its corpus' files."""
    from .tasks import resolve_tasks, task_context_for_run

    name = task.qualname if isinstance(task, Task) else str(task).strip()
    context = task_context_for_run(loaded.info, config.mine_from, "mine_from")
    if ":" in name:
        return resolve_tasks(name, context)[0]
    every = resolve_tasks(None, context)
    found = [t for t in every if t.name == name]
    if len(found) != 1:
        if found:
            raise CircuitlabError(f"task {name!r} is in several suites ({', '.join(t.qualname for t in found)}); "
                                  "name it as SUITE:TASK")
        raise UnknownNameError("task", name, [t.qualname for t in every])
    return found[0]


def _prune_task(loaded: LoadedModel, task: Task, config: PruneConfig) -> Circuit | Any:
    """One task of one model under one config, through ``circuitlab.prune.prune_task`` (the path of
    ``circuitlab prune``, ``run`` and ``bench``): the ``Circuit``, or its ``Skipped`` record."""

    from .prune.task import prune_task
    from .tasks import task_context_for_run

    context = task_context_for_run(loaded.info, config.mine_from, "mine_from")  # needs the run's tokenizer
    if loaded.tokenizer is None:
        loaded = attrs.evolve(loaded, tokenizer=context.tokenizer)
    with _threads(config):
        return prune_task(loaded, task, config, context=context)


def _label(circuit: Circuit) -> str:
    """The store's label of a circuit's method (``PruneConfig.method``; older files wrote ``pruner/objective``)."""
    pruner, _, objective = circuit.method.partition("/")
    return pruner if objective in ("", "binary_ce") else f"{pruner}+{objective}"


def _add_circuit(store: Path, circuit: Circuit, overwrite: bool) -> None:
    """Add one circuit to the store, as ``circuitlab prune --store`` does (``store.add_circuit``)."""
    from .store import add_circuit

    run = circuit.provenance.get("run")
    if circuit.kept is None or not run:
        raise CircuitlabError(f"circuit of task {circuit.key!r} has no node layout (its run is not here); "
                              "load it with Circuit.load(path, run=RUN)")
    add_circuit(store, circuit, _label(circuit), run=run, overwrite=overwrite)


__all__ = ["Circuit", "Comparison", "LoadedModel", "SeedCircuits", "TaskList", "TaskSkipped", "backups", "compare",
           "interchange", "load", "prune", "record", "seeds", "tasks", "track"]
