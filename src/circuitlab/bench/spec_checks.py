"""Checked reads of a parsed TOML table: each problem is one ``CircuitlabError`` line naming file and key."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from ..checks import parallel_count_problem
from ..errors import CircuitlabError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]{0,63}$")
_MISSING = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "a table"}

Check = Callable[[Any], "str | None"]  # returns a problem, or None when the value is fine


class Table:
    """One TOML table, read key by key; ``done()`` refuses keys nobody asked for (typos)."""

    def __init__(self, data: Any, source: str, prefix: str):
        if not isinstance(data, dict):
            raise CircuitlabError(f"{source}: {prefix or 'the file'}: must be a table, got {type(data).__name__}")
        self.data, self.source, self.prefix = data, source, prefix
        self.seen: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix and key else (key or self.prefix)

    def error(self, key: str, problem: str) -> CircuitlabError:
        return CircuitlabError(f"{self.source}: {self.key(key) or 'the file'}: {problem}")

    def keys(self) -> list[str]:
        return list(self.data)

    def get(self, key: str, kind: type, *, default: Any = _MISSING, required: bool = False,
            check: Check | None = None) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required or default is _MISSING:
                raise self.error(key, "is missing; add it (see docs/bench.md)")
            return default
        return self._value(key, self.data[key], kind, check)

    def _value(self, key: str, value: Any, kind: type, check: Check | None) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value!r}")
        problem = check(value) if check is not None else None
        if problem:
            raise self.error(key, f"{problem}, got {value!r}")
        return value

    def get_list(self, key: str, kind: type, *, default: Any = _MISSING, required: bool = False,
                 check: Check | None = None) -> Any:
        values = self.get(key, list, default=default, required=required)
        if values is default and key not in self.data:
            return default
        if not values:
            raise self.error(key, "must not be empty")
        out = tuple(self._value(f"{key}[{i}]", v, kind, check) for i, v in enumerate(values))
        if len(set(out)) != len(out):
            raise self.error(key, f"lists a value twice: {list(values)}")
        return out

    def table(self, key: str, *, required: bool) -> Table:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, f"is missing; add a [{self.key(key)}] table (see docs/bench.md)")
            return Table({}, self.source, self.key(key))
        return Table(self.data[key], self.source, self.key(key))

    def item_table(self, key: str, index: int) -> Table:
        return Table(self.data[key][index], self.source, f"{self.key(key)}[{index}]")

    def done(self) -> None:
        extra = [k for k in self.data if k not in self.seen]
        if extra:
            close = difflib.get_close_matches(extra[0], sorted(self.seen), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(self.seen))}"
            raise self.error(extra[0], f"unknown key{hint}")


def name(value: str) -> str | None:
    return None if _NAME.match(value) else "must be a name of letters, digits and _ . + = - (at most 64)"


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def fraction(value: float) -> str | None:
    return None if 0 < value <= 1 else "must be in (0, 1]"


def closed_fraction(value: float) -> str | None:
    return None if 0 <= value <= 1 else "must be in [0, 1]"


def at_least(minimum: int) -> Check:
    def check(value: int) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}"

    return check


def count(minimum: int, maximum: int) -> Check:
    """An integer count in [minimum, maximum]: the bound keeps a typo from asking for days of work or
    memory the machine lacks (the maxima are listed in docs/bench.md)."""

    def check(value: int) -> str | None:
        if value < minimum:
            return f"must be at least {minimum}"
        return None if value <= maximum else f"must be at most {maximum}"

    return check


def parallel(value: int) -> str | None:
    """A thread count: at least 1, at most ``circuitlab.checks.max_parallel()``."""
    return "must be at least 1" if value < 1 else parallel_count_problem(value)


def one_of_names(what: str, choices: Iterable[str]) -> Check:
    choices = tuple(choices)

    def check(value: str) -> str | None:
        if value in choices:
            return None
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {what}{hint}; valid: {', '.join(choices)}"

    return check
