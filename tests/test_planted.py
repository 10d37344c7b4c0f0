"""A planted circuit: a hand-built model whose task is solved by a known set of 7 nodes.

Model (1 layer, d_model 8, one head of width 4, 8 neurons, vocabulary 16, no bigram table):

- Prompts are ``[cue, filler, filler]``; the cue is token 1 (answer token 14) or token 2 (answer 15).
  The two cues differ only in residual channel 0 (+2 / -2); fillers have 0 there.
- Planted path: ``attn.in.0 -> attn.v.0 -> attn.out.1`` (q and k are zero, so the last position
  attends uniformly and picks up a third of the cue's sign), then ``mlp.in.1 -> mlp.neuron.0 ->
  mlp.out.2`` (a GELU that fires for the positive cue, centred by a bias) and ``final.2``, which the
  two answer logits read with opposite signs.
- Distractors: noise channels 3-6 on every token and a constant channel 7; a value channel and
  attention write that carry noise; neuron 1, which reads the same signal as neuron 0 but writes a
  channel the answer logits ignore; neurons 2-7, which map noise to noise; answer logits that read
  the noise channels equally (so they cancel in the logit difference). All q and k nodes are constant.

Under mean ablation each of the 7 planted nodes is necessary (ablating any one of them removes the
cue's sign) and together they are sufficient, so the smallest circuit at the target is exactly that
set. **Tolerance:** every built-in pruner must return a circuit that reaches the target and differs
from the planted set by at most one node (symmetric difference <= 1, i.e. Jaccard >= 7/8).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from circuitlab import plugins  # noqa: E402
from circuitlab.config import MASK_DTYPES, ModelConfig, PruneConfig  # noqa: E402
from circuitlab.model import GPT  # noqa: E402
from circuitlab.prune.ablation import compute_node_means  # noqa: E402
from circuitlab.prune.search import TaskData, search_circuit  # noqa: E402
from circuitlab.tasks import TaskBatch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


A_TOK, B_TOK, CUE_A, CUE_B = 14, 15, 1, 2
FILLERS = list(range(3, 14))
PLANTED = {"0.attn.in.0", "0.attn.v.0", "0.attn.out.1", "0.mlp.in.1", "0.mlp.neuron.0", "0.mlp.out.2", "final.2"}
TOLERANCE = 1  # nodes of symmetric difference


def make_batch(n_pairs: int, seed: int) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    fill = torch.tensor(FILLERS)[torch.randint(0, len(FILLERS), (n_pairs, 2), generator=g)]
    ids = torch.zeros(2 * n_pairs, 3, dtype=torch.long)
    ids[0::2, 0], ids[1::2, 0] = CUE_A, CUE_B
    ids[0::2, 1:], ids[1::2, 1:] = fill, fill
    return TaskBatch(ids=ids, last=torch.full((2 * n_pairs,), 2), target=torch.tensor([A_TOK, B_TOK] * n_pairs),
                     contrast=torch.tensor([B_TOK, A_TOK] * n_pairs))


def build_planted(seed: int = 0) -> GPT:
    g = torch.Generator().manual_seed(seed)
    cfg = ModelConfig(vocab_size=16, n_ctx=8, d_model=8, n_layer=1, n_head=1, d_head=4, d_mlp=8,
                      bigram_table=False, pos_emb=False)
    m = GPT(cfg)
    at, mlp = m.blocks[0].attn, m.blocks[0].mlp
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for norm in (m.blocks[0].ln_1, m.blocks[0].ln_2, m.ln_f):
            norm.weight.fill_(1.0)
        E = m.wte.weight
        E[:, 3:7] = 0.5 * torch.randn(16, 4, generator=g)  # noise channels
        E[:, 7] = 3.0  # a constant channel keeps every token's RMS about equal
        E[CUE_B, 3:7] = E[CUE_A, 3:7]  # the cues differ only in channel 0
        E[CUE_A, 0], E[CUE_B, 0] = 2.0, -2.0
        inner = 4
        at.c_attn.weight[2 * inner + 0, 0] = 1.0  # planted: attn.in.0 -> v.0
        at.c_attn.weight[2 * inner + 1, 3] = 1.0  # distractor: noise -> v.1
        at.c_proj.weight[1, 0] = 1.0  # planted: v.0 -> attn.out.1
        at.c_proj.weight[4, 1] = 1.0  # distractor: v.1 -> attn.out.4
        mlp.c_fc.weight[0, 1] = 8.0  # planted: mlp.in.1 -> neuron 0
        mlp.c_proj.weight[2, 0] = 1.0  # planted: neuron 0 -> mlp.out.2
        mlp.c_fc.weight[1, 1] = 8.0  # distractor: the same signal ...
        mlp.c_proj.weight[5, 1] = 1.0  # ... written where the answer logits do not look
        for j in range(2, 8):  # distractors: noise -> noise
            mlp.c_fc.weight[j, 3 + (j % 5)] = 1.0
            mlp.c_proj.weight[3 + ((j + 2) % 5), j] = 0.5
        m.lm_head.weight[A_TOK, 2], m.lm_head.weight[B_TOK, 2] = 1.5, -1.5
        m.lm_head.weight[A_TOK, 3:8] = m.lm_head.weight[B_TOK, 3:8] = torch.randn(5, generator=g)
        m.lm_head.weight[3:14] = torch.randn(11, 8, generator=g)
        # Centre neuron 0's write so the two cues land on opposite sides of zero.
        batch, seen = make_batch(16, 123), {}

        def hook(name, x):
            if name == "0.mlp.neuron":
                seen["n0"] = x[:, -1, 0]
            return x

        m(batch.ids, hook=hook)
        mlp.c_proj.bias[2] = -seen["n0"].mean()
    return m.eval()


def corpus_windows(seed: int = 7) -> torch.Tensor:
    """The 'pretraining distribution' the node means come from: uniform random tokens."""
    return torch.randint(1, 14, (64, 8), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def planted():
    model = build_planted()
    return model, make_batch(64, 1), make_batch(32, 2), compute_node_means(model, corpus_windows())


def test_planted_model_solves_the_task_only_through_the_planted_nodes(planted):
    from circuitlab.model.nodes import NodeSpace
    from circuitlab.prune.evaluator import Evaluator
    from circuitlab.tasks import loss_and_accuracy

    model, _, test, means = planted
    ev = Evaluator(model, test, means)
    space = NodeSpace.from_config(model.config)
    n = space.num_nodes
    full_loss, full_acc = loss_and_accuracy(ev.diffs(torch.ones(n)))
    assert full_acc == 1.0 and full_loss < 0.15
    only = torch.zeros(n)
    for name in PLANTED:
        only[space.index(name)] = 1.0
    assert loss_and_accuracy(ev.diffs(only))[0] < 0.15  # sufficient
    for name in PLANTED:  # each one necessary
        g = only.clone()
        g[space.index(name)] = 0.0
        assert loss_and_accuracy(ev.diffs(g))[0] > 0.5, name


@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
@pytest.mark.parametrize("pruner", ["heaviside", "hardconcrete", "sigmoid"])
def test_builtin_pruner_recovers_the_planted_circuit(planted, pruner, mask_dtype):
    model, train, test, means = planted
    assert pruner in plugins.get_registry().names("pruner")
    circuit = search_circuit(model, TaskData(train=train, test=test, values=means, task="planted"),
                             PruneConfig(pruner=pruner, seed=0, mask_dtype=mask_dtype))
    assert circuit.reached
    assert circuit.loss <= 0.15
    extra, missing = set(circuit.node_names) - PLANTED, PLANTED - set(circuit.node_names)
    assert len(extra) + len(missing) <= TOLERANCE, (sorted(extra), sorted(missing))
    # The validations tell the circuit apart from the rest of the model and from chance.
    assert circuit.validations.necessity > 0.5
    assert circuit.validations.random > circuit.validations.sufficiency
