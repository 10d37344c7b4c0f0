"""Validators for the job records (``circuitlab.config``): each names the setting as its command-line flag,
so one message serves the command line and the library. No torch here."""

from __future__ import annotations

import math
import os
from typing import Any

import attrs

from .errors import CircuitlabError, UnknownNameError

MAX_SEED = 2**63 - 1
#: Threads or worker processes a setting may ask for, per CPU core: more only adds contention, and a
#: huge count makes OpenMP abort while allocating thread stacks (``--threads 1000000000`` asked for 216 GB).
PARALLEL_PER_CORE = 4


def max_parallel() -> int:
    """The most threads or workers one setting may ask for on this machine: ``PARALLEL_PER_CORE`` x cores."""
    return PARALLEL_PER_CORE * (os.cpu_count() or 1)


def parallel_count_problem(value: int) -> str | None:
    """Why ``value`` threads or workers are too many on this machine (None: fine)."""
    limit = max_parallel()
    if value > limit:
        return (f"must be at most {limit} ({PARALLEL_PER_CORE} per CPU core on this machine, "
                f"{os.cpu_count() or 1} cores)")
    return None



def flag(attribute: attrs.Attribute) -> str:
    """How a message names a setting: its command-line flag, or its JSON key for records read from files."""
    if attribute.metadata.get("json_key"):
        return repr(attribute.name)
    return "--" + attribute.name.replace("_", "-")


def is_bool(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, bool):
        raise CircuitlabError(f"{flag(attribute)} must be true or false, got {value!r}")


def _key(default: Any, *validators: Any) -> Any:
    """A field of a record read from JSON (config.json): messages name the key, not a flag."""
    return attrs.field(default=default, validator=list(validators), metadata={"json_key": True})


def _number(attribute: attrs.Attribute, value: Any, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CircuitlabError(f"{flag(attribute)} must be {expected}, got {value!r}")
    return value


def positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A finite number > 0 (``None`` passes: it means "the default of whatever uses it")."""
    if value is not None and not _number(attribute, value, "a positive number") > 0:
        raise CircuitlabError(f"{flag(attribute)} must be a positive number, got {value!r}")


def at_least(minimum: int):
    """An integer >= ``minimum`` (``None`` passes)."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise CircuitlabError(f"{flag(attribute)} must be an integer, got {value!r}")
        if value < minimum:
            raise CircuitlabError(f"{flag(attribute)} must be at least {minimum}, got {value}")

    return check


def at_most_parallel(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A thread or worker count: an integer >= 1 and at most ``max_parallel()`` (``None`` passes)."""
    at_least(1)(instance, attribute, value)
    problem = None if value is None else parallel_count_problem(value)
    if problem:
        raise CircuitlabError(f"{flag(attribute)} {problem}, got {value}")


def non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not _number(attribute, value, "a finite number >= 0") >= 0:
        raise CircuitlabError(f"{flag(attribute)} must be >= 0, got {value!r}")


def unit_interval(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A fraction in (0, 1]."""
    if value is not None and not 0.0 < _number(attribute, value, "a fraction in (0, 1]") <= 1.0:
        raise CircuitlabError(f"{flag(attribute)} must be in (0, 1], got {value}; pass a fraction such as 0.25")


def closed_unit_interval(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not 0.0 <= _number(attribute, value, "a number in [0, 1]") <= 1.0:
        raise CircuitlabError(f"{flag(attribute)} must be in [0, 1], got {value!r}")


def valid_seed(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    at_least(0)(instance, attribute, value)
    if value > MAX_SEED:
        raise CircuitlabError(f"{flag(attribute)} must be at most 2**63 - 1, got {value}")


def one_of(choices: tuple[str, ...]):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise UnknownNameError(flag(attribute)[2:], str(value), choices)

    return check
