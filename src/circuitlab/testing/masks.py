"""``check_pruner`` (also ``check_mask``): a pruner against ``protocols.PrunerMask`` (or ``PrunerScorer``), on a tiny model.

A tiny GPT, a tiny task cut from real code (each prompt's right token is the token that really comes
next; the contrast is the other prompt's), and the real pruning code: ``train_mask`` for optimised
masks, ``GateGradients`` and ``fit`` for score-only ones, then ``search_circuit`` end to end. Every call
goes through the checking wrapper pruning uses (``plugins.calls.build_mask``).
"""

from __future__ import annotations

from typing import Any

import attrs

from ..config import PruneConfig
from ..plugins import Entry, calls
from .report import CheckFailed, CheckReport, Checks, entry_for
from .tiny import Tiny, shared_tiny

PROMPT_TOKENS = 16


def task_batches(tiny: Tiny, n_train: int = 16, n_test: int = 8, seed: int = 0) -> tuple[Any, Any]:
    """(train, test) ``TaskBatch``es from real code: pairs of 16-token windows whose next tokens differ."""
    import torch

    from ..tasks.types import TaskBatch

    ids = tiny.train_ids
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - PROMPT_TOKENS - 1, (8 * (n_train + n_test),), generator=g).tolist()
    pairs = []
    for a, b in zip(starts[0::2], starts[1::2], strict=True):
        ta, tb = int(ids[a + PROMPT_TOKENS]), int(ids[b + PROMPT_TOKENS])
        if ta != tb:
            pairs.append((a, b, ta, tb))
    if len(pairs) < n_train + n_test:
        raise CheckFailed("the tiny corpus gave too few prompt pairs; this is a circuitlab bug")

    def batch(chosen: list) -> TaskBatch:
        rows = [ids[s: s + PROMPT_TOKENS] for a, b, _, _ in chosen for s in (a, b)]
        target = [t for _, _, ta, tb in chosen for t in (ta, tb)]
        contrast = [t for _, _, ta, tb in chosen for t in (tb, ta)]
        return TaskBatch(ids=torch.stack(rows), last=torch.full((len(rows),), PROMPT_TOKENS - 1),
                         target=torch.tensor(target), contrast=torch.tensor(contrast))

    return batch(pairs[:n_train]), batch(pairs[n_train: n_train + n_test])


def task_loss_objective():
    """The default pruning objective (binary CE of the two candidate tokens), without the registry."""
    from ..tasks.loss import task_loss

    def objective(logits, target, contrast, reference_logits):
        return task_loss(logits, target, contrast)

    return objective


@attrs.define
class MaskBench:
    """The tiny model, its task batches and node values, shared by the mask checks."""

    tiny: Tiny
    model: Any = None
    train: Any = None
    test: Any = None
    values: Any = None
    evaluator: Any = None
    objective: Any = None

    def setup(self) -> str:
        import torch

        from ..prune.ablation import compute_node_means
        from ..prune.evaluator import Evaluator

        self.model = self.tiny.model(0).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.train, self.test = task_batches(self.tiny)
        x, _ = self.tiny.batch(0, batch_size=8)  # node means over 8 windows of real code
        self.values = compute_node_means(self.model, x)
        self.evaluator = Evaluator(self.model, self.train, self.values)
        objective_entry = entry_for("objective", task_loss_objective, "binary_ce")
        self.objective = calls.build_objective(objective_entry)
        return f"{self.evaluator.num_nodes} nodes, {len(self.train) // 2} train pairs (torch {torch.__version__})"


def _build(entry: Entry, bench: MaskBench, seed: int = 0) -> Any:
    import torch

    return calls.build_mask(entry, num_nodes=bench.evaluator.num_nodes, generator=torch.Generator().manual_seed(seed),
                            device=torch.device("cpu"))


def _check_members(entry: Entry, bench: MaskBench) -> str:
    mask = _build(entry, bench)
    for name in ("lr", "steps", "penalty_coef"):
        getattr(mask, name, None)  # the wrapper checks the optional defaults
    if mask.score_only:
        return "score-only (PrunerScorer): no parameters, gate or penalty to check"
    params = mask.parameters()
    mask.gate()
    penalty = mask.penalty()
    if not penalty.requires_grad:
        raise CheckFailed("penalty() has no gradient; compute it from the mask parameters")
    penalty.backward()
    if all(p.grad is None for p in params):
        raise CheckFailed("penalty() does not depend on parameters(); its gradient reaches none of them")
    mask.scores()
    return f"{len(params)} parameter tensor(s)"


