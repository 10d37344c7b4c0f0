"""Mask search (Gao et al. 2025, A.5): optimise node masks, rank nodes, bisect to a target loss.

1. Optimise one mask parameter per node on the task's train pairs, minimising
   ``objective + penalty_coef * mask.penalty()`` (Adam, betas 0.9/0.95, lr decayed linearly to 0,
   minibatches of ``batch_pairs`` pairs). Unpruned reference logits (and final-norm scales, for
   ``--freeze-norm``) are computed once, before the loop. A score-only mask (``score_only = True``,
   attribution methods) is not optimised: its ``fit`` gets the objective's gradients with respect to
   the node gates (``gradients.GateGradients``), once; there are no retries, and step 3 walks up
   its ranking from one node (it keeps no nodes by itself).
2. Rank the nodes by ``mask.scores()``.
3. Keep the top k nodes (hard 0/1 gates, everything else ablated) and find the smallest k whose
   train task loss is at most the target: start at the k the mask kept by itself, walk up a x1.3
   grid until the target is met (k = all nodes is the unpruned model), then bisect between the
   last miss and the first hit. Every returned k was evaluated and met the target; bisection
   assumes monotonicity only to be fast, not to be correct. The unpruned model's train loss comes
   free with the reference logits: when it misses the target, the search checks only k = 0 and the
   mask's own set (which can beat the unpruned model) and, if both miss, says so without walking up
   to the whole model; the mask is then retrained (below) like a collapsed one.
4. Report the chosen circuit's loss and accuracy on held-out test pairs, its edges, and three
   validations (sufficiency, necessity, a random circuit of the same size): ``circuit.build_circuit``.

With ``calibrate``, each candidate circuit's logit difference gets a scale and a shift fitted on the
train pairs (16 L-BFGS steps, paper A.5) before its loss is compared with the target; the test loss
uses the same scale and shift.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import attrs

from ..config import PruneConfig
from ..errors import CircuitlabError
from ..log import logger
from ..plugins import calls
from ..tasks.loss import loss_and_accuracy
from .circuit import Circuit, build_circuit
from .evaluator import Evaluator
from .gradients import GateGradients

if TYPE_CHECKING:
    import torch

def fit_calibration(diff: torch.Tensor, sign: torch.Tensor, steps: int = 16) -> tuple[float, float]:
    """Scale a and shift b minimising mean softplus(-(a * diff + b * sign)) (16 L-BFGS steps)."""
    import torch
    import torch.nn.functional as F

    params = torch.tensor([1.0, 0.0], requires_grad=True)
    diff, sign = diff.detach().float().cpu(), sign.detach().float().cpu()
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.softplus(-(params[0] * diff + params[1] * sign)).mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    a, b = params.detach().tolist()
    if not (math.isfinite(a) and math.isfinite(b)):
        return 1.0, 0.0
    return a, b


def search_k(evaluate, num_nodes: int, start: int, target: float, grid: float = 1.3,
             full: float | None = None):
    """Smallest evaluated k with ``evaluate(k) <= target``, walking up from ``start`` then bisecting.

    Returns (k or None, history [(k, loss)...]). ``evaluate(num_nodes)`` is the unpruned model.
    ``full``, if known, is that loss. When it misses the target, only circuits that beat the unpruned
    model can reach it: the search checks k = 0 and ``start`` (the set the mask kept by itself, which
    the mask optimised for) and, if both miss, returns None (history ending ``(num_nodes, full)``)
    instead of walking up the grid to the whole model.
    """
    history: list[tuple[int, float]] = []
    seen: dict[int, float] = {}

    def ev(k):
        if k not in seen:
            seen[k] = float(evaluate(k))
            history.append((k, seen[k]))
        return seen[k]

    if ev(0) <= target:
        return 0, history
    lo, hi = 0, None
    k = min(max(start, 1), num_nodes)
    while True:
        if ev(k) <= target:
            hi = k
            break
        lo = k
        if full is not None and not full <= target:  # also a NaN loss: no walk up to the whole model
            if num_nodes not in seen:
                history.append((num_nodes, float(full)))
            return None, history
        if k >= num_nodes:
            return None, history
        k = min(num_nodes, max(k + 1, int(math.ceil(k * grid))))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ev(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi, history


def length_buckets(lengths, batch_pairs: int, generator, window: int = 8) -> list:
    """One epoch of minibatches of pair indices: shuffled, then sorted by length within windows of
    ``window`` batches, so that a minibatch holds prompts of similar length (less padding)."""
    import torch

    n = len(lengths)
    if batch_pairs >= n:
        return [torch.arange(n)]
    perm = torch.randperm(n, generator=generator)
    batches = []
    span = batch_pairs * window
    for i in range(0, n, span):
        chunk = perm[i: i + span]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += [chunk[j: j + batch_pairs] for j in range(0, len(chunk), batch_pairs)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


@attrs.frozen(kw_only=True)
class MaskTraining:
    """The optimisation settings of one mask training (the mask's defaults resolved)."""

    steps: int
    lr: float
    coef: float  # penalty coefficient
    batch_pairs: int
    patience: int = 0  # 0: every step; else stop once the kept set has held this many steps (train_mask)
    dtype: str = attrs.fields(PruneConfig).mask_dtype.default  # the matrix products' format


def train_mask(train_eval: Evaluator, mask, objective, settings: MaskTraining, generator, *,
               progress: bool = False, label: str = ""):
    """Optimise ``mask`` on minibatches of train pairs. Returns the per-step (step, objective, kept) history.

    With ``settings.patience`` > 0 training stops early, once the kept set (score > 0) has changed at
    least once (every mask starts by keeping every node, which holds for a while) and then stayed the
    same for ``patience`` consecutive steps: the bisection starts from the kept set and ranks by the
    scores, and the remaining steps (a decaying learning rate) only polish the scores' order. The last
    history entry is the last step run."""
    import torch

    steps, lr, coef, batch_pairs = settings.steps, settings.lr, settings.coef, settings.batch_pairs
    patience = settings.patience
    b = train_eval.batch
    params = mask.parameters()
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    pair_len = torch.maximum(b.last[0::2], b.last[1::2]).cpu()
    queue: list = []
    history = []
    kept_before, same, moved = None, 0, False
    for step in range(steps):
        if not queue:
            queue = length_buckets(pair_len, batch_pairs, generator)
        pairs = queue.pop()
        rows = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten().to(b.ids.device)
        gate = mask.gate().to(b.ids.device)  # mask plugins may keep their parameters on the CPU
        logits = train_eval.last_logits(gate, rows, dtype=settings.dtype)
        obj = objective(logits, b.target[rows], b.contrast[rows], train_eval.reference[rows])
        loss = obj + coef * mask.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        mask.after_step((step + 1) / steps)
        stop = False
        if patience:
            kept_now = mask.scores() > 0
            held = kept_before is not None and torch.equal(kept_now, kept_before)
            moved = moved or (kept_before is not None and not held)
            same = same + 1 if held and moved else 0
            kept_before, stop = kept_now, same >= patience
        if step % 20 == 0 or step == steps - 1 or stop:
            kept = int((mask.scores() > 0).sum())
            history.append((step, float(obj.detach()), kept))
            if progress and (step % 100 == 0 or step == steps - 1 or stop):
                why = f" (kept set unchanged for {patience} steps)" if stop else ""
                logger.info(f"  {label} step {step + 1}/{steps}: objective {float(obj.detach()):.4f}, kept {kept}{why}")
        if stop:
            break
    return history


@attrs.define
class Attempt:
    """One mask training and the bisection along its ranking."""

    k: int | None  # smallest k reaching the target, or None
    order: Any  # node indices, best first
    bisection: list  # (k, train loss) in evaluation order
    calibration: dict  # k -> (scale, shift), with --calibrate
    scores: Any
    mask_nodes: int  # nodes the mask kept by itself (score > 0)
    history: list
    coef: float | None  # None for score-only masks (no optimisation)
    steps: int
    lr: float | None
    score_only: bool = False  # the mask's scores are signed effects (attribution), not keep-logits
    full_missed: bool = False  # the unpruned model itself misses the target on train

    def kept(self, k: int, num_nodes: int):
        import torch

        kept = torch.zeros(num_nodes, dtype=torch.bool)
        kept[self.order[:k]] = True
        return kept

    def summary(self) -> dict:
        ran = {"steps_run": self.history[-1][0] + 1} if self.history and self.history[-1][0] + 1 < self.steps else {}
        return {"penalty_coef": self.coef, "steps": self.steps, "lr": self.lr, "mask_nodes": self.mask_nodes,
                "k": self.k, "evaluations": len(self.bisection), **ran}

    def collapsed(self, config: PruneConfig) -> bool:
        """The mask's own ranking did the work when the target is met with at most ``retry_above`` times
        the nodes it kept. Otherwise (the bisection had to walk far up the ranking of the ablated
        nodes, or never reached the target) the mask collapsed and is retrained."""
        return self.k is None or self.k > max(self.mask_nodes * config.retry_above, self.mask_nodes + 1)


def _attempt(tr: Evaluator, config: PruneConfig, mask_entry, objective, gen, coef_scale: float,
             progress: bool, task: str) -> Attempt:
    import torch

    N = tr.num_nodes
    # The mask's calls are checked (plugins.calls): an error inside a plugin names it.
    mask = calls.build_mask(mask_entry, num_nodes=N, generator=gen, device=tr.values.device)
    if mask.score_only:  # attribution-style scorers: one fit on the objective's gate gradients, no training
        steps, lr, coef = config.steps or getattr(mask, "steps", 1), None, None
        mask.fit(GateGradients(tr, objective, batch_pairs=config.batch_pairs, steps=steps))
        history: list = []
    else:
        steps = config.steps or getattr(mask, "steps", 200)
        lr = config.lr or getattr(mask, "lr", 1e-2)
        coef = config.penalty_coef if config.penalty_coef is not None else getattr(mask, "penalty_coef", 1e-3)
        coef = coef * coef_scale
        history = train_mask(tr, mask, objective, MaskTraining(steps=steps, lr=lr, coef=coef,
                                                               batch_pairs=config.batch_pairs,
                                                               patience=config.patience, dtype=config.mask_dtype),
                             gen, progress=progress, label=task)
    scores = mask.scores().detach().float().cpu()
    if tr.allowed is not None:  # excluded nodes rank last: a circuit never counts them
        scores = scores.masked_fill(~tr.allowed.cpu(), float("-inf"))
    # A trained mask keeps the nodes scoring > 0 by itself, and the search starts there; a score-only
    # mask keeps none by itself, so the search walks up its ranking from one node.
    kept_by_itself = 0 if mask.score_only else int((scores > 0).sum())
    attempt = Attempt(k=None, order=torch.argsort(scores, descending=True, stable=True), bisection=[],
                      calibration={}, scores=scores, mask_nodes=kept_by_itself, history=history,
                      coef=coef, steps=steps, lr=lr, score_only=bool(mask.score_only))
    device = tr.values.device

    def train_loss(k):
        # The unpruned model's logits are the evaluator's reference: no forward pass for k = N.
        d = tr.full_diffs() if k == N else tr.diffs(attempt.kept(k, N).to(device).float())
        if config.calibrate:
            attempt.calibration[k] = fit_calibration(d, tr.sign)
            return loss_and_accuracy(d, tr.sign, attempt.calibration[k])[0]
        return loss_and_accuracy(d)[0]

    with torch.no_grad():
        full = train_loss(N)
        attempt.k, attempt.bisection = search_k(train_loss, N, attempt.mask_nodes, config.target_loss, config.grid,
                                                full=full)
    attempt.full_missed = not full <= config.target_loss
    return attempt


def _best_attempt(tr: Evaluator, config: PruneConfig, mask_entry, objective_entry, progress: bool,
                  task: str) -> tuple[Attempt, list[dict]]:
    """Train masks until one does not collapse (at most ``1 + retries``); the attempt with the smallest k."""
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    objective = calls.build_objective(objective_entry)
    attempts: list[dict] = []
    best = None
    for i in range(config.retries + 1):
        attempt = _attempt(tr, config, mask_entry, objective, gen, config.retry_factor ** i, progress, task)
        attempts.append(attempt.summary())
        if best is None or (attempt.k is not None and (best.k is None or attempt.k < best.k)):
            best = attempt
        if attempt.lr is None or not attempt.collapsed(config):  # a score-only mask has nothing to retry
            break
        if progress and i < config.retries:
            why = "not reached" if attempt.k is None else f"needed {attempt.k} nodes against the mask's {attempt.mask_nodes}"
            if attempt.full_missed and attempt.k is None:  # a retrained mask keeps more nodes and can beat the model
                why += f" (the unpruned model's train loss {attempt.bisection[-1][1]:.4f} misses it too)"
            logger.info(f"  {task}: {why}; retrying with penalty coefficient {attempt.coef * config.retry_factor:.2g}")
    return best, attempts


def suite_provenance(suite: str) -> list[dict]:
    """The task suite's plugin, for the circuit's provenance (none for a suite that is not registered)."""
    from .. import plugins

    try:
        return [plugins.get("suite", suite).provenance()] if suite else []
    except CircuitlabError:
        return []


def excluded_nodes(model, config: PruneConfig):
    """``config.exclude`` as a (num_nodes,) bool tensor, or None; an unknown node name is one line."""
    import torch

    from ..model.nodes import NodeSpace

    if not config.exclude:
        return None
    space = NodeSpace.from_config(model.config)
    out = torch.zeros(space.num_nodes, dtype=torch.bool)
    for name in config.exclude:
        out[space.index(name)] = True
    return out


@attrs.frozen(kw_only=True)
class TaskData:
    """One task's encoded pairs, ablation values and circuit provenance: what the mask search needs.

    Picklable: ``prune.parallel`` sends it to a worker process."""

    train: Any  # TaskBatch (circuitlab.tasks.encode_pairs)
    test: Any  # TaskBatch
    values: Any  # (num_nodes,) tensor: what an ablated node takes (circuitlab.prune.ablation.ablation_values)
    task: str = "task"
    suite: str = ""
    provenance: dict | None = None


def search_circuit(model, data: TaskData, config: PruneConfig | None = None, *, progress: bool = False,
                   mask_entry=None, objective_entry=None, with_edge_list: bool = True) -> Circuit:
    """Prune ``model`` to the smallest node circuit whose train task loss reaches ``config.target_loss``.

    ``data`` holds the encoded train and test pairs and the ablation values. The mask search alone:
    ``circuitlab.prune.prune_task`` is the whole path (pairs, full-model verdict, encoding, ablation
    values, provenance, then this). Returns a ``Circuit``.
    """
    from .. import plugins

    config = config or PruneConfig()
    task, suite = data.task, data.suite
    t0 = time.perf_counter()
    mask_entry = mask_entry or plugins.get("pruner", config.pruner)
    objective_entry = objective_entry or plugins.get("objective", config.objective)
    if len(data.train) < 2 or len(data.test) < 2:
        raise CircuitlabError(f"task {task!r} needs at least one train and one test pair")
    values = data.values
    device = values.device
    train, test = data.train.to(device), data.test.to(device)
    grads = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        ablated = excluded_nodes(model, config)  # nodes ablated from the start (backups), or None
        tr = Evaluator(model, train, values, freeze_norm=config.freeze_norm, ablated=ablated)
        te = Evaluator(model, test, values, freeze_norm=config.freeze_norm, ablated=ablated)
        best, attempts = _best_attempt(tr, config, mask_entry, objective_entry, progress, task)
        circuit = build_circuit(tr, te, best, attempts, config, data=data,
                                plugins=[mask_entry, objective_entry, *suite_provenance(suite)],
                                with_edge_list=with_edge_list)
        circuit = attrs.evolve(circuit, seconds=time.perf_counter() - t0)
    finally:
        for p, r in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(r)
        model.train(was_training)
    if progress:
        status = "reached" if circuit.reached else "NOT reached"
        logger.info(f"  {task}: {circuit.node_count} nodes, {circuit.edge_count} edges, test loss {circuit.loss:.4f} "
                    f"({status} target {config.target_loss:g} on train: {circuit.train_loss:.4f}), "
                    f"{circuit.seconds:.1f}s")
    return circuit
