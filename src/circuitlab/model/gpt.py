"""The sparse GPT-2 core of Gao et al. 2025 ("Weight-sparse transformers have interpretable circuits").

One readable file in the spirit of nanoGPT's model.py. Design choices (Gao et al. 2025, §2.1, A.1):
- RMSNorm pre-norm blocks, so zero means "nothing" in the residual stream;
- untied embedding and unembedding, linear biases, GELU MLPs, small heads (d_head 16);
- optional per-head attention sink, optional dense bigram logit table, no position embedding by default;
- optional AbsTopK activation sparsity at the eight node locations;
- a named hook point at every node location, for recording and replacing activations.

Hook points. ``forward(idx, hook=fn)`` calls ``fn(name, x)`` at each point below and continues with
whatever it returns (return ``x`` unchanged to only record). ``L`` is the layer index.

    L.attn.in     (B, T, d_in)             residual read after ln_1 (d_in = d_model, + d_pos_emb if set)
    L.attn.q/k/v  (B, T, n_head * d_head)  query, key and value channels, before splitting into heads
    L.attn.out    (B, T, d_model)          residual write of the attention block, before the add
    L.mlp.in      (B, T, d_in)             residual read after ln_2
    L.mlp.neuron  (B, T, d_mlp)            MLP neurons after the activation
    L.mlp.out     (B, T, d_model)          residual write of the MLP block, before the add
    final         (B, T, d_model)          final residual after ln_f, read by the unembedding

These are the node locations (``circuitlab.model.nodes``). A few more points are hooked but hold no
nodes: ``L.resid_in`` and ``L.resid_mid`` (the residual before each block and between its two
halves), ``L.attn.y`` (the heads' outputs before c_proj) and ``final.resid`` (before ln_f).
Each norm also exposes its scale 1/rms(x) (LayerNorm: 1/std(x)), shape (B, T, 1), as
``L.attn.norm``, ``L.mlp.norm`` and ``final.norm``; pruning uses it to freeze the final norm
(Drori 2026's control). docs/interop.md maps these names to those of OpenAI's circuit_sparsity code.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import AFRAC_LOCATIONS, BLOCK_SITES, ModelConfig
from .loss import unembedding_loss

Hook = Callable[[str, torch.Tensor], torch.Tensor]

# The AbsTopK location name of each site (the ``afrac_loctypes`` names of openai/circuit_sparsity).
_AFRAC_LOCATION = dict(zip(BLOCK_SITES, AFRAC_LOCATIONS, strict=True))
_ACTIVATION = {"gelu": F.gelu, "relu": F.relu}


def abs_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k entries of largest magnitude along the last dim, zero the rest."""
    idx = x.abs().topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


def cpu_autocast(device: torch.device) -> bool:
    """Whether CPU autocast is on for ``device``. The attention kernel then runs in float32: with
    bfloat16 inputs its backward ran about 8x slower than float32's on the small shapes of mask
    training (docs/pruning.md, "Performance"). CUDA keeps its bfloat16 kernel."""
    return device.type == "cpu" and torch.is_autocast_enabled("cpu")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float | None):
        super().__init__()
        self.eps = eps  # None: the input dtype's machine epsilon, as torch.nn.RMSNorm
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, hook: Hook | None = None, name: str = "") -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (B, T, 1)
        if hook is not None:
            scale = hook(name, scale)
        return x * scale * self.weight


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias; its scale 1/std(x) is hooked like RMSNorm's."""

    def __init__(self, dim: int, eps: float | None, bias: bool):
        super().__init__()
        self.eps = eps  # None: the input dtype's machine epsilon
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor, hook: Hook | None = None, name: str = "") -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        centred = x - x.mean(-1, keepdim=True)  # (B, T, dim)
        scale = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps)  # (B, T, 1)
        if hook is not None:
            scale = hook(name, scale)
        y = centred * scale * self.weight
        return y if self.bias is None else y + self.bias


def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    if config.norm == "layer":
        return LayerNorm(dim, config.norm_eps, config.norm_bias)
    return RMSNorm(dim, config.norm_eps)


