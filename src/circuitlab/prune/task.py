"""One task of one model under one ``PruneConfig``: the single pruning path.

``prune_task(loaded, task, config)`` is what ``circuitlab prune``/``run``, the bench's cells and the
Python API call. It checks the task's tokens, loads its train and test pairs, evaluates the full
model on the test pairs and judges the verdict (``circuitlab.tasks.verdict``: the 95% Wilson
interval against ``config.min_accuracy``), swaps in the nonsense pairs for that control, encodes the
pairs, computes the ablation values, builds the circuit's provenance and runs the mask search
(``search.search_circuit``). It returns a ``Circuit``, or a ``Skipped`` record saying why not.

A task whose verdict is ``unsolved`` is skipped; a ``borderline`` one is pruned and its circuit
flagged (``provenance["solved"]["verdict"]``). ``prepare_task`` is everything before the search:
``prune.pipeline`` runs it in the parent process and the search in worker processes
(``prune.parallel``), so parallel and sequential pruning take the same steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from ..config import PruneConfig
from ..errors import CircuitlabError, PluginError
from ..log import logger
from .circuit import Circuit
from .search import TaskData, search_circuit


@attrs.frozen(kw_only=True)
class LoadedModel:
    """A run's model loaded once for pruning: the GPT, its tokenizer, the run's ``RunInfo`` and the device."""

    model: Any = attrs.field(repr=False)
    tokenizer: Any = attrs.field(repr=False)
    info: Any  # circuitlab.train.runs.RunInfo
    device: Any

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu") -> LoadedModel:
        """Load the run folder ``run`` onto ``device`` (a bad device name is one line)."""
        from ..train.runs import load_model

        dev = torch_device(device)
        model, tok, info = load_model(run, device=dev, need_tokenizer=True)
        return cls(model=model, tokenizer=tok, info=info, device=dev)


def torch_device(name: str):
    """``name`` as a torch device, or one line saying what to pass instead."""
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise CircuitlabError(f"--device {name!r} is not a torch device ({exc}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CircuitlabError(f"--device {name!r}: CUDA is not available here; use --device cpu")
    return dev


@attrs.frozen(kw_only=True)
class Skipped:
    """A task that was not pruned: which one, the verdict on its full model (None when the model was
    never evaluated on it), why, and the full model's test figures when it was."""

    task: str
    suite: str
    verdict: str | None
    reason: str
    accuracy: float | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    loss: float | None = None

    @property
    def qualname(self) -> str:
        return f"{self.suite}:{self.task}"

    def to_json(self) -> dict[str, Any]:
        """The entry of a prune summary's ``skipped`` list."""
        doc: dict[str, Any] = {"task": self.task, "suite": self.suite, "accuracy": self.accuracy}
        if self.verdict is not None:
            doc.update(accuracy_low=self.accuracy_low, accuracy_high=self.accuracy_high, loss=self.loss,
                       verdict=self.verdict)
        return {**doc, "reason": self.reason}


def solved_record(full: dict, config: PruneConfig) -> dict:
    """How the task's full model did on the real test pairs, and the verdict against ``min_accuracy``."""
    real = full.get("real_task") or full
    return {"accuracy": real["accuracy"], "low": real["accuracy_low"], "high": real["accuracy_high"],
            "n_prompts": real["n_prompts"], "threshold": config.min_accuracy, "verdict": full["verdict"],
            "interval": "95% Wilson"}


def full_model_verdict(loaded: LoadedModel, test_pairs, threshold: float) -> dict:
    """The full model's figures on the real test pairs (``circuitlab.tasks.evaluate``) and their
    ``verdict`` against ``threshold``: the one rule for "solved", in ``prune`` and in the bench."""
    from ..tasks import evaluate, verdict

    full = evaluate(loaded.model, loaded.tokenizer, list(test_pairs), device=loaded.device)
    full["verdict"] = verdict(full["accuracy_low"], full["accuracy_high"], threshold)
    return full


def _pairs(loaded: LoadedModel, task, config: PruneConfig, context) -> tuple[tuple, tuple] | Skipped:
    """The task's usable train and test pairs, or why there are none."""
    from ..tasks import check_tokens, load_pairs

    tok = loaded.tokenizer
    try:
        check = check_tokens(task, tok)
        if not check.usable:
            return _skip(task, f"unusable with this tokenizer: {check.problem}")
        train_pairs = check_tokens(load_pairs(task, "train", config.n_train, context), tok).pairs
        test_pairs = check_tokens(load_pairs(task, "test", config.n_test, context), tok).pairs
    except PluginError as exc:  # the task's generator (a plugin suite's code) failed: skip it, prune the rest
        logger.warning(f"circuitlab: {exc}")
        return _skip(task, str(exc))
    if not train_pairs or not test_pairs:
        return _skip(task, "no usable train or test pairs")
    return tuple(train_pairs), tuple(test_pairs)


def _skip(task, reason: str, full: dict | None = None) -> Skipped:
    logger.info(f"skip {task.qualname}: {reason}")
    figures = {} if full is None else {"verdict": full["verdict"], "accuracy": full["accuracy"],
                                       "accuracy_low": full["accuracy_low"], "accuracy_high": full["accuracy_high"],
                                       "loss": full["loss"]}
    return Skipped(task=task.name, suite=task.suite, reason=reason, **{"verdict": None, **figures})


