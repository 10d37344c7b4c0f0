"""Edge counting against a brute-force loop over node pairs (docs/pruning.md, "Edges")."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from circuitlab.config import ModelConfig  # noqa: E402
from circuitlab.model import GPT  # noqa: E402
from circuitlab.model.nodes import NodeSpace  # noqa: E402
from circuitlab.prune.edges import count_edges, edge_list  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


WRITES = ("attn.out", "mlp.out")
READS = ("attn.in", "mlp.in", "final")


def _parse(name: str):
    hook, _, idx = name.rpartition(".")
    if hook == "final":
        return None, "final", int(idx)
    layer, site = hook.split(".", 1)
    return int(layer), site, int(idx)


def _sublayer(layer, site, n_layer):
    if site == "final":
        return 2 * n_layer
    return 2 * layer + (0 if site.startswith("attn") else 1)


def brute_force_edges(model, kept) -> set[tuple[int, int]]:
    """The edge definition, written as directly as possible: one check per ordered pair of kept nodes."""
    cfg = model.config
    inner = cfg.n_head * cfg.d_head
    names = NodeSpace.from_config(cfg).names()
    idx = [i for i in range(len(names)) if kept[i]]
    edges = set()
    for s in idx:
        ls, ss, i = _parse(names[s])
        for d in idx:
            ld, sd, j = _parse(names[d])
            w = None
            if ls is not None and ls == ld:
                blk = model.blocks[ls]
                if ss == "attn.in" and sd in ("attn.q", "attn.k", "attn.v"):
                    off = {"attn.q": 0, "attn.k": inner, "attn.v": 2 * inner}[sd]
                    w = blk.attn.c_attn.weight[off + j, i]
                elif ss == "attn.v" and sd == "attn.out":
                    w = blk.attn.c_proj.weight[j, i]
                elif ss == "mlp.in" and sd == "mlp.neuron":
                    w = blk.mlp.c_fc.weight[j, i]
                elif ss == "mlp.neuron" and sd == "mlp.out":
                    w = blk.mlp.c_proj.weight[j, i]
            if w is not None and float(w) != 0.0:
                edges.add((s, d))
            if ss in WRITES and sd in READS and i == j and \
                    _sublayer(ld, sd, cfg.n_layer) > _sublayer(ls, ss, cfg.n_layer):
                norm = model.ln_f if sd == "final" else (model.blocks[ld].ln_1 if sd == "attn.in" else model.blocks[ld].ln_2)
                if float(norm.weight[j]) != 0.0:
                    edges.add((s, d))
    return edges


def random_sparse_model(seed, n_layer, d_model, n_head, d_head, d_mlp, density, norm_zero):
    cfg = ModelConfig(vocab_size=11, n_ctx=8, n_layer=n_layer, d_model=d_model, n_head=n_head, d_head=d_head,
                      d_mlp=d_mlp, bigram_table=False)
    torch.manual_seed(seed)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_((torch.rand(p.shape, generator=g) < density).float())
            elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
                p.mul_((torch.rand(p.shape, generator=g) >= norm_zero).float())
    return model


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_layer=st.integers(1, 2), d_model=st.integers(1, 5),
       n_head=st.integers(1, 2), d_head=st.integers(1, 3), d_mlp=st.integers(1, 6),
       density=st.floats(0.0, 1.0), norm_zero=st.sampled_from([0.0, 0.3]), p_keep=st.floats(0.0, 1.0))
def test_edges_match_brute_force(seed, n_layer, d_model, n_head, d_head, d_mlp, density, norm_zero, p_keep):
    model = random_sparse_model(seed, n_layer, d_model, n_head, d_head, d_mlp, density, norm_zero)
    n = NodeSpace.from_config(model.config).num_nodes
    kept = torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)) < p_keep
    with torch.no_grad():
        expected = brute_force_edges(model, kept)
    counts = count_edges(model, kept)
    listed = edge_list(model, kept)
    assert counts["total"] == len(expected)
    assert counts["weight"] + counts["residual"] == counts["total"]
    assert len(listed) == len(set(listed)) == counts["total"]
    assert set(listed) == expected


def test_paper_one_neuron_example():
    """Paper §2: a one-neuron MLP circuit reading one channel and writing one channel is 3 nodes, 2 edges."""
    model = random_sparse_model(0, 1, 4, 1, 2, 4, 1.0, 0.0)
    space = NodeSpace.from_config(model.config)
    kept = torch.zeros(space.num_nodes, dtype=torch.bool)
    for name in ("0.mlp.in.1", "0.mlp.neuron.2", "0.mlp.out.3"):
        kept[space.index(name)] = True
    assert count_edges(model, kept) == {"weight": 2, "residual": 0, "total": 2}
    # Reading the written channel at the final residual adds one residual edge.
    kept[space.index("final.3")] = True
    assert count_edges(model, kept) == {"weight": 2, "residual": 1, "total": 3}


def test_dense_model_pays_for_every_pair():
    model = random_sparse_model(1, 1, 3, 1, 2, 5, 1.0, 0.0)
    space = NodeSpace.from_config(model.config)
    kept = torch.ones(space.num_nodes, dtype=torch.bool)
    cfg = model.config
    inner = cfg.n_head * cfg.d_head
    weight = 3 * inner * cfg.d_model + cfg.d_model * inner + 2 * cfg.d_mlp * cfg.d_model
    # writes: attn.out -> mlp.in, final; mlp.out -> final (per channel)
    assert count_edges(model, kept) == {"weight": weight, "residual": 3 * cfg.d_model,
                                        "total": weight + 3 * cfg.d_model}


def test_wrong_shape_is_rejected():
    model = random_sparse_model(2, 1, 3, 1, 2, 5, 1.0, 0.0)
    with pytest.raises(ValueError):
        count_edges(model, torch.ones(3, dtype=torch.bool))
