"""Mask search (paper-spec §3.3–3.4): optimise node masks, rank nodes, bisect to a target loss.

1. Optimise one mask parameter per node on the task's train pairs, minimising
   ``objective + penalty_coef * mask.penalty()`` (Adam, betas 0.9/0.95, lr decayed linearly to 0,
   minibatches of ``batch_pairs`` pairs). Unpruned reference logits (and final-norm scales, for
   ``--freeze-norm``) are computed once, before the loop.
2. Rank the nodes by ``mask.scores()``.
3. Keep the top k nodes (hard 0/1 gates, everything else ablated) and find the smallest k whose
   train task loss is at most the target: start at the k the mask kept by itself, walk up a x1.3
   grid until the target is met (k = all nodes is the unpruned model), then bisect between the
   last miss and the first hit. Every returned k was evaluated and met the target; bisection
   assumes monotonicity only to be fast, not to be correct.
4. Report the chosen circuit's loss and accuracy on held-out test pairs, its edges, and three
   validations (sufficiency, necessity, a random circuit of the same size).

With ``calibrate``, each candidate circuit's logit difference gets a scale and a shift fitted on the
train pairs (16 L-BFGS steps, paper A.5) before its loss is compared with the target; the test loss
uses the same scale and shift.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import CircuitlabError
from ..nodes import NodeSpace
from .ablation import ABLATIONS, ablation_hook
from .circuit import Circuit, Validations

if TYPE_CHECKING:
    import torch

    from ..tasks import TaskBatch


def _positive(instance, attribute, value):
    if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise CircuitlabError(f"{attribute.name.replace('_', '-')} must be a positive number, got {value!r}")


def _nonneg(instance, attribute, value):
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise CircuitlabError(f"{attribute.name.replace('_', '-')} must be >= 0, got {value!r}")


def _ablation(instance, attribute, value):
    if value not in ABLATIONS:
        raise CircuitlabError(f"unknown ablation {value!r}; valid: {', '.join(ABLATIONS)}")


@attrs.frozen(kw_only=True)
class PruneConfig:
    """How one task is pruned. ``None`` means the mask parameterization's default."""

    pruner: str = "heaviside"
    objective: str = "binary_ce"
    target_loss: float = attrs.field(default=0.15, validator=_positive)
    ablation: str = attrs.field(default="mean", validator=_ablation)
    freeze_norm: bool = False
    calibrate: bool = False
    steps: int | None = attrs.field(default=None, validator=_positive)
    lr: float | None = attrs.field(default=None, validator=_positive)
    penalty_coef: float | None = attrs.field(default=None, validator=_nonneg)
    batch_pairs: int = attrs.field(default=32, validator=_positive)
    grid: float = 1.3
    random_draws: int = 3
    retries: int = 2  # when the mask collapsed (see prune_task), retrain it up to this many times ...
    retry_factor: float = 0.25  # ... with the penalty coefficient multiplied by this each time
    retry_above: float = 2.0  # collapsed: the target needed more than this many times the mask's own nodes
    seed: int = 0


class _Stop(Exception):
    """Raised by the hook at ``final`` to skip the full-vocabulary unembedding of every position."""


