"""Built-in pruning objectives for ``circuitlab prune --objective NAME``.

A factory takes no arguments and returns ``objective(logits, target, contrast, reference_logits)``:
last-position logits (N, vocab) of the pruned and unpruned model, right and wrong token ids (N,);
it returns a scalar to minimise (``circuitlab.plugins.protocols.PruningObjective``). Whatever the
objective, the target loss and the reported loss are the task loss (binary CE per prompt,
``circuitlab.tasks.task_loss``).
"""

from __future__ import annotations

from circuitlab import hookimpl


def binary_ce():
    """The paper's: binary cross-entropy over the two candidate tokens, mean over prompts."""
    from circuitlab.tasks import task_loss

    def objective(logits, target, contrast, reference_logits):
        return task_loss(logits, target, contrast)

    return objective


def kl():
    """KL(unpruned || pruned) of the next-token distribution at the last position, mean over prompts."""
    import torch.nn.functional as F

    def objective(logits, target, contrast, reference_logits):
        ref = F.log_softmax(reference_logits.float(), dim=-1)
        cur = F.log_softmax(logits.float(), dim=-1)
        return F.kl_div(cur, ref, log_target=True, reduction="batchmean")

    return objective


def logit_diff():
    """Shortfall of the right-minus-wrong logit difference against the unpruned model's, in units of its mean size."""

    from circuitlab.tasks import logit_diff as diff

    def objective(logits, target, contrast, reference_logits):
        ref = diff(reference_logits, target, contrast)
        # Normalised by the unpruned model's mean |difference|, so the objective is O(1) like binary_ce
        # and one penalty coefficient serves both. 0 at the unpruned model, negative when the circuit beats it.
        return (ref - diff(logits, target, contrast)).mean() / ref.abs().mean().clamp(min=1e-3)

    return objective


@hookimpl
def register_pruning_objectives(register):
    register("binary_ce", binary_ce)
    register("kl", kl)
    register("logit_diff", logit_diff)
