"""Built-in pruners for ``circuitlab prune --pruner NAME``: three parameterizations of node masks.

Each factory takes ``num_nodes`` and a seeded ``torch.Generator`` and returns a mask object with the
protocol documented in ``circuitlab.plugins.hookspecs.register_pruners``. Defaults for the
learning rate, the number of steps and the penalty coefficient are class attributes (``lr``,
``steps``, ``penalty_coef``); the pruner uses them unless ``--lr``/``--steps``/``--penalty-coef``
override them. torch is imported inside methods, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import math

from circuitlab import hookimpl


@functools.lru_cache(maxsize=1)
def _heaviside_fn():
    import torch

    class HeavisideSTE(torch.autograd.Function):
        """Heaviside(tau) forward; sigmoid'(tau / T) / T backward (a straight-through surrogate)."""

        @staticmethod
        def forward(ctx, tau, temperature):
            ctx.save_for_backward(tau)
            ctx.temperature = temperature
            return (tau > 0).to(tau.dtype)

        @staticmethod
        def backward(ctx, grad):
            (tau,) = ctx.saved_tensors
            s = torch.sigmoid(tau / ctx.temperature)
            return grad * s * (1 - s) / ctx.temperature, None

    return HeavisideSTE


class HeavisideMask:
    """The paper's mask: Heaviside gate forward, sigmoid-derivative surrogate backward, tau clamped to [-1, 1]."""

    lr = 1e-2
    steps = 200
    penalty_coef = 5e-3

    def __init__(self, num_nodes: int, generator=None, *, init_bias: float = 0.1, init_noise: float = 0.01,
                 temperature: float = 1.0, device="cpu"):
        import torch

        noise = torch.randn(num_nodes, generator=generator)
        self.tau = (init_bias + init_noise * noise).to(device).requires_grad_()
        self.temperature = temperature
        # Steps each node spent kept: breaks ties between nodes clamped at -1 (died later ranks higher).
        self.alive = torch.zeros(num_nodes, device=device)

    def parameters(self):
        return [self.tau]

    def gate(self):
        return _heaviside_fn().apply(self.tau, self.temperature)

    def penalty(self):
        return self.gate().sum()  # the number of kept nodes, with the surrogate gradient

    def scores(self):
        return self.tau.detach() + 1e-6 * self.alive

    def after_step(self, progress: float) -> None:
        import torch

        with torch.no_grad():
            self.tau.clamp_(-1.0, 1.0)
            self.alive += (self.tau > 0).float()


class HardConcreteMask:
    """Louizos et al. 2018 stretched hard-concrete gate with the expected-L0 penalty."""

    lr = 1e-1
    steps = 200
    penalty_coef = 1e-2  # the expected-L0 gradient vanishes for large log-alpha: it needs a larger coefficient
    beta, gamma, zeta = 2 / 3, -0.1, 1.1

    def __init__(self, num_nodes: int, generator=None, *, init_log_alpha: float = 2.0, init_noise: float = 0.01,
                 device="cpu"):
        import torch

        noise = torch.randn(num_nodes, generator=generator)
        self.log_alpha = (init_log_alpha + init_noise * noise).to(device).requires_grad_()
        self.generator = generator

    def parameters(self):
        return [self.log_alpha]

    def gate(self):
        import torch

        u = torch.rand(self.log_alpha.shape, generator=self.generator).to(self.log_alpha.device)
        u = u.clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def penalty(self):
        import torch

        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.gamma / self.zeta)).sum()

    def scores(self):
        # The deterministic gate clamp(sigmoid(a) * (zeta - gamma) + gamma, 0, 1) exceeds 1/2 iff a > 0.
        return self.log_alpha.detach().clone()

    def after_step(self, progress: float) -> None:
        import torch

        with torch.no_grad():
            self.log_alpha.clamp_(-10.0, 10.0)


class SigmoidMask:
    """Continuous relaxation: gate = sigmoid(logit / T), T annealed from 1 to 0.02."""

    lr = 5e-2
    steps = 200
    penalty_coef = 5e-3

    def __init__(self, num_nodes: int, generator=None, *, init_logit: float = 1.0, init_noise: float = 0.01,
                 t_start: float = 1.0, t_end: float = 0.02, device="cpu"):
        import torch

        noise = torch.randn(num_nodes, generator=generator)
        self.logit = (init_logit + init_noise * noise).to(device).requires_grad_()
        self.t_start, self.t_end = t_start, t_end
        self.temperature = t_start

    def parameters(self):
        return [self.logit]

    def gate(self):
        import torch

        return torch.sigmoid(self.logit / self.temperature)

    def penalty(self):
        return self.gate().sum()

    def scores(self):
        return self.logit.detach().clone()

    def after_step(self, progress: float) -> None:
        import torch

        # Geometric annealing of the temperature over training.
        self.temperature = self.t_start * (self.t_end / self.t_start) ** min(max(progress, 0.0), 1.0)
        with torch.no_grad():
            self.logit.clamp_(-5.0, 5.0)


@hookimpl
def register_pruners(register):
    register("heaviside", HeavisideMask)
    register("hardconcrete", HardConcreteMask)
    register("sigmoid", SigmoidMask)
