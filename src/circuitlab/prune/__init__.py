"""The prune layer (Gao et al. 2025, §2.2, A.5): node ablation, mask search and bisection, edges, circuit records.

Modules:
- ``ablation``: node means over corpus tokens (cached in the run folder), the ablation hook;
- ``evaluator``: masked forward passes that return last-position logits;
- ``search``: mask optimisation, ranking, bisection to a target loss, calibration (``prune_task``);
- ``edges``: edge counting and edge lists between kept nodes;
- ``circuit``: the ``Circuit`` record, its JSON form and the validations;
- ``circuit_file``: a ``Circuit`` back from its JSON file (``Circuit.load``);
- ``circuit_tables``: a ``Circuit`` as pandas tables and a networkx graph;
- ``pipeline``: ``prune_model(run, PruneConfig, out)``, every selected task of one run.

It takes a ``PruneConfig`` and returns ``Circuit`` records; it never imports the store
(``circuitlab.jobs`` joins the two). torch is imported inside these modules' functions.
"""


from .. import _callable_module  # noqa: E402  (circuitlab.prune(...) is the API function: docs/api.md)

_callable_module(__name__)
