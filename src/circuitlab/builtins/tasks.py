"""Built-in task suites: ``python`` (the paper's tasks, from templates) and ``mined`` (real held-out code).

Registered through the same hook as third-party suites. The generator modules are imported inside
the factories, and neither imports torch.
"""

from __future__ import annotations

from circuitlab import hookimpl


def python_suite(context=None):
    """The paper's Python tasks, generated from templates (quotes, brackets, loops, ...)."""
    from .tasks_python import PythonSuite

    return PythonSuite(context)


def mined_suite(context=None):
    """Tasks cut from held-out files of the real corpus (closing quotes and brackets)."""
    from .tasks_mined import MinedSuite

    return MinedSuite(context)


@hookimpl
def register_task_suites(register):
    register("python", python_suite)
    register("mined", mined_suite)
