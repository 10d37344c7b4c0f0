"""The bench's result files as records: ``models/ID.json`` (``ModelDocument``) and ``cells/ID.json``
(``CellDocument``).

A worker builds the record and turns it into JSON only when it writes the file (``to_json``); every
reader goes back through the same record (``read_document``, cattrs), so a file that does not fit,
say ``{"status": "done"}`` with no result, is one line naming the file and the key, and counts as not
finished when the bench runs again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs

from ..errors import CircuitlabError
from ..files import read_json
from .plan import Cell

MODEL_KIND = "circuitlab-bench-model"
CELL_KIND = "circuitlab-bench-cell"
#: The statuses of a cell: pruned, or skipped (the reason says why).
CELL_STATUSES = ("done", "skipped")

T = TypeVar("T")
_converter = cattrs.Converter(forbid_extra_keys=False)


@attrs.frozen(kw_only=True)
class TaskFigures:
    """The full model on one spec task: its test figures and the verdict that decides whether it is pruned."""

    usable: bool  # the tokenizer expresses the task and it has train and test pairs
    problem: str | None  # why not, when not usable
    accuracy: float | None
    loss: float | None
    pairs: dict  # where the pairs come from (circuitlab.tasks.pairs_source)
    accuracy_low: float | None = None  # 95% Wilson interval
    accuracy_high: float | None = None
    verdict: str | None = None  # solved, borderline or unsolved against prune.min_accuracy (None: not evaluated)


@attrs.frozen(kw_only=True)
class ModelDocument:
    """``models/ID.json``: one model of the grid, trained (or reused), and its verdict on every task."""

    model_id: str
    group: str
    kind: str  # "trained", or "init" for the random-init control
    preset: str
    sparsity: str
    density: float
    width: int
    train_steps: int
    train_seed: int
    config_hash: str
    twin: str | None
    tasks_key: str
    run: str
    reused: bool
    train_seconds: float
    seconds: float
    val_loss: float | None
    tasks: dict[str, TaskFigures]
    solved: list[str]  # the tasks pruned: verdict solved or borderline (the rule of circuitlab prune)
    train_config: dict
    model_config: dict
    provenance: dict
    worker: str
    borderline: list[str] = attrs.field(factory=list)  # those of ``solved`` whose interval holds the threshold

    def to_json(self) -> dict[str, Any]:
        return _converter.unstructure(self)


def _status(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in CELL_STATUSES:
        raise ValueError(f"status must be one of {', '.join(CELL_STATUSES)}, got {value!r}")


def _kind(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value != CELL_KIND:
        raise ValueError(f"kind must be {CELL_KIND!r}, got {value!r}")


def _done_has_result(instance: CellDocument, attribute: attrs.Attribute, value: Any) -> None:
    if instance.status == "done" and value is None:
        raise ValueError(f"a done cell needs {attribute.name}")


@attrs.frozen(kw_only=True)
class CellDocument:
    """``cells/ID.json``: one pruned (or skipped) cell, its circuit and its faithfulness curves."""

    kind: str = attrs.field(validator=_kind)
    cell_id: str
    cell: Cell
    model: dict  # the model's identifying fields (ModelDocument's, without its tasks)
    prune_config: dict
    status: str = attrs.field(validator=_status)
    method_label: str
    seconds: float
    worker: str
    spec_hash: str
    reason: str | None = None  # why a skipped cell was not pruned
    full_model: dict | None = attrs.field(default=None, validator=_done_has_result)
    result: dict | None = attrs.field(default=None, validator=_done_has_result)
    faithfulness: dict | None = attrs.field(default=None, validator=_done_has_result)
    circuit: dict | None = attrs.field(default=None, validator=_done_has_result)
    provenance: dict | None = attrs.field(default=None, validator=_done_has_result)

    def to_json(self) -> dict[str, Any]:
        doc = _converter.unstructure(self)
        return {k: v for k, v in doc.items() if v is not None or k == "reason"}


def from_json(cls: type[T], data: Any, source: str) -> T:
    """``data`` as a ``cls`` record, or one line naming ``source`` and the first key that does not fit."""
    try:
        return _converter.structure(data, cls)
    except Exception as exc:  # noqa: BLE001 - cattrs groups every problem; the first is named
        first = _problems(exc)[0]
        raise CircuitlabError(f"{source}: not a bench {cls.__name__.removesuffix('Document').lower()} file "
                              f"({first}); delete it and run the bench again") from None


def _problems(exc: Exception) -> list[str]:
    """cattrs' problems as "what at key KEY" (a record's own check: its message)."""
    from cattrs.v import format_exception

    def fmt(e: BaseException, type_: Any) -> str:
        return str(e) if type(e) is ValueError else format_exception(e, type_)

    if not isinstance(exc, cattrs.BaseValidationError):
        return [str(exc)]
    found = cattrs.transform_error(exc, path="$", format_exception=fmt) or [str(exc)]
    return [p.replace(" @ $.", " at key ").removesuffix(" @ $") for p in found]


def read_document(path: Path, cls: type[T]) -> T:
    """The record in the file at ``path`` (one line naming the file and the key when it does not fit)."""
    return from_json(cls, read_json(path, "bench result"), str(path))
