"""The sparse GPT-2 core: hook points, activation sparsity, attention sink, configs round-trip."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from circuitlab.config import AFRAC_LOCATIONS, ModelConfig, TrainConfig, from_dict, to_dict
from circuitlab.errors import CircuitlabError
from circuitlab.model import GPT, abs_topk
from circuitlab.model.nodes import NodeSpace, record_activations

TINY = ModelConfig(vocab_size=64, n_ctx=16, d_model=16, n_layer=2, n_head=2, d_head=8, d_mlp=32)


def recorder(seen: dict):
    """A hook that stores every activation it sees and passes it on unchanged."""

    def hook(name, x):
        seen[name] = x.detach().clone()
        return x

    return hook


def test_every_node_location_has_a_hook_with_the_documented_shape():
    model = GPT(TINY)
    idx = torch.randint(0, 64, (3, 7))
    seen = {}
    model(idx, hook=recorder(seen))
    space = NodeSpace.from_config(TINY)
    for loc in space.locations:
        assert tuple(seen[loc.hook].shape) == (3, 7, loc.size), loc.hook
    for norm in ("0.attn.norm", "1.mlp.norm", "final.norm"):
        assert tuple(seen[norm].shape) == (3, 7, 1)


def test_hooks_can_replace_activations():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 64, (2, 5))
    base, _ = model(idx)
    zeroed, _ = model(idx, hook=lambda name, x: torch.zeros_like(x) if name == "1.mlp.neuron" else x)
    assert not torch.allclose(base, zeroed)
    # Zeroing the final residual leaves only the bigram table's logits.
    only_bigram, _ = model(idx, hook=lambda name, x: torch.zeros_like(x) if name == "final" else x)
    assert torch.allclose(only_bigram, model.bigram[idx])


def test_record_activations_matches_hooks():
    model = GPT(TINY)
    idx = torch.randint(0, 64, (2, 6))
    acts = record_activations(model, idx)
    space = NodeSpace.from_config(TINY)
    loc = space.by_hook()["0.attn.v"]
    captured = {}
    model(idx, hook=recorder(captured))
    assert torch.equal(acts[:, :, loc.offset: loc.offset + loc.size], captured["0.attn.v"])
    assert acts.shape == (2, 6, space.num_nodes)


@given(width=st.integers(1, 40), frac=st.floats(0.01, 1.0), seed=st.integers(0, 1000))
def test_abs_topk_keeps_exactly_k_by_magnitude(width, frac, seed):
    x = torch.randn(3, width, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(frac * width))
    y = abs_topk(x, k)
    assert bool(((y != 0).sum(-1) == k).all())
    assert torch.equal(y[y != 0], x[y != 0])


def test_activation_sparsity_applies_at_configured_locations():
    cfg = attrs.evolve(TINY, afrac=0.25, afrac_locations=("mlp_neuron", "attn_v"))
    model = GPT(cfg)
    seen = {}
    model(torch.randint(0, 64, (2, 5)), hook=recorder(seen))
    assert bool(((seen["0.mlp.neuron"] != 0).sum(-1) == 8).all())  # 32 * 0.25
    assert bool(((seen["1.attn.v"] != 0).sum(-1) == 4).all())  # 16 * 0.25
    assert bool(((seen["0.attn.q"] != 0).sum(-1) > 4).all())  # not configured: dense


def test_attention_sink_is_learnable_and_causal():
    cfg = attrs.evolve(TINY, attn_sink=True)
    model = GPT(cfg)
    idx = torch.randint(0, 64, (2, 6))
    _, loss = model(idx, idx)
    loss.backward()
    assert model.blocks[0].attn.sink_logit.grad is not None
    # Causality: changing a later token never changes earlier logits.
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % 64
    a, _ = model(idx)
    b, _ = model(idx2)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)


configs = st.builds(
    ModelConfig,
    vocab_size=st.integers(8, 4096), n_ctx=st.integers(4, 512), d_model=st.integers(4, 256),
    n_layer=st.integers(1, 8), n_head=st.integers(1, 16), d_head=st.integers(1, 64), d_mlp=st.integers(4, 1024),
    bias=st.booleans(), attn_sink=st.booleans(), bigram_table=st.booleans(), pos_emb=st.booleans(),
    afrac=st.none() | st.floats(0.01, 1.0),
    afrac_locations=st.lists(st.sampled_from(AFRAC_LOCATIONS), unique=True).map(tuple),
)


@given(configs)
def test_model_config_round_trips_through_json(cfg):
    assert from_dict(ModelConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


@given(st.builds(TrainConfig, density=st.floats(0.001, 1.0), steps=st.integers(1, 10**6), seed=st.integers(0, 2**31),
                 corpus=st.none() | st.text(max_size=20)))
def test_train_config_round_trips_through_json(cfg):
    assert from_dict(TrainConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_unknown_config_keys_are_refused():
    with pytest.raises(CircuitlabError, match="unknown key"):
        from_dict(ModelConfig, {"d_modle": 3})


@given(shape=st.fixed_dictionaries({
    "n_layer": st.integers(1, 3), "attn_sink": st.booleans(), "pos_emb": st.booleans(), "bias": st.booleans(),
    "norm": st.sampled_from(["rms", "layer"]), "afrac": st.sampled_from([None, 0.5]),
    "d_pos_emb": st.sampled_from([None, 4])}),
       lengths=st.lists(st.integers(1, 12), min_size=1, max_size=5), seed=st.integers(0, 1000),
       gate_seed=st.integers(0, 1000))
def test_last_final_matches_the_full_pass_at_each_rows_last_position(shape, lengths, seed, gate_seed):
    """GPT.last_final computes the last block at one position per row; with any node hook (here an
    ablation mix with random gates) it gives the full pass's final residual at those positions."""
    from circuitlab.prune.ablation import ablation_hook

    if shape["d_pos_emb"] is not None:
        shape = {**shape, "pos_emb": False}
    torch.manual_seed(seed)
    cfg = attrs.evolve(TINY, **shape)
    model = GPT(cfg).eval()
    for p in model.parameters():  # non-trivial norms, biases and sink logits
        torch.nn.init.normal_(p, std=0.3)
    last = torch.tensor([n - 1 for n in lengths])
    idx = torch.randint(0, 64, (len(lengths), max(lengths)))
    space = NodeSpace.from_config(cfg)
    g = torch.Generator().manual_seed(gate_seed)
    hook = ablation_hook(space, torch.rand(space.num_nodes, generator=g), torch.randn(space.num_nodes, generator=g))
    full = {}

    def keep_final(name, x):
        x = hook(name, x)
        if name == "final":
            full["final"] = x
        return x

    with torch.no_grad():
        model(idx, hook=keep_final)
        fast = model.last_final(idx, last, hook)
    rows = torch.arange(len(lengths))
    assert fast.shape == (len(lengths), cfg.d_model)
    torch.testing.assert_close(fast, full["final"][rows, last], rtol=1e-4, atol=1e-5)


