"""The next-token loss straight from the final residual, without the (B, T, vocab) logits in memory.

``GPT.forward(idx, targets)`` in float32 (CPU training, validation loss) computes the unembedding
(lm_head, the bigram row, the logit bias) and the cross-entropy a chunk of tokens at a time, and in
the same pass the gradients of the residual, lm_head, the bigram table and the bias: a chunk's logits
(``ROW_FLOATS`` floats) stay in cache from the product to the gradient, where the plain path writes
and rereads the whole logit tensor four or five times (product, bigram add, log-softmax, the NLL
gradient's zero fill, the log-softmax backward). On the ``small`` preset (4,096 tokens a step,
vocab 2,048, 2 threads) the dense training step fell from 180 to 132-133 ms
(benchmarks/results/train-step-mfu). CUDA's bfloat16 autocast keeps the plain path.

The numbers are those of ``F.cross_entropy(logits, targets)`` up to float rounding (other sums);
``tests/test_model.py`` checks the loss and every gradient against it. The gradients are computed
with the loss, from the weights of that moment: there is no second derivative (``create_graph``
raises), and ``lm_head``'s module hooks do not run (``GPT.forward`` takes the plain path when it
has any).
"""

from __future__ import annotations

import torch

ROW_FLOATS = 1 << 20  # logits per chunk (4 MiB in float32): chunk rows = ROW_FLOATS // vocab


class _UnembedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bigram, bias, idx, targets, want):  # x (N, d), idx and targets (N,)
        n, vocab = x.shape[0], weight.shape[0]
        rows = max(1, ROW_FLOATS // vocab)
        need = [want and bool(flag) for flag in ctx.needs_input_grad[:4]]  # x, weight, bigram, bias
        grads = any(need)
        gx = torch.empty_like(x) if need[0] else None
        gw = torch.zeros_like(weight) if need[1] else None
        gb = torch.zeros_like(bigram) if need[2] and bigram is not None else None
        gbias = torch.zeros_like(bias) if need[3] and bias is not None else None
        total = x.new_zeros(())
        for s in range(0, n, rows):
            xc, ic, tc = x[s: s + rows], idx[s: s + rows], targets[s: s + rows]
            z = xc @ weight.t() if bigram is None else torch.addmm(bigram.index_select(0, ic), xc, weight.t())  # (c, vocab)
            if bias is not None:
                z += bias
            lse = torch.logsumexp(z, dim=-1)  # (c,)
            total += (lse - z.gather(1, tc[:, None])[:, 0]).sum()
            if not grads:
                continue
            g = z.sub_(lse[:, None]).exp_()  # softmax (c, vocab), in place of the logits
            g[torch.arange(len(tc), device=g.device), tc] -= 1.0
            g.div_(n)  # d(mean loss) / d(logits)
            if gx is not None:
                torch.mm(g, weight, out=gx[s: s + rows])
            if gw is not None:
                gw.addmm_(g.t(), xc)
            if gb is not None:
                gb.index_add_(0, ic, g)
            if gbias is not None:
                gbias += g.sum(0)
        ctx.save_for_backward(*(t if t is not None else torch.empty(0) for t in (gx, gw, gb, gbias)))
        ctx.present = (gx is not None, gw is not None, gb is not None, gbias is not None)
        return total / n

    @staticmethod
    def backward(ctx, go):  # go: the scalar loss's gradient (1 when the loss is what backward starts from)
        if torch.is_grad_enabled():  # create_graph=True: the gradients are computed values, with no graph
            raise RuntimeError("the chunked next-token loss has no second derivative: call the model without "
                               "targets and take F.cross_entropy of its logits for a double backward")
        saved = [t if present else None for t, present in zip(ctx.saved_tensors, ctx.present, strict=True)]
        scale = float(go)
        out = [None if t is None else (t if scale == 1.0 else t * scale) for t in saved]
        return (*out, None, None, None)


def unembedding_loss(x: torch.Tensor, weight: torch.Tensor, bigram: torch.Tensor | None, bias: torch.Tensor | None,
                     idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``x @ weight.T (+ bigram[idx]) (+ bias)`` against ``targets``.

    x (..., d_model) final residuals; idx (...) the current tokens (the bigram rows); targets (...)
    the next tokens, every one a real token (no ignore index)."""
    want = torch.is_grad_enabled()
    x2 = x.reshape(-1, x.shape[-1])  # (N, d_model)
    return _UnembedCrossEntropy.apply(x2, weight, bigram, bias, idx.reshape(-1), targets.reshape(-1), want)
