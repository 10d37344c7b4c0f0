"""Checks of installed plugins by registered name: what ``circuitlab plugins --check`` runs."""

from __future__ import annotations

from collections.abc import Callable

from .. import plugins
from ..errors import UnknownNameError
from .masks import check_pruner
from .objectives import check_objective
from .report import CheckReport
from .schedules import check_schedule
from .suites import check_suite

#: The check function of each plugin kind.
CHECKS: dict[str, Callable[..., CheckReport]] = {
    "sparsity": check_schedule, "pruner": check_pruner, "objective": check_objective, "suite": check_suite,
}


def resolve(spec: str) -> list[plugins.Entry]:
    """``NAME`` (every kind that has it), ``DIST:NAME`` (``circuitlab-example:margin``), ``KIND:NAME``
    (``sparsity:topk``, ``objective:circuitlab-example:margin``), or ``all`` (every usable entry)."""
    registry = plugins.get_registry()
    if spec == "all":
        return [e for k in plugins.KINDS for e in sorted(registry.all_entries(k), key=registry.address)]
    head, sep, rest = spec.partition(":")
    if sep and head in plugins.KINDS:
        return [registry.get(head, rest)]
    qualifier, name = plugins.split_qualified(spec)
    found = [registry.get(k, spec) for k in plugins.KINDS
             if (name in registry.entries[k] if qualifier is None else spec_in(registry, k, spec))]
    if not found:
        for k in plugins.KINDS:  # a refused or unusable name: its error names both registrations
            if (k, name) in registry.conflicts or (qualifier and (k, f"{qualifier}:{name}") in registry.repeated):
                registry.get(k, spec)
        every = {n for k in plugins.KINDS for n in [*registry.names(k), *registry.qualified[k]]}
        raise UnknownNameError("plugin name", spec, every, "Names come from 'circuitlab plugins' (NAME, DIST:NAME or "
                               "KIND:NAME, e.g. sparsity:topk); 'all' checks all.")
    return found


def spec_in(registry: plugins.Registry, kind: str, qualified: str) -> bool:
    """Whether ``DIST:NAME`` is a usable entry of ``kind``."""
    qualifier, name = plugins.split_qualified(qualified)
    return f"{qualifier}:{name}" in registry.qualified[kind]


def check_registered(spec: str) -> list[CheckReport]:
    """Run the contract checks of every registered entry ``spec`` names (see ``resolve``)."""
    return [CHECKS[entry.kind](entry.factory, entry=entry, raise_on_failure=False) for entry in resolve(spec)]