@given(seed=st.integers(0, 2**16), bigram=st.booleans(), bias=st.booleans(), tied=st.booleans(),
       rows=st.sampled_from([1, 5, 16, 10_000]), scale=st.sampled_from([1.0, 3.0]))
def test_chunked_unembedding_loss_matches_cross_entropy_of_logits(seed, bigram, bias, tied, rows, scale):
    """GPT.forward(idx, targets) computes the loss and its gradients a chunk of tokens at a time
    (model.loss): the loss and every gradient match F.cross_entropy over the materialised logits."""
    from unittest import mock

    from circuitlab.model import loss as fused

    with mock.patch.object(fused, "ROW_FLOATS", rows * TINY.vocab_size):  # several chunks, a ragged last one
        _check_chunked_loss(seed, bigram, bias, tied, scale)


def _check_chunked_loss(seed, bigram, bias, tied, scale):
    cfg = attrs.evolve(TINY, bigram_table=bigram, final_logits_bias=bias, tied_unembed=tied)
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # non-zero bigram rows and a spread of logits
        if bias:
            model.final_logits_bias.normal_()
    idx, targets = torch.randint(0, 64, (3, 11)), torch.randint(0, 64, (3, 11))

    def grads(loss):
        model.zero_grad(set_to_none=True)
        (scale * loss).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    logits, chunked = model(idx, targets)
    assert logits is None
    got = grads(chunked)
    full, _ = model(idx)
    plain = torch.nn.functional.cross_entropy(full.reshape(-1, 64), targets.reshape(-1))
    want = grads(plain)
    assert torch.allclose(chunked, plain, rtol=1e-5, atol=1e-6)
    assert got.keys() == want.keys() and ("bigram" in got) == bigram
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name
    with torch.no_grad():  # the validation loss: no gradients computed, the same number
        assert torch.allclose(model(idx, targets)[1], plain, rtol=1e-5, atol=1e-6)


def test_chunked_loss_leaves_frozen_weights_alone_and_has_no_second_derivative():
    model = GPT(attrs.evolve(TINY, bigram_table=True))
    idx, targets = torch.randint(0, 64, (2, 7)), torch.randint(0, 64, (2, 7))
    model.lm_head.weight.requires_grad_(False)  # a probe on a frozen unembedding
    _, loss = model(idx, targets)
    with pytest.raises(RuntimeError, match="no second derivative"):  # a Hessian product must not be silently 0
        torch.autograd.grad(loss, [model.bigram], create_graph=True)
    (grad_bigram,) = torch.autograd.grad(loss, [model.bigram])
    assert model.lm_head.weight.grad is None and grad_bigram.shape == model.bigram.shape
    # A forward hook on lm_head sees the logits: the plain path, logits returned.
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    logits, hooked = model(idx, targets)
    assert logits is not None and seen == [(2, 7, 64)]
    assert torch.allclose(hooked, loss, rtol=1e-5)
