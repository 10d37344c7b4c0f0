"""The prune layer (Gao et al. 2025, §2.2, A.5): node ablation, mask search and bisection, edges, circuit records.

Modules:
- ``ablation``: node means over corpus tokens (cached in the run folder), the ablation hook;
- ``evaluator``: masked forward passes that return last-position logits;
- ``task``: ``prune_task(loaded, task, config)``, the one path that prunes a task: pairs, full-model
  verdict, encoding, ablation values, provenance, then the search; a ``Circuit`` or a ``Skipped``;
- ``search``: mask optimisation, ranking, bisection to a target loss, calibration (``search_circuit``);
- ``edges``: edge counting and edge lists between kept nodes;
- ``circuit``: the ``Circuit`` record, its JSON form and the validations;
- ``circuit_file``: a ``Circuit`` back from its JSON file (``Circuit.load``);
- ``circuit_tables``: a ``Circuit`` as pandas tables and a networkx graph;
- ``pipeline``: ``prune_model(run, PruneConfig, out)``, every selected task of one run.

It takes a ``PruneConfig`` and returns ``Circuit`` records; it never imports the store
(``circuitlab.jobs`` joins the two). torch is imported inside these modules' functions, and this
package's names are imported on first use.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"prune_task": "task", "prepare_task": "task", "LoadedModel": "task", "Skipped": "task",
            "search_circuit": "search", "TaskData": "search", "Circuit": "circuit", "prune_model": "pipeline"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


from .. import _callable_module  # noqa: E402  (circuitlab.prune(...) is the API function: docs/api.md)

_callable_module(__name__)
