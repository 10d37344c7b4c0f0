"""Checks of installed plugins by registered name: what ``circuitlab plugins --check`` runs."""

from __future__ import annotations

from collections.abc import Callable

from .. import plugins
from ..errors import UnknownNameError
from .masks import check_mask
from .objectives import check_objective
from .report import CheckReport
from .schedules import check_schedule
from .suites import check_suite

#: The check function of each plugin kind.
CHECKS: dict[str, Callable[..., CheckReport]] = {
    "sparsity": check_schedule, "pruner": check_mask, "objective": check_objective, "suite": check_suite,
}


def resolve(spec: str) -> list[plugins.Entry]:
    """``NAME`` (every kind that has it), ``KIND:NAME``, or ``all`` (every registered name)."""
    registry = plugins.get_registry()
    if spec == "all":
        return [registry.entries[k][n] for k in plugins.KINDS for n in registry.names(k)]
    kind, sep, name = spec.rpartition(":")
    if sep:
        if kind not in plugins.KINDS:
            raise UnknownNameError("plugin kind", kind, plugins.KINDS, "Use KIND:NAME, e.g. sparsity:topk.")
        return [registry.get(kind, name)]
    found = [registry.entries[k][name] for k in plugins.KINDS if name in registry.entries[k]]
    if not found:
        for k in plugins.KINDS:  # a conflicting name: its error names both plugins
            if (k, name) in registry.conflicts:
                registry.get(k, name)
        every = {n for k in plugins.KINDS for n in registry.names(k)}
        raise UnknownNameError("plugin name", name, every, "Names come from 'circuitlab plugins'; 'all' checks all.")
    return found


def check_registered(spec: str) -> list[CheckReport]:
    """Run the contract checks of every registered entry ``spec`` names (see ``resolve``)."""
    return [CHECKS[entry.kind](entry.factory, entry=entry, raise_on_failure=False) for entry in resolve(spec)]
