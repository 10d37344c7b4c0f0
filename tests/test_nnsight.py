"""A circuitlab model under nnsight: nodes read and patched by their circuitlab names match circuitlab's own."""

from __future__ import annotations

import operator

import pytest
import torch
from nnsight import NNsight

from circuitlab.errors import CircuitlabError
from circuitlab.interop.envoys import module_point
from circuitlab.model.nodes import NodeSpace, record_activations
from circuitlab.prune.ablation import ablation_hook, ablation_values
from circuitlab.train.runs import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _envoy(wrapped, point):
    return operator.attrgetter(point.module)(wrapped)


@pytest.mark.parametrize("names", [["1.mlp.neuron.7"], ["0.attn.in.3", "0.attn.out.5", "1.mlp.in.2", "final.4"],
                                   ["0.attn.k.9", "1.mlp.out.1"]], ids=["neuron", "four-sites", "key-and-write"])
def test_read_and_patch_under_nnsight(tiny, names):
    model, tok, info = load_model(tiny.run())
    space = NodeSpace.from_config(model.config)
    ids = tiny.batch(0, batch_size=2)[0][:, :24]
    values = ablation_values(model, tok, info, "mean")  # circuitlab's ablation: each node's corpus mean
    gate = torch.ones(space.num_nodes)
    for n in names:
        gate[space.index(n)] = 0.0
    with torch.no_grad():
        expected, _ = model(ids, hook=ablation_hook(space, gate, values))
    recorded = record_activations(model, ids, space)
    points = sorted(((module_point(n, model.config), n) for n in names),
                    key=lambda p: space.index(p[1]))  # nnsight visits modules in forward order
    wrapped = NNsight(model)
    reads = {}
    with torch.no_grad(), wrapped.trace(ids):
        for point, n in points:
            value = getattr(_envoy(wrapped, point), point.where)
            reads[n] = value[..., point.channel].clone().save()
            value[..., point.channel] = values[space.index(n)]
        logits = wrapped.output[0].save()
    first = points[0][1]  # nothing upstream of the first node is patched: its read is the clean value
    torch.testing.assert_close(reads[first], recorded[..., space.index(first)])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits, model(ids)[0])  # the patch changed something


def test_reads_every_site_unpatched(tiny):
    model, _, _ = load_model(tiny.run(), need_tokenizer=False)
    space = NodeSpace.from_config(model.config)
    ids = tiny.batch(1, batch_size=2)[0][:, :16]
    recorded = record_activations(model, ids, space)
    names = [f"{loc.hook}.{loc.size - 1}" for loc in space.locations]  # one node per site, forward order
    wrapped = NNsight(model)
    reads = {}
    with torch.no_grad(), wrapped.trace(ids):
        seen = set()
        for n in names:
            point = module_point(n, model.config)
            if (point.module, point.where) in seen:  # q, k, v share c_attn's output
                continue
            seen.add((point.module, point.where))
            reads[n] = getattr(_envoy(wrapped, point), point.where).save()
    for n, value in reads.items():
        point = module_point(n, model.config)
        torch.testing.assert_close(value[..., point.channel], recorded[..., space.index(n)])


def test_unknown_names_and_sparsified_qkv(tiny):
    import attrs

    config = tiny.model_config()
    with pytest.raises(CircuitlabError, match="node"):
        module_point("9.mlp.neuron.1", config)
    sparse = attrs.evolve(config, afrac=0.5, afrac_locations=("attn_q",))
    with pytest.raises(CircuitlabError, match="attn_q"):
        module_point("0.attn.q.1", sparse)
    assert module_point("0.attn.k.1", sparse).channel == config.n_head * config.d_head + 1
