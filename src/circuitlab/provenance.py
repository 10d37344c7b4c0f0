"""Provenance: what a result was made with, in one place.

Every document circuitlab writes (a run's ``config.json``, a circuit, a prune summary, a bench cell)
carries a ``provenance`` object built here: the circuitlab and torch versions, the plugins that took
part (each entry's ``provenance()``: name, distribution, version), the machine
(``circuitlab.machine.machine_provenance``) where it matters, and the fields of the job. ``run_fields``
names the run folder a result was computed from. No torch at import time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .config import config_hash


def build_provenance(*, plugins: Iterable[Any] = (), machine: dict | None = None, **fields: Any) -> dict[str, Any]:
    """The provenance object of a result: versions, ``plugins`` (registry entries, or their
    ``provenance()`` dicts), ``machine`` when given, then ``fields`` in the order given."""
    import torch

    from . import __version__

    out: dict[str, Any] = {"circuitlab_version": __version__, "torch_version": torch.__version__}
    if machine is not None:
        out["machine"] = machine
    out["plugins"] = [p if isinstance(p, dict) else p.provenance() for p in plugins]
    out.update(fields)
    return out


def run_fields(info: Any) -> dict[str, Any]:
    """Which run a result was computed from: its folder, its config hash and its own provenance."""
    return {"run": str(info.path), "run_config_hash": config_hash(info.model, info.train),
            "run_provenance": info.provenance}
