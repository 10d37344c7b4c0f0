"""Circuit pruning (paper-spec §3): node ablation, mask search and bisection, edges, circuit records.

Modules:
- ``ablation``: node means over corpus tokens (cached in the run folder), the ablation hook;
- ``edges``: edge counting and edge lists between kept nodes;
- ``search``: mask optimisation, ranking, bisection to a target loss, calibration (``prune_task``);
- ``circuit``: the ``Circuit`` record, its JSON form and the validations.

Nothing here is imported by ``circuitlab --help``; torch is imported inside these modules.
"""