class Evaluator:
    """Masked forward passes over one TaskBatch that return the last-position logits only."""

    def __init__(self, model, batch: TaskBatch, values: torch.Tensor, *, freeze_norm: bool = False,
                 chunk: int = 128):
        import torch

        self.model, self.batch, self.values, self.chunk = model, batch, values, chunk
        self.space = NodeSpace.from_config(model.config)
        self.num_nodes = self.space.num_nodes
        n = len(batch)
        self.by_length = torch.argsort(batch.last, stable=True)
        self.unsort = torch.argsort(self.by_length)
        self.sign = 1.0 - 2.0 * (torch.arange(n, device=batch.ids.device) % 2).float()  # +1 prompt A, -1 prompt B
        self.norm_scale = None
        ones = torch.ones(self.num_nodes, device=values.device)
        with torch.no_grad():
            if freeze_norm:
                scales = []
                self.reference = self._run(ones, None, record_scale=scales)
                width = int(batch.last.max()) + 1
                self.norm_scale = torch.zeros(n, width, 1, device=values.device)
                for rows, s in scales:
                    self.norm_scale[rows, : s.shape[1]] = s
            else:
                self.reference = self._run(ones, None)  # (N, vocab)

    def _run(self, gate, rows, record_scale=None):
        import torch

        model, b = self.model, self.batch
        # Whole-set passes go shortest-first, so each chunk is padded only to its own longest prompt.
        all_rows = self.by_length if rows is None else rows
        outs = []
        for i in range(0, len(all_rows), self.chunk):
            r = all_rows[i: i + self.chunk]
            last = b.last[r]
            ids = b.ids[r, : int(last.max()) + 1]
            scale = None if self.norm_scale is None else self.norm_scale[r]
            inner = ablation_hook(self.space, gate, self.values, scale)
            box: dict[str, Any] = {}

            def hook(name, x, inner=inner, box=box, r=r):
                if record_scale is not None and name == "final.norm":
                    record_scale.append((r, x.detach()))
                x = inner(name, x)
                if name == "final":
                    box["final"] = x
                    raise _Stop
                return x

            try:
                model(ids, hook=hook)
            except _Stop:
                pass
            x_last = box["final"][torch.arange(len(r), device=ids.device), last]  # (n, d_model)
            logits = model.lm_head(x_last)
            if model.bigram is not None:
                logits = logits + model.bigram[ids[torch.arange(len(r), device=ids.device), last]]
            outs.append(logits)
        out = torch.cat(outs)
        if rows is None:
            out = out[self.unsort]
        return out

    def last_logits(self, gate, rows=None):
        """(n, vocab) last-position logits with node gates ``gate`` (num_nodes,), for ``rows`` (default all)."""
        return self._run(gate, rows)

    def diffs(self, gate, rows=None):
        """Right-minus-wrong logit difference per prompt, (n,)."""
        b = self.batch
        z = self.last_logits(gate, rows)
        t = b.target if rows is None else b.target[rows]
        c = b.contrast if rows is None else b.contrast[rows]
        return (z.gather(1, t[:, None]) - z.gather(1, c[:, None])).squeeze(1).float()

    def hard_gate(self, kept):
        return kept.to(self.values.dtype)


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


def loss_and_accuracy(diff, sign=None, calibration: tuple[float, float] | None = None) -> tuple[float, float]:
    import torch.nn.functional as F

    diff = diff.detach()
    if calibration is not None:
        diff = calibration[0] * diff + calibration[1] * sign
    return float(F.softplus(-diff).mean()), float((diff > 0).float().mean())