@attrs.frozen(kw_only=True)
class Judged:
    """A task the full model solves (or nearly): its usable pairs and the full model's test figures
    (``verdict``: ``solved`` or ``borderline``)."""

    train_pairs: tuple
    test_pairs: tuple
    full: dict


def judge_task(loaded: LoadedModel, task, config: PruneConfig, context) -> Judged | Skipped:
    """The first step of ``prune_task``: the task's pairs and the verdict on its full model. The bench
    calls it to choose a model's tasks, so ``run`` and ``bench`` prune the same ones."""
    from ..tasks import UNSOLVED

    pairs = _pairs(loaded, task, config, context)
    if isinstance(pairs, Skipped):
        return pairs
    full = full_model_verdict(loaded, pairs[1], config.min_accuracy)
    if full["verdict"] == UNSOLVED:  # borderline tasks are pruned and flagged, not dropped (docs/training.md)
        return _skip(task, f"full-model test accuracy {full['accuracy']:.3f} (95% interval {full['accuracy_low']:.3f}-"
                           f"{full['accuracy_high']:.3f}) is below {config.min_accuracy:g}", full)
    return Judged(train_pairs=pairs[0], test_pairs=pairs[1], full=full)


def prepare_task(loaded: LoadedModel, task, config: PruneConfig, *, context=None, values=None,
                 extra_provenance: dict | None = None, announce: bool = True) -> TaskData | Skipped:
    """Everything ``prune_task`` does before the mask search: the pairs, the full model's verdict,
    the nonsense control, encoding, ablation values and the circuit's provenance. ``announce``: log
    the task's "prune ..." progress line (``circuitlab backups`` logs its rounds instead).

    ``context``: the run's task context (``circuitlab.tasks.task_context_for_run``; built when None).
    ``values``: ablation values already computed for this model (``mean``/``zero``: the same for every
    task); ``task_mean`` values are always the task's own. ``extra_provenance`` is added to the
    circuit's provenance (``train_config`` for ``run``, ``bench_cell`` for a bench cell).
    """
    from ..machine import machine_provenance
    from ..provenance import run_fields
    from ..tasks import (
        encode_pairs,
        nonsense_pairs,
        nonsense_seed,
        pairs_source,
        task_context_for_run,
    )
    from .ablation import ablation_values

    info = loaded.info
    if context is None:
        context = task_context_for_run(info, config.mine_from)
    judged = judge_task(loaded, task, config, context)
    if isinstance(judged, Skipped):
        return judged
    train_pairs, test_pairs, full = judged.train_pairs, judged.test_pairs, judged.full
    if config.nonsense:
        train_pairs = tuple(nonsense_pairs(train_pairs, nonsense_seed(task.qualname)))  # one rule for both splits
        test_pairs = tuple(nonsense_pairs(test_pairs, nonsense_seed(task.qualname)))
        full = {**full_model_verdict(loaded, test_pairs, config.min_accuracy), "real_task": full,
                "verdict": full["verdict"]}
    if announce:
        logger.info(f"prune {task.qualname} ({len(train_pairs)} train / {len(test_pairs)} test pairs, "
                    f"full model: loss {full['loss']:.3f}, accuracy {full['accuracy']:.3f})")
    n_ctx = info.model.n_ctx
    train = encode_pairs(list(train_pairs), loaded.tokenizer, max_len=n_ctx)
    test = encode_pairs(list(test_pairs), loaded.tokenizer, max_len=n_ctx)
    if values is None or config.ablation == "task_mean":
        values = ablation_values(loaded.model, loaded.tokenizer, info, config.ablation, device=loaded.device,
                                 task_batch=train)
    provenance = {**run_fields(info), "task": task.qualname, "task_description": task.description,
                  "pairs": pairs_source(task, context), "n_train_pairs": len(train_pairs),
                  "n_test_pairs": len(test_pairs), "ablation": config.ablation, "nonsense": config.nonsense,
                  "solved": solved_record(full, config), "machine": machine_provenance(),
                  **(extra_provenance or {})}
    return TaskData(train=train, test=test, values=values, task=task.name, suite=task.suite, provenance=provenance)


def prune_task(loaded: LoadedModel, task, config: PruneConfig | None = None, *, context=None, values=None,
               extra_provenance: dict | None = None, progress: bool = False) -> Circuit | Skipped:
    """Prune one task (a ``circuitlab.tasks.Task``) of one loaded model under ``config``.

    Returns the ``Circuit``, or a ``Skipped`` record when the task's tokens or pairs are unusable or
    the full model does not solve it (verdict ``unsolved``). ``context``, ``values`` and
    ``extra_provenance`` as for ``prepare_task``.
    """
    config = config or PruneConfig()
    data = prepare_task(loaded, task, config, context=context, values=values, extra_provenance=extra_provenance)
    if isinstance(data, Skipped):
        return data
    return search_circuit(loaded.model, data, config, progress=progress)
