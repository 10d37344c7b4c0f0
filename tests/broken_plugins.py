"""Deliberately broken plugins, installed as real distributions (a dist-info folder with an
``entry_points.txt`` on ``sys.path``/``PYTHONPATH``) by the tests of ``test_plugin_errors.py``."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install(root: Path, dist: str, module: str, source: str, version: str = "0.3") -> None:
    """A real installed distribution: ``module.py`` plus ``DIST-VERSION.dist-info`` with a circuitlab entry point."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[circuitlab]\n{dist} = {module}\n")


#: Each failure a plugin can cause while it is imported or registered: dist name -> module source.
LOAD_TIME = {
    "circuitlab-importerror": "import not_a_real_module_xyz\n",
    "circuitlab-exits": "import sys\nsys.exit(3)\n",
    "circuitlab-raisinghook": """
        from circuitlab import hookimpl

        @hookimpl
        def register_sparsity_schedules(register):
            raise RuntimeError("boom in hook")
    """,
    "circuitlab-badname": """
        from circuitlab import hookimpl

        class Half:
            '''Keeps half.'''

        @hookimpl
        def register_sparsity_schedules(register):
            register("123", Half)
            register("half_ok", Half)
    """,
    "circuitlab-shadow": """
        from circuitlab import hookimpl

        class MyTopK:
            '''A second topk.'''

        @hookimpl
        def register_sparsity_schedules(register):
            register("topk", MyTopK)
    """,
    "circuitlab-twice": """
        from circuitlab import hookimpl

        class A:
            '''One.'''

        @hookimpl
        def register_mask_parameterizations(register):
            register("twin", A)
            register("twin", A)
    """,
    "circuitlab-future": """
        CIRCUITLAB_PLUGIN_API = 99
        from circuitlab import hookimpl

        @hookimpl
        def register_pruning_objectives(register):
            register("from_the_future", lambda: None)
    """,
    "circuitlab-clash-a": """
        from circuitlab import hookimpl

        def objective_factory():
            '''Clash A.'''

        @hookimpl
        def register_pruning_objectives(register):
            register("clash", objective_factory)
    """,
    "circuitlab-clash-b": """
        from circuitlab import hookimpl

        def objective_factory():
            '''Clash B.'''

        @hookimpl
        def register_pruning_objectives(register):
            register("clash", objective_factory)
    """,
}

#: One plugin ("circuitlab-dist") whose every registration breaks one run-time contract.
RUN_TIME = """
    import random

    from circuitlab import hookimpl
    from circuitlab.sparsity import nonzero_densities
    from circuitlab.tasks import PromptPair, Task


    class Fixed:
        '''Base: dense, stateless.'''

        def __init__(self, config):
            self.config = config

        def density_at(self, step):
            return 1.0

        def apply(self, model, step):
            pass

        def densities(self, model):
            return nonzero_densities(model)

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass


    class ZeroDensity(Fixed):
        def density_at(self, step):
            return 0.0


    class RaisingApply(Fixed):
        def apply(self, model, step):
            raise ValueError("apply exploded")


    class ListState(Fixed):
        def state_dict(self):
            return {"masks": [1, 2, 3]}


    class Rising(Fixed):
        '''density_at increases: 0.5 then 1.'''

        def density_at(self, step):
            return 0.5 if step < 5 else 1.0


    class Mask:
        '''A plain sigmoid mask; subclasses break one member each.'''

        def __init__(self, num_nodes, generator=None):
            import torch

            self.n = num_nodes
            self.logit = torch.ones(num_nodes, requires_grad=True)

        def parameters(self):
            return [self.logit]

        def gate(self):
            import torch

            return torch.sigmoid(self.logit)

        def penalty(self):
            return self.gate().sum()

        def scores(self):
            return self.logit.detach().clone()

        def after_step(self, progress):
            pass


    class WrongGate(Mask):
        def gate(self):
            return super().gate()[:-1]


    class VectorPenalty(Mask):
        def penalty(self):
            return self.gate()


    def vector_objective():
        '''Returns one loss per prompt instead of their mean.'''
        from circuitlab.tasks import binary_ce

        return lambda logits, target, contrast, reference: binary_ce(logits, target, contrast)


    def detached_objective():
        from circuitlab.tasks import task_loss

        def objective(logits, target, contrast, reference):
            import torch

            return torch.tensor(float(task_loss(logits, target, contrast)))

        return objective


    def raising_suite(context):
        raise KeyError("no such corpus")


    class DuplicateSuite:
        def __init__(self, context):
            pass

        def tasks(self):
            gen = lambda n, seed: []  # noqa: E731
            return [Task(name="same", description="one", generate=gen), Task(name="same", description="two", generate=gen)]


    def _few(n, seed):
        rng = random.Random(seed)
        return [PromptPair(prompt_a=f"    for {v}", prompt_b=f"    while {v}", token_a=" in", token_b=":\\n")
                for v in (rng.choice("xyzw") for _ in range(n))]


    class FewPairs:
        '''Only four distinct pairs: the standard sets cannot be filled.'''

        def __init__(self, context):
            pass

        def tasks(self):
            return [Task(name="few", description="for vs while, four names", generate=_few)]


    class ExitingDensity(Fixed):
        def density_at(self, step):
            raise SystemExit(6)


    class ExitingGate(Mask):
        def gate(self):
            raise SystemExit(8)


    class ExitingLr(Mask):
        @property
        def lr(self):
            raise SystemExit(9)


    class ExitingMaskFactory(Mask):
        def __init__(self, num_nodes, generator=None):
            import sys

            sys.exit("no mask today")


    def exiting_objective():
        def objective(logits, target, contrast, reference):
            raise SystemExit(7)

        return objective


    def _exits(n, seed):
        raise SystemExit(4)


    class ExitingSuite:
        def __init__(self, context):
            pass

        def tasks(self):
            return [Task(name="exits", description="its generator calls sys.exit", generate=_exits)]


    @hookimpl
    def register_sparsity_schedules(register):
        register("exiting_density", ExitingDensity)
        register("zero_density", ZeroDensity)
        register("raising_apply", RaisingApply)
        register("list_state", ListState)
        register("rising", Rising)


    @hookimpl
    def register_mask_parameterizations(register):
        register("wrong_gate", WrongGate)
        register("vector_penalty", VectorPenalty)
        register("exiting_gate", ExitingGate)
        register("exiting_factory", ExitingMaskFactory)
        register("exiting_lr", ExitingLr)


    @hookimpl
    def register_pruning_objectives(register):
        register("vector", vector_objective)
        register("detached", detached_objective)
        register("exiting", exiting_objective)


    @hookimpl
    def register_task_suites(register):
        register("raising", raising_suite)
        register("duplicates", DuplicateSuite)
        register("fewpairs", FewPairs)
        register("exiting", ExitingSuite)
"""

#: A plugin that takes its time to import (``CIRCUITLAB_TEST_IMPORT_SECONDS``, default 2 s), then works.
SLOW = """
    import os
    import time

    from circuitlab import hookimpl

    time.sleep(float(os.environ.get("CIRCUITLAB_TEST_IMPORT_SECONDS", "2")))


    class Patient:
        '''Dense, after a wait.'''


    @hookimpl
    def register_sparsity_schedules(register):
        register("patient", Patient)
"""