def search_k(evaluate, num_nodes: int, start: int, target: float, grid: float = 1.3):
    """Smallest evaluated k with ``evaluate(k) <= target``, walking up from ``start`` then bisecting.

    Returns (k or None, history [(k, loss)...]). ``evaluate(num_nodes)`` is the unpruned model.
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


def train_mask(model, train_eval: Evaluator, mask, objective, *, steps: int, lr: float, coef: float,
               batch_pairs: int, generator, progress: bool = False, label: str = ""):
    """Optimise ``mask`` on minibatches of train pairs. Returns the per-step (objective, kept) history."""
    import torch

    b = train_eval.batch
    params = mask.parameters()
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    pair_len = torch.maximum(b.last[0::2], b.last[1::2]).cpu()
    queue: list = []
    history = []
    for step in range(steps):
        if not queue:
            queue = length_buckets(pair_len, batch_pairs, generator)
        pairs = queue.pop()
        rows = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten().to(b.ids.device)
        gate = mask.gate().to(b.ids.device)  # mask plugins may keep their parameters on the CPU
        logits = train_eval.last_logits(gate, rows)
        obj = objective(logits, b.target[rows], b.contrast[rows], train_eval.reference[rows])
        loss = obj + coef * mask.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        mask.after_step((step + 1) / steps)
        if step % 20 == 0 or step == steps - 1:
            kept = int((mask.scores() > 0).sum())
            history.append((step, float(obj.detach()), kept))
            if progress and (step % 100 == 0 or step == steps - 1):
                print(f"  {label} step {step + 1}/{steps}: objective {float(obj.detach()):.4f}, kept {kept}",
                      file=sys.stderr)
    return history


def prune_task(model, train: TaskBatch, test: TaskBatch, values: torch.Tensor, config: PruneConfig | None = None,
               *, task: str = "task", suite: str = "", provenance: dict | None = None, progress: bool = False,
               mask_entry=None, objective_entry=None, with_edge_list: bool = True) -> Circuit:
    """Prune ``model`` to the smallest node circuit whose train task loss reaches ``config.target_loss``.

    ``train``/``test`` are encoded pairs (``circuitlab.tasks.encode_pairs``); ``values`` (num_nodes,) is
    what an ablated node takes (``circuitlab.prune.ablation.ablation_values``). Returns a ``Circuit``.
    """
    import torch

    from .. import __version__, plugins
    from .edges import count_edges, edge_list

    config = config or PruneConfig()
    t0 = time.perf_counter()
    mask_entry = mask_entry or plugins.get("pruner", config.pruner)
    objective_entry = objective_entry or plugins.get("objective", config.objective)
    if len(train) < 2 or len(test) < 2:
        raise CircuitlabError(f"task {task!r} needs at least one train and one test pair")
    device = values.device
    train, test = train.to(device), test.to(device)
    grads = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        tr = Evaluator(model, train, values, freeze_norm=config.freeze_norm)
        te = Evaluator(model, test, values, freeze_norm=config.freeze_norm)
        N = tr.num_nodes
        gen = torch.Generator().manual_seed(config.seed)
        objective = objective_entry.factory()
        attempts, best = [], None
        for attempt in range(config.retries + 1):
            mask = mask_entry.factory(num_nodes=N, generator=gen)
            steps = config.steps or getattr(mask, "steps", 200)
            lr = config.lr or getattr(mask, "lr", 1e-2)
            coef = config.penalty_coef if config.penalty_coef is not None else getattr(mask, "penalty_coef", 1e-3)
            coef = coef * config.retry_factor ** attempt
            history = train_mask(model, tr, mask, objective, steps=steps, lr=lr, coef=coef,
                                 batch_pairs=config.batch_pairs, generator=gen, progress=progress, label=task)
            scores = mask.scores().detach().float().cpu()
            order = torch.argsort(scores, descending=True, stable=True)
            mask_nodes = int((scores > 0).sum())
            calib: dict[int, tuple[float, float]] = {}

            def kept_of(k, order=order):
                kept = torch.zeros(N, dtype=torch.bool)
                kept[order[:k]] = True
                return kept

            with torch.no_grad():
                def train_loss(k, kept_of=kept_of, calib=calib):
                    d = tr.diffs(kept_of(k).to(device).float())
                    if config.calibrate:
                        calib[k] = fit_calibration(d, tr.sign)
                        return loss_and_accuracy(d, tr.sign, calib[k])[0]
                    return loss_and_accuracy(d)[0]

                k, bisection = search_k(train_loss, N, mask_nodes, config.target_loss, config.grid)
            attempts.append({"penalty_coef": coef, "steps": steps, "lr": lr, "mask_nodes": mask_nodes, "k": k,
                             "evaluations": len(bisection)})
            state = {"k": k, "kept_of": kept_of, "bisection": bisection, "calib": calib, "scores": scores,
                     "mask_nodes": mask_nodes, "history": history, "coef": coef, "steps": steps, "lr": lr}
            if k is not None and (best is None or best["k"] is None or k < best["k"]):
                best = state
            elif best is None:
                best = state
            # The mask's own ranking did the work when the target is met with at most ``retry_above``
            # times the nodes it kept. Otherwise (a collapsed mask: the bisection had to walk far up the
            # ranking of the ablated nodes, or never reached the target) retrain with a smaller coefficient.
            if k is not None and k <= max(mask_nodes * config.retry_above, mask_nodes + 1):
                break
            if progress and attempt < config.retries:
                why = "not reached" if k is None else f"needed {k} nodes against the mask's {mask_nodes}"
                print(f"  {task}: {why}; retrying with penalty coefficient {coef * config.retry_factor:.2g}",
                      file=sys.stderr)
        k, kept_of, bisection, calib = best["k"], best["kept_of"], best["bisection"], best["calib"]
        scores, mask_nodes, history = best["scores"], best["mask_nodes"], best["history"]
        coef, steps, lr = best["coef"], best["steps"], best["lr"]
        reached = k is not None
        with torch.no_grad():
            if k is None:
                k = N
            kept = kept_of(k)
            chosen_train = dict(bisection)[k]
            cal = calib.get(k) if config.calibrate else None
            g = kept.to(device).float()
            d_test = te.diffs(g)
            loss, acc = loss_and_accuracy(d_test, te.sign, cal)
            full_d = te.diffs(torch.ones(N, device=device))
            full_loss, full_acc = loss_and_accuracy(full_d)
            suff = loss_and_accuracy(d_test)[0]
            nec = loss_and_accuracy(te.diffs((~kept).to(device).float()))[0]
            all_abl = loss_and_accuracy(te.diffs(torch.zeros(N, device=device)))[0]
            rgen = torch.Generator().manual_seed(config.seed + 1)
            draws = []
            for _ in range(config.random_draws):
                rk = torch.zeros(N, dtype=torch.bool)
                rk[torch.randperm(N, generator=rgen)[:k]] = True
                draws.append(loss_and_accuracy(te.diffs(rk.to(device).float()))[0])
    finally:
        for p, r in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(r)
        model.train(was_training)

    space = NodeSpace.from_config(model.config)
    names = space.names()
    counts = count_edges(model, kept)
    edges = tuple((names[s], names[t]) for s, t in edge_list(model, kept)) if with_edge_list else ()
    seconds = time.perf_counter() - t0
    prov = {
        "circuitlab_version": __version__,
        "torch_version": torch.__version__,
        "plugins": [mask_entry.provenance(), objective_entry.provenance()],
        "prune_config": attrs.asdict(config),
        "effective": {"steps": steps, "lr": lr, "penalty_coef": coef},
        "attempts": attempts,
        "train_prompts": len(train), "test_prompts": len(test),
        "mask_history": [list(h) for h in history],
        **(provenance or {}),
    }
    if progress:
        status = "reached" if reached else "NOT reached"
        print(f"  {task}: {k} nodes, {counts['total']} edges, test loss {loss:.4f} ({status} target "
              f"{config.target_loss:g} on train: {chosen_train:.4f}), {seconds:.1f}s", file=sys.stderr)
    return Circuit(
        task=task, suite=suite, method=f"{config.pruner}/{config.objective}", kept=kept, scores=scores,
        nodes=tuple(names[i] for i in kept.nonzero().flatten().tolist()), edges=edges, node_count=int(k),
        edge_counts=counts, total_nodes=N, loss=loss, accuracy=acc, train_loss=chosen_train,
        target_loss=config.target_loss, reached=reached, full_model_loss=full_loss, full_model_accuracy=full_acc,
        calibration=None if cal is None else {"scale": cal[0], "shift": cal[1]},
        bisection=tuple(bisection), mask_nodes=mask_nodes,
        validations=Validations(sufficiency=suff, necessity=nec, random=sum(draws) / max(len(draws), 1),
                                random_draws=tuple(draws), full_model=full_loss, all_ablated=all_abl),
        seconds=seconds, provenance=prov,
    )
