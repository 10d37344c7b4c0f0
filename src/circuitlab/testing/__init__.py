"""The plugin author's kit: contract checks for the four plugin kinds, and tiny real components.

``check_schedule``, ``check_pruner`` (or ``check_mask``), ``check_objective`` and ``check_suite`` take the factory a plugin
registers and run that kind's contract (``circuitlab.plugins.protocols``) on a tiny real model in a
few seconds. Each returns a ``CheckReport``; a failed check raises ``PluginCheckError``, an
``AssertionError`` whose message lists every failed check and why::

    from circuitlab.testing import check_schedule
    from my_plugin import MySchedule

    def test_contract():
        check_schedule(MySchedule)

``circuitlab plugins --check NAME`` runs the same checks on an installed plugin. ``Tiny`` builds the
tiny parts (a corpus of real stdlib files, its tokenizer, a ``TrainConfig``, a GPT, a trained run);
installing circuitlab also installs a pytest plugin (``circuitlab.testing.pytest_plugin``) with the
fixtures ``tiny_config``, ``tiny_model``, ``tiny_tokenizer`` and ``tiny_run``. ``MaskBench`` holds
what the mask checks prune: a tiny model, task batches cut from real code, node means, an
``Evaluator`` and the default objective (``MaskBench(tiny).setup()``).

Importing this module does not import torch.
"""

from .masks import MaskBench, check_mask, check_pruner
from .objectives import check_objective
from .registry import CHECKS, check_registered
from .report import CheckReport, CheckResult, PluginCheckError
from .schedules import check_schedule
from .suites import check_suite
from .tiny import TINY_CORPUS_FILES, TINY_MODEL, Tiny

__all__ = ["CHECKS", "TINY_CORPUS_FILES", "TINY_MODEL", "CheckReport", "CheckResult", "MaskBench", "PluginCheckError", "Tiny",
           "check_mask", "check_objective", "check_pruner", "check_registered", "check_schedule", "check_suite"]