def _fit_or_train(entry: Entry, bench: MaskBench, seed: int = 0) -> Any:
    import torch

    from ..prune.gradients import GateGradients
    from ..prune.search import MaskTraining, train_mask

    mask = _build(entry, bench, seed)
    if mask.score_only:
        mask.fit(GateGradients(bench.evaluator, bench.objective, batch_pairs=8,
                               steps=getattr(mask, "steps", 1)))
    else:
        settings = MaskTraining(steps=10, lr=getattr(mask, "lr", 1e-2), coef=getattr(mask, "penalty_coef", 1e-3),
                                batch_pairs=8)
        train_mask(bench.evaluator, mask, bench.objective, settings, torch.Generator().manual_seed(seed))
    return mask.scores()


def _scores_summary(entry: Entry, bench: MaskBench) -> str:
    scores = _fit_or_train(entry, bench)
    return f"{int((scores > 0).sum())} of {len(scores)} nodes score > 0"


def _check_seed(entry: Entry, bench: MaskBench) -> None:
    import torch

    first, second = _fit_or_train(entry, bench), _fit_or_train(entry, bench)
    if not torch.equal(first, second):
        i = int((first != second).nonzero()[0])
        raise CheckFailed(f"two runs with the same seed give different scores (node {i}: {float(first[i]):.6g} vs "
                          f"{float(second[i]):.6g}); draw every random number from the generator passed in")


def _check_prune(entry: Entry, bench: MaskBench) -> str:
    import torch

    from ..prune.search import TaskData, search_circuit
    from ..tasks.loss import loss_and_accuracy

    with torch.no_grad():
        full = loss_and_accuracy(bench.evaluator.diffs(torch.ones(bench.evaluator.num_nodes)))[0]
    target = full + 1e-6  # met by the full model at worst; the bisection walks the mask's ranking down to it
    config = PruneConfig(target_loss=target, steps=10, batch_pairs=8, retries=0, random_draws=1)
    data = TaskData(train=bench.train, test=bench.test, values=bench.values, task="tiny")
    circuit = search_circuit(bench.model, data, config, mask_entry=entry,
                             objective_entry=entry_for("objective", task_loss_objective, "binary_ce"))
    if not 0 <= circuit.node_count <= circuit.total_nodes:
        raise CheckFailed(f"the circuit has {circuit.node_count} of {circuit.total_nodes} nodes")
    return f"{circuit.node_count} of {circuit.total_nodes} nodes, {circuit.edge_count} edges"


def check_pruner(factory: Any, *, tiny: Tiny | None = None, name: str | None = None, entry: Entry | None = None,
                 raise_on_failure: bool = True) -> CheckReport:
    """Check a pruner's factory (a trained mask or score-only) against its contract.

    Returns the report; raises ``PluginCheckError`` listing the failures unless ``raise_on_failure=False``.
    Takes a few seconds.
    """
    entry = entry_for("pruner", factory, name, entry)
    bench = MaskBench(tiny or shared_tiny())
    checks = Checks(entry)
    checks.run("tiny model and task", bench.setup)
    ready = ("tiny model and task",)
    checks.run("builds from num_nodes, generator, device", lambda: type(_build(entry, bench).inner).__name__,
               needs=ready)
    built = ready + ("builds from num_nodes, generator, device",)
    checks.run("members: shapes, ranges, gradients, defaults", lambda: _check_members(entry, bench), needs=built)
    checks.run("optimises (10 steps) or fits, scores finite", lambda: _scores_summary(entry, bench), needs=built)
    checks.run("the seed reproduces the scores", lambda: _check_seed(entry, bench),
               needs=("optimises (10 steps) or fits, scores finite",))
    checks.run("prunes a tiny model end to end", lambda: _check_prune(entry, bench), needs=built)
    return checks.finish(raise_on_failure)


check_mask = check_pruner  # the name before pruners had one noun