class Sites(nn.Module):
    """Applies AbsTopK (where configured) and the hook at one block's node sites."""

    def __init__(self, config: ModelConfig, layer: int, widths: dict[str, int]):
        super().__init__()
        self.layer = layer
        self.k = {}
        if config.afrac is not None:
            locations = dict(_AFRAC_LOCATION, resid_post_attn="resid_post_attn", resid_post_mlp="resid_post_mlp")
            widths = dict(widths, resid_post_attn=config.d_model, resid_post_mlp=config.d_model)
            for site, width in widths.items():
                if locations[site] in config.afrac_locations:
                    self.k[site] = max(1, int(config.afrac * width))

    def forward(self, site: str, x: torch.Tensor, hook: Hook | None) -> torch.Tensor:
        if site in self.k:
            x = abs_topk(x, self.k[site])
        return x if hook is None else hook(f"{self.layer}.{site}", x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.d_head = config.n_head, config.d_head
        inner = config.n_head * config.d_head
        self.c_attn = nn.Linear(config.d_in, 3 * inner, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(inner, config.d_model, bias=config.bias)
        # The sink is a virtual key/value slot of zeros that every query can attend to; its logit is
        # learned per head, so a head can put its attention mass "nowhere" (Gao et al. 2025, A.1).
        self.sink_logit = nn.Parameter(torch.zeros(config.n_head)) if config.attn_sink else None

    def forward(self, x: torch.Tensor, sites: Sites, hook: Hook | None,
                last: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d_in). With ``last`` (B, R) position indices, only those positions' outputs are
        computed: keys and values at every position, the queries at ``last`` only. ``visible`` (B, T, T)
        bool says which keys each query attends to (default: causal). Returns (B, T, d_model), or
        (B, R, d_model) with ``last``."""
        B, T, _ = x.shape
        inner = self.n_head * self.d_head
        if last is None:
            q, k, v = self.c_attn(x).split(inner, dim=2)  # each (B, T, nh * hs)
            Tq = T
        else:
            w, b = self.c_attn.weight, self.c_attn.bias
            k, v = F.linear(x, w[inner:], None if b is None else b[inner:]).split(inner, dim=2)  # each (B, T, nh * hs)
            rows = torch.arange(B, device=x.device)[:, None]  # (B, 1)
            q = F.linear(x[rows, last], w[:inner], None if b is None else b[:inner])  # (B, R, nh * hs)
            Tq = last.shape[1]
        q = sites("attn.q", q, hook)
        k = sites("attn.k", k, hook)
        v = sites("attn.v", v, hook)
        q = q.view(B, Tq, self.n_head, self.d_head).transpose(1, 2)  # (B, nh, Tq, hs)
        k = k.view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        causal = visible is None and last is None
        if visible is None:
            keys = torch.arange(T, device=x.device)
            queries = keys[:, None] if last is None else last[:, :, None]  # (T, 1) or (B, R, 1)
            visible = keys <= queries  # (T, T) or (B, R, T)
        elif last is not None:
            visible = visible[torch.arange(B, device=x.device)[:, None], last]  # (B, R, T)
        if visible.dim() == 3:
            visible = visible[:, None]  # (B, 1, Tq, T): the same for every head
        if self.sink_logit is None:
            float32 = cpu_autocast(x.device)
            with torch.autocast("cpu", enabled=False) if float32 else contextlib.nullcontext():
                if float32:
                    q, k, v = q.float(), k.float(), v.float()
                if causal:
                    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
                else:
                    y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # (B, nh, Tq, hs)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, nh, Tq, T)
            att = att.masked_fill(~visible, float("-inf"))
            sink = self.sink_logit.to(att.dtype).view(1, self.n_head, 1, 1).expand(B, -1, Tq, 1)  # (B, nh, Tq, 1)
            att = torch.cat([sink, att], dim=-1).softmax(dim=-1)[..., 1:]  # drop the sink's (zero) value
            y = att @ v  # (B, nh, Tq, hs)
        y = y.transpose(1, 2).contiguous().view(B, Tq, inner)  # (B, Tq, nh * hs)
        if hook is not None:
            y = hook(f"{sites.layer}.attn.y", y)
        return sites("attn.out", self.c_proj(y), hook)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.d_in, config.d_mlp, bias=config.bias)
        self.c_proj = nn.Linear(config.d_mlp, config.d_model, bias=config.bias)
        self.act = _ACTIVATION[config.activation]

    def forward(self, x: torch.Tensor, sites: Sites, hook: Hook | None) -> torch.Tensor:
        h = sites("mlp.neuron", self.act(self.c_fc(x)), hook)
        return sites("mlp.out", self.c_proj(h), hook)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.residual_relu = config.residual_activation == "relu"
        self.ln_1 = make_norm(config, config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config, config.d_model)
        self.mlp = MLP(config)
        if config.d_pos_emb is not None:  # each half norms the position embedding on its own
            self.ln_p1 = make_norm(config, config.d_pos_emb)
            self.ln_p2 = make_norm(config, config.d_pos_emb)
        self.sites = Sites(config, layer, config.site_widths())

    def read(self, x: torch.Tensor, pos: torch.Tensor | None, half: str, hook: Hook | None) -> torch.Tensor:
        """A half's normed input: ln(x), with the normed position embedding concatenated if configured."""
        ln, ln_p = (self.ln_1, "ln_p1") if half == "attn" else (self.ln_2, "ln_p2")
        h = ln(x, hook, f"{self.layer}.{half}.norm")  # (B, T, d_model)
        if pos is not None:
            p = getattr(self, ln_p)(pos).expand(x.shape[0], -1, -1)  # (B, T, d_pos_emb)
            h = torch.cat([h, p], dim=-1)  # (B, T, d_model + d_pos_emb)
        return self.sites(f"{half}.in", h, hook)

    def add(self, x: torch.Tensor, delta: torch.Tensor, site: str) -> torch.Tensor:
        x = x + delta
        if self.residual_relu:
            x = torch.relu(x)
        return abs_topk(x, self.sites.k[site]) if site in self.sites.k else x

    def forward(self, x: torch.Tensor, hook: Hook | None = None, pos: torch.Tensor | None = None,
                last: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model); with ``last`` (B, R), the block's output at those
        positions only, (B, R, d_model) (the attention still reads every position it sees from them).
        ``visible``: as in ``CausalSelfAttention.forward``."""
        L = self.layer
        if hook is not None:
            x = hook(f"{L}.resid_in", x)
        a = self.attn(self.read(x, pos, "attn", hook), self.sites, hook, last, visible)
        if last is not None:
            rows = torch.arange(x.shape[0], device=x.device)[:, None]  # (B, 1)
            x = x[rows, last]  # (B, R, d_model)
            pos = None if pos is None else pos.expand(x.shape[0], -1, -1)[rows, last]  # (B, R, d_pos_emb)
        x = self.add(x, a, "resid_post_attn")
        if hook is not None:
            x = hook(f"{L}.resid_mid", x)
        x = self.add(x, self.mlp(self.read(x, pos, "mlp", hook), self.sites, hook), "resid_post_mlp")
        return x


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        pos_width = config.d_pos_emb or (config.d_model if config.pos_emb else None)
        self.wpe = nn.Embedding(config.n_ctx, pos_width) if pos_width else None
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = make_norm(config, config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)  # untied from wte by default
        # The bigram table adds a learned logit row for the current token, so the sparse weights
        # do not have to spend their budget on bigram statistics. It stays dense.
        self.bigram = nn.Parameter(torch.zeros(config.vocab_size, config.vocab_size)) if config.bigram_table else None
        if config.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(config.vocab_size))
        else:
            self.final_logits_bias = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual writes: scaled init as in GPT-2
                nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))
        if config.tied_unembed:
            self.lm_head.weight = self.wte.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def embed(self, idx: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings (B, T, d_model), with the added position embedding; and the concatenated
        position embedding (1 or B, T, d_pos_emb) that each block reads, or None. ``positions`` (B, T):
        each token's position (default 0, 1, ..., T - 1); a packed row may be longer than n_ctx, its
        positions are below n_ctx where its prompts fit (``tasks.packing``, checked when packing)."""
        T = idx.shape[1]
        if positions is None:
            assert T <= self.config.n_ctx, f"sequence of {T} tokens is longer than n_ctx={self.config.n_ctx}"
            positions = torch.arange(T, device=idx.device)[None]  # (1, T)
        x = self.wte(idx)  # (B, T, d_model)
        pos = None
        if self.wpe is not None:
            pos = self.wpe(positions)  # (1 or B, T, width)
            if self.config.d_pos_emb is None:
                x, pos = x + pos, None  # added once, broadcast over B
        return x, pos

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, hook: Hook | None = None):
        """idx: (B, T) token ids. Returns (logits (B, T, vocab), loss or None).

        With ``targets`` (B, T), no hook (here or on ``lm_head``) and float32 outside autocast (CPU
        training, validation loss) logits is None: the loss and its gradients come from the final
        residual a chunk of tokens at a time (``model.loss``; no second derivative), never holding the
        (B, T, vocab) logits."""
        x = self.final(idx, hook)  # (B, T, d_model)
        if (targets is not None and hook is None and x.dtype == torch.float32 and not self.lm_head._forward_hooks
                and not self.lm_head._forward_pre_hooks and not torch.is_autocast_enabled(x.device.type)
                and bool((targets >= 0).all())):
            return None, unembedding_loss(x, self.lm_head.weight, self.bigram, self.final_logits_bias, idx, targets)
        logits = self.unembed(x, idx)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))  # (B*T, vocab)
        return logits, loss

    def final(self, idx: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """The final residual after ln_f, (B, T, d_model): ``forward`` without the unembedding (what
        recording node activations needs; ``final`` is the last hook point)."""
        x, pos = self.embed(idx)  # (B, T, d_model), and (1, T, d_pos_emb) or None
        for block in self.blocks:
            x = block(x, hook, pos)
        if hook is not None:
            x = hook("final.resid", x)
        x = self.ln_f(x, hook, "final.norm")
        if hook is not None:
            x = hook("final", x)
        return x

    def last_final(self, idx: torch.Tensor, last: torch.Tensor, hook: Hook | None = None, *,
                   positions: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
        """The final residual after ln_f at the positions ``last``: (B,) one per row gives (B, d_model),
        (B, R) gives (B, R, d_model).

        What a task loss reads, for less work than ``forward``: the last block computes its queries,
        attention output, MLP and residual writes at those positions only (keys and values at every
        position). Hooks see (B, R, ...) tensors from the last block's query on (R = 1 for one per row).
        The numbers match ``forward``'s at those positions up to float rounding (other matrix shapes).
        ``positions`` and ``visible`` (B, T, T) let one row hold several prompts: two prompts with a
        shared prefix run it once (``prune.evaluator``); by default positions count from 0 and
        attention is causal."""
        one = last.dim() == 1
        last = last[:, None] if one else last  # (B, R)
        x, pos = self.embed(idx, positions)  # (B, T, d_model), and (1 or B, T, d_pos_emb) or None
        if not self.blocks:
            x = x[torch.arange(idx.shape[0], device=idx.device)[:, None], last]  # (B, R, d_model)
        for i, block in enumerate(self.blocks):
            x = block(x, hook, pos, last if i == len(self.blocks) - 1 else None, visible)
        if hook is not None:
            x = hook("final.resid", x)
        x = self.ln_f(x, hook, "final.norm")
        if hook is not None:
            x = hook("final", x)
        return x[:, 0] if one else x  # (B, d_model) or (B, R, d_model)

    def last_logits(self, idx: torch.Tensor, last: torch.Tensor, hook: Hook | None = None, *,
                    positions: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at the positions ``last``: (B,) gives (B, vocab), (B, R) gives (B, R, vocab); the
        arguments as ``last_final``'s. The unembedding runs in the weights' format, outside any autocast
        (the blocks may run under one)."""
        final = self.last_final(idx, last, hook, positions=positions, visible=visible)  # (B, d) or (B, R, d)
        rows = torch.arange(idx.shape[0], device=idx.device)
        tokens = idx[rows, last] if last.dim() == 1 else idx[rows[:, None], last]  # (B,) or (B, R)
        with torch.autocast(idx.device.type, enabled=False):
            return self.unembed(final.to(self.lm_head.weight.dtype), tokens)

    def unembed(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits from final residuals x (..., d_model) at tokens idx (...): lm_head plus the bigram row."""
        logits = self.lm_head(x)  # (..., vocab)
        if self.bigram is not None:
            logits = logits + F.embedding(idx, self.bigram)  # (..., vocab): the row of each current token
        if self.final_logits_bias is not None:
            logits = logits + self.final_logits_bias
        return logits

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
