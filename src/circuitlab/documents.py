"""Reading JSON documents into their attrs records: one converter (cattrs), one line per mismatch.

Every document circuitlab reads back (a circuit file, a prune summary...) has one schema: an attrs
record. ``structure`` turns the parsed JSON into that record, strictly: a string is a string, an
integer an integer (not a bool, not "5"), a number finite (no NaN, no Infinity). Keys the record
does not know are ignored, so documents written by newer versions, with more keys, still read.
A document that does not fit raises one ``CircuitlabError`` naming the file and the key::

    circuit 'pruned/circuits/x.json' does not fit its schema at key 'nodes': expected a list, got 5
"""

from __future__ import annotations

import math
import typing
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

from .errors import CircuitlabError

T = TypeVar("T")


class DocumentError(CircuitlabError):
    """A document of a known kind that does not fit its schema (a reader may skip other kinds of file, not these)."""


def _text(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_shown(value)}")
    return value


def _integer(value: Any, _type: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {_shown(value)}")
    return value


def _number(value: Any, _type: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer past any float
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {_shown(value)}")
    return number


def _flag(value: Any, _type: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_shown(value)}")
    return value


def _mapping(value: Any, _type: Any) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _At(Exception):
    """A problem at one item of a list (``step`` is ``[i]``), on its way up to the key path."""

    def __init__(self, step: str, inner: BaseException):
        super().__init__(step)
        self.step, self.inner = step, inner


def _sequence_hook(t: Any) -> Any:
    """Structure a JSON array (only a list: a string or an object is not a list of anything) into
    ``list[X]``, ``tuple[X, ...]`` or ``tuple[A, B]``, item by item through the same converter."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    fixed = origin is tuple and args and args[-1] is not Ellipsis
    items = args if fixed else (args[:1] or (Any,))

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {_shown(value)}")
        if fixed and len(value) != len(items):
            raise ValueError(f"expected a list of {len(items)} items, got {len(value)}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(converter.structure(item, items[i] if fixed else items[0]))
            except Exception as exc:  # noqa: BLE001 - named with its index by _location
                raise _At(f"[{i}]", exc) from None
        return tuple(out) if origin is tuple else out

    return hook


converter = cattrs.Converter(forbid_extra_keys=False)
for _type, _hook in ((str, _text), (int, _integer), (float, _number), (bool, _flag), (dict, _mapping)):
    converter.register_structure_hook(_type, _hook)
converter.register_structure_hook_factory(lambda t: typing.get_origin(t) in (list, tuple), _sequence_hook)
converter.register_structure_hook_factory(lambda t: typing.get_origin(t) is dict,
                                          lambda t: _mapping)  # objects kept as they are (nested figures)


def _record_hook(cls: type) -> Any:
    """A record comes from a JSON object only (cattrs alone would read a string as a record of defaults)."""
    inner = make_dict_structure_fn(cls, converter)

    def hook(value: Any, _t: Any) -> Any:
        _mapping(value, cls)
        return inner(value, cls)

    return hook


converter.register_structure_hook_factory(attrs.has, _record_hook)


def _location(exc: BaseException, path: str) -> tuple[str, BaseException]:
    """(key path such as ``edges[3][1]``, the innermost error) of cattrs' first problem."""
    if isinstance(exc, _At):
        return _location(exc.inner, path + exc.step)
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        if with_notes:
            sub, note = with_notes[0]
            name = getattr(note, "name", None)
            step = f".{name}" if name is not None else f"[{getattr(note, 'index', '?')}]"
            return _location(sub, path + step)
        if without:
            return _location(without[0], path)
    return path, exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return "the key is missing"
    return str(exc) or type(exc).__name__


def structure(doc: Any, record: type[T], *, what: str, source: str) -> T:
    """``doc`` as ``record``; a mismatch is one ``CircuitlabError`` naming ``what`` ``source`` and the key."""
    if not isinstance(doc, dict):
        raise DocumentError(f"{what} {source!r} does not fit its schema: expected a JSON object, got "
                              f"{type(doc).__name__}")
    try:
        return converter.structure(doc, record)
    except CircuitlabError as exc:  # a record's own validator: its message names the key
        raise DocumentError(f"{what} {source!r} does not fit its schema: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - cattrs groups every problem; the first one is named
        path, inner = _location(exc, "")
        if isinstance(inner, CircuitlabError):
            raise DocumentError(f"{what} {source!r} does not fit its schema: {inner}") from None
        where = f" at key {path.lstrip('.')!r}" if path else ""  # a record's validator names its own key
        raise DocumentError(f"{what} {source!r} does not fit its schema{where}: "
                              f"{' '.join(_reason(inner).split())}") from None
