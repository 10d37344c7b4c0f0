"""The tasks layer: prompt pairs with two contrast tokens, the task loss, token checks, the standard
pair sets shipped with the package, task suites from the plugin registry, and evaluation.

Modules: ``types`` (records), ``loss`` (the one logit difference and the task loss), ``tokens``
(token checks, encoding), ``tasksets`` (the shipped JSONL sets), ``suites`` (registry lookups and
contexts) and ``evaluate``. The names below are the public surface plugin authors import from
``circuitlab.tasks``. No torch is imported here.
"""

from ..config import SPLITS
from .controls import nonsense_pairs, nonsense_seed
from .evaluate import BORDERLINE, SOLVED, UNSOLVED, evaluate, verdict, wilson_interval
from .loss import binary_ce, last_logits, logit_diff, loss_and_accuracy, task_accuracy, task_loss
from .suites import (
    check_suite,
    default_task_context,
    mined_context,
    mined_tasks,
    resolve_tasks,
    suite_names,
    suite_tasks,
    task_context_for_run,
)
from .tasksets import (
    TASKSET_KIND,
    TASKSET_VERSION,
    TaskSet,
    load_pairs,
    pairs_source,
    read_taskset,
    standard_pairs,
    taskset_path,
    taskset_root,
    write_taskset,
)
from .tokens import boundary_ok, check_tokens, encode_pairs, single_token_id, token_pieces
from .types import (
    N_TEST,
    N_TRAIN,
    SEED_TEST,
    SEED_TRAIN,
    MineSource,
    PromptPair,
    Task,
    TaskBatch,
    TaskContext,
    TokenCheck,
)

__all__ = [
    "BORDERLINE", "SOLVED", "UNSOLVED", "verdict", "wilson_interval",
    "MineSource", "N_TEST", "N_TRAIN", "SEED_TEST", "SEED_TRAIN", "SPLITS", "TASKSET_KIND", "TASKSET_VERSION", "PromptPair",
    "Task", "TaskBatch", "TaskContext", "TaskSet", "TokenCheck", "binary_ce", "boundary_ok", "check_suite",
    "check_tokens", "default_task_context", "encode_pairs", "evaluate", "last_logits", "load_pairs", "logit_diff",
    "loss_and_accuracy", "mined_context", "mined_tasks", "nonsense_pairs", "nonsense_seed", "pairs_source", "read_taskset", "resolve_tasks", "single_token_id", "standard_pairs",
    "suite_names", "suite_tasks", "task_accuracy", "task_context_for_run", "task_loss", "taskset_path",
    "taskset_root", "token_pieces", "write_taskset",
]


from .. import _callable_module  # noqa: E402  (circuitlab.tasks(...) is the API function: docs/api.md)

_callable_module(__name__)
