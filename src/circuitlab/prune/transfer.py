"""Does a circuit transfer? ``--eval-on DIR`` scores each pruned circuit on its task cut from other code.

A circuit is found on pairs cut from the corpus' held-out files (or from ``--mine-from``). Its task,
cut the same way from another folder of Python files, asks whether those nodes carry the behaviour on
code the search never saw. The circuit keeps its own ablation values (corpus means, zero, or the
means of its train prompts) and calibration, so the only change is the code the prompts come from.
The full model is scored on the same pairs: the gap between the two says whether the circuit
transfers, next to the same gap on the held-out test pairs. Only tasks mined from code change with
the folder; for the others one line says so.
"""

from __future__ import annotations

from typing import Any

from ..config import PruneConfig
from ..log import logger


class Transfer:
    """The ``--eval-on`` folder's tasks, checked before any pruning, and the figures of each circuit."""

    def __init__(self, info, config: PruneConfig, tasks: list):
        from ..tasks import mined_tasks, resolve_tasks, task_context_for_run

        self.config = config
        # A bad folder (missing, empty, too little code) is one line now, not after the pruning.
        self.context = task_context_for_run(info, config.eval_on, flag="--eval-on")
        self.tasks: dict[str, Any] = {}
        others = [t.qualname for t in tasks if not t.depends_on_corpus]
        if others:
            logger.info(f"--eval-on: {', '.join(others)}: not mined from code (their pairs do not depend on a "
                        "folder); no transfer figures")
        if config.nonsense:
            logger.warning("circuitlab: --eval-on: the --nonsense control's answers are random; no transfer figures")
            return
        cut = [resolve_tasks(t.qualname, self.context)[0] for t in tasks if t.depends_on_corpus]
        if cut:
            self.tasks = {t.qualname: t for t in mined_tasks(cut, self.context, "--eval-on", splits=("test",))}

    @property
    def provenance(self) -> dict[str, Any]:
        return self.context.mine_from.provenance()

    def source(self, task) -> dict | None:
        """Where the task's pairs on the other folder come from (None: no transfer for this task)."""
        from ..tasks import pairs_source

        other = self.tasks.get(task.qualname)
        return None if other is None else pairs_source(other, self.context)

    def figures(self, model, tok, circuit, values, device) -> dict | None:
        """The circuit's and the full model's loss and accuracy on the task's test pairs from the folder."""
        import torch

        from ..tasks import check_tokens, encode_pairs, load_pairs
        from ..tasks.loss import loss_and_accuracy
        from .evaluator import Evaluator

        other = self.tasks.get(f"{circuit.suite}:{circuit.task}" if circuit.suite else circuit.task)
        if other is None:
            return None
        pairs = check_tokens(load_pairs(other, "test", self.config.n_test, self.context), tok).pairs
        record = {**self.provenance, "pairs": self.source(other), "n_pairs": len(pairs)}
        if not pairs:
            return {**record, "loss": None, "accuracy": None, "full_model_loss": None, "full_model_accuracy": None}
        batch = encode_pairs(list(pairs), tok, max_len=model.config.n_ctx).to(device)
        cal = circuit.calibration
        with torch.no_grad():
            ev = Evaluator(model, batch, values, freeze_norm=self.config.freeze_norm)
            loss, acc = loss_and_accuracy(ev.diffs(circuit.kept.to(device).float()), ev.sign,
                                          None if cal is None else (cal["scale"], cal["shift"]))
            full_loss, full_acc = loss_and_accuracy(ev.diffs(torch.ones(ev.num_nodes, device=device)))
        logger.info(f"  {circuit.task} on --eval-on ({len(pairs)} pairs): circuit loss {loss:.4f}, accuracy "
                    f"{acc:.3f}; full model loss {full_loss:.4f}, accuracy {full_acc:.3f}")
        return {**record, "loss": loss, "accuracy": acc, "full_model_loss": full_loss, "full_model_accuracy": full_acc}
