"""Packed pairs (both prompts of a pair in one row, their shared prefix once) and bfloat16 mask training."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuitlab.config import ModelConfig
from circuitlab.model import GPT
from circuitlab.model.nodes import NodeSpace
from circuitlab.prune.evaluator import Evaluator
from circuitlab.tasks import TaskBatch
from circuitlab.tasks.packing import PackedPairs, pair_rows

TINY = ModelConfig(vocab_size=64, n_ctx=16, d_model=16, n_layer=2, n_head=2, d_head=8, d_mlp=32)


def pair_batch(lengths, shared, seed: int) -> TaskBatch:
    """Pairs of prompts: pair i has lengths ``lengths[i]`` and its two prompts agree on their first
    ``shared[i]`` tokens (more may agree by chance)."""
    g = torch.Generator().manual_seed(seed)
    T = max(max(a, b) for a, b in lengths)
    ids = torch.zeros(2 * len(lengths), T, dtype=torch.long)
    last = torch.zeros(2 * len(lengths), dtype=torch.long)
    for i, ((la, lb), s) in enumerate(zip(lengths, shared, strict=True)):
        a, b = torch.randint(1, 64, (la,), generator=g), torch.randint(1, 64, (lb,), generator=g)
        s = min(s, la, lb)
        b[:s] = a[:s]
        ids[2 * i, :la], ids[2 * i + 1, :lb] = a, b
        last[2 * i], last[2 * i + 1] = la - 1, lb - 1
    n = len(ids)
    return TaskBatch(ids=ids, last=last, target=torch.randint(0, 64, (n,), generator=g),
                     contrast=torch.randint(0, 64, (n,), generator=g))


pairs_strategy = st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(0, 12)), min_size=1, max_size=6)


@given(pairs=pairs_strategy, seed=st.integers(0, 1000))
def test_a_packed_row_holds_both_prompts_and_their_positions(pairs, seed):
    batch = pair_batch([(a, b) for a, b, _ in pairs], [s for *_, s in pairs], seed)
    packed = PackedPairs.of(batch)
    for i in range(len(pairs)):
        la, lb = int(batch.last[2 * i]) + 1, int(batch.last[2 * i + 1]) + 1
        a, b = batch.ids[2 * i, :la], batch.ids[2 * i + 1, :lb]
        p, n = int(packed.prefix[i]), int(packed.length[i])
        assert 0 <= p < min(la, lb) and n == la + lb - p
        assert torch.equal(a[:p], b[:p])
        assert p == min(la, lb) - 1 or a[p] != b[p]  # the longest shared prefix that leaves B a token
        row, pos = packed.ids[i, :n], packed.positions[i, :n]
        assert torch.equal(row[:la], a) and torch.equal(row[la:], b[p:])
        assert pos.tolist() == list(range(la)) + list(range(p, lb))
        assert packed.read[i].tolist() == [la - 1, n - 1]


def test_pair_rows_accepts_whole_pairs_in_order_only():
    assert pair_rows(torch.tensor([4, 5, 0, 1])).tolist() == [2, 0]
    assert pair_rows(torch.tensor([5, 4])) is None
    assert pair_rows(torch.tensor([1, 2])) is None
    assert pair_rows(torch.tensor([0, 1, 2])) is None


@settings(max_examples=40, deadline=None)
@given(shape=st.fixed_dictionaries({
    "n_layer": st.integers(1, 3), "attn_sink": st.booleans(), "pos_emb": st.booleans(),
    "norm": st.sampled_from(["rms", "layer"]), "afrac": st.sampled_from([None, 0.5]),
    "d_pos_emb": st.sampled_from([None, 4])}),
       pairs=pairs_strategy, freeze_norm=st.booleans(), seed=st.integers(0, 1000))
def test_packed_passes_give_the_logits_of_each_prompt_alone(shape, pairs, freeze_norm, seed):
    """Every evaluator pass (whole set, a list of pairs, a random gate, frozen norm) gives the same
    last-position logits packed as prompt by prompt, up to float rounding."""
    if shape["d_pos_emb"] is not None:
        shape = {**shape, "pos_emb": False}
    torch.manual_seed(seed)
    model = GPT(attrs.evolve(TINY, **shape)).eval()
    for p in model.parameters():  # non-trivial norms, biases, sink logits and position embeddings
        torch.nn.init.normal_(p, std=0.3)
    batch = pair_batch([(a, b) for a, b, _ in pairs], [s for *_, s in pairs], seed)
    values = torch.randn(NodeSpace.from_config(model.config).num_nodes)
    packed = Evaluator(model, batch, values, freeze_norm=freeze_norm, chunk=4)
    alone = Evaluator(model, batch, values, freeze_norm=freeze_norm, chunk=4, pack=False)
    assert packed.packed is not None and alone.packed is None
    torch.testing.assert_close(packed.reference, alone.reference, rtol=1e-4, atol=1e-4)
    gate = torch.rand(len(values), generator=torch.Generator().manual_seed(seed))
    rows = torch.stack([2 * torch.arange(len(pairs)).flip(0), 2 * torch.arange(len(pairs)).flip(0) + 1], 1).flatten()
    with torch.no_grad():
        for r in (None, rows):
            torch.testing.assert_close(packed.last_logits(gate, r), alone.last_logits(gate, r), rtol=1e-4, atol=1e-4)


def test_bfloat16_mask_passes_keep_attention_and_the_mix_in_float32():
    """Under bfloat16 autocast (PruneConfig.mask_dtype) the matrix products run in bfloat16, but the
    attention kernel, the ablation mix and the logits stay float32, and the logits stay close."""
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    batch = pair_batch([(6, 7), (5, 5), (9, 4)], [3, 4, 2], 0)
    ev = Evaluator(model, batch, torch.zeros(NodeSpace.from_config(TINY).num_nodes))
    seen = {}
    inner = ev.model.last_final

    def spy(*a, **k):
        hook = a[2]

        def watch(name, x):
            out = hook(name, x)
            seen.setdefault(name, out.dtype)
            return out

        return inner(a[0], a[1], watch, **k)

    ev.model.last_final = spy
    gate = torch.rand(ev.num_nodes)
    with torch.no_grad():
        low = ev.last_logits(gate, dtype="bfloat16")
        assert seen["0.attn.y"] == torch.float32  # the attention output
        assert seen["0.mlp.neuron"] == torch.float32  # the mixed node values
        high = ev.last_logits(gate, dtype="float32")
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, high, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_mask_gate_gets_a_gradient_through_packed_passes(dtype):
    torch.manual_seed(0)
    model = GPT(TINY).eval().requires_grad_(False)
    batch = pair_batch([(6, 7), (5, 5)], [3, 4], 0)
    ev = Evaluator(model, batch, torch.zeros(NodeSpace.from_config(TINY).num_nodes))
    gate = torch.full((ev.num_nodes,), 0.5, requires_grad=True)
    ev.last_logits(gate, torch.tensor([2, 3, 0, 1]), dtype=dtype)[:, 0].sum().backward()
    assert gate.grad is not None and gate.grad.dtype == torch.float32 and bool(gate.grad.abs().sum() > 0)
