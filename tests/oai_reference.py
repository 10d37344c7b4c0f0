"""Checkpoints in the format of OpenAI's circuit_sparsity, and an independent forward pass of that model.

Written for the tests from the reference's semantics (``circuit_sparsity/inference/gpt.py``: parameter
names and shapes, AbsTopK locations, the attention sink, concatenated position embeddings), with the
reference's own hook names. Nothing here imports circuitlab's model: it is the yardstick the imported
model is held against.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F


def _cfg(config: dict) -> dict:
    """The reference dataclass's defaults, filled in as its __post_init__ does."""
    c = {"block_size": 1024, "bias": True, "ln_bias": True, "rms_norm": False, "residual_activation_type": "identity",
         "activation_type": "gelu", "afrac": None, "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out",
         "tied_unembed": True, "enable_bigram_table": False, "d_pos_emb": None, "sink": False, "d_head": None,
         "d_mlp": None, **config}
    if c.get("d_mlp") is None and "n_mlp" in c:
        c["d_mlp"] = c["n_mlp"]
    c["d_mlp"] = c["d_mlp"] or 4 * c["d_model"]
    c["d_head"] = c["d_head"] or c["d_model"] // c["n_head"]
    return c


def make_state(config: dict, seed: int = 0, flash: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under the reference's state-dict names and shapes (float32)."""
    c = _cfg(config)
    g = torch.Generator().manual_seed(seed)
    D, V, N, H, dh, Fm = c["d_model"], c["vocab_size"], c["block_size"], c["n_head"], c["d_head"], c["d_mlp"]
    dp = c["d_pos_emb"]
    Din = D + (dp or 0)

    def rnd(*shape, std=0.3):
        return torch.randn(*shape, generator=g) * std

    def norm(prefix, dim, sd):
        sd[f"{prefix}.weight"] = 1 + rnd(dim, std=0.1)
        if not c["rms_norm"] and c["ln_bias"]:
            sd[f"{prefix}.bias"] = rnd(dim, std=0.1)

    sd = {"transformer.wte.weight": rnd(V, D), "transformer.wpe.weight": rnd(N, dp or D, std=0.2)}
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}"
        norm(f"{p}.ln_1", D, sd)
        norm(f"{p}.ln_2", D, sd)
        if dp:
            norm(f"{p}.ln_p1", dp, sd)
            norm(f"{p}.ln_p2", dp, sd)
        sd[f"{p}.attn.c_attn.weight"] = rnd(3 * H * dh, Din, std=1 / math.sqrt(Din))
        sd[f"{p}.attn.c_proj.weight"] = rnd(D, H * dh, std=1 / math.sqrt(H * dh))
        sd[f"{p}.mlp.c_fc.weight"] = rnd(Fm, Din, std=1 / math.sqrt(Din))
        sd[f"{p}.mlp.c_proj.weight"] = rnd(D, Fm, std=1 / math.sqrt(Fm))
        if c["bias"]:
            for name, n in (("attn.c_attn", 3 * H * dh), ("attn.c_proj", D), ("mlp.c_fc", Fm), ("mlp.c_proj", D)):
                sd[f"{p}.{name}.bias"] = rnd(n, std=0.1)
        if c["sink"] and flash:
            sd[f"{p}.attn.attn_imp.sink_logit"] = rnd(H, std=1.0)
        if not flash:  # the causal-mask buffer of the slow attention path
            sd[f"{p}.attn.bias"] = torch.ones(N, N).tril().view(1, 1, N, N)
    norm("transformer.ln_f", D, sd)
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if c["tied_unembed"] else rnd(V, D)
    sd["final_logits_bias"] = rnd(V, std=0.1)
    if c["enable_bigram_table"]:
        sd["bigram_table"] = rnd(V, V, std=0.5)
    return sd


def write_checkpoint(folder: Path, config: dict, state: dict, **save_kwargs) -> Path:
    """``beeg_config.json`` + ``final_model.pt`` as the reference's trainer writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "beeg_config.json").write_text(json.dumps(config))
    torch.save(state, folder / "final_model.pt", **save_kwargs)
    return folder


def _abs_topk(x, frac):
    k = int(frac * x.shape[-1])
    _, idx = torch.topk(x.abs(), k, dim=-1, sorted=False)
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


def reference_forward(config: dict, sd: dict, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(logits, {reference hook name: activation}) of the reference model in eval mode."""
    c = _cfg(config)
    sd = {k: v.float() for k, v in sd.items()}
    locs = set(c["afrac_loctypes"].split(","))
    H, dh = c["n_head"], c["d_head"]
    saved = {}

    def sparsify(x, loc):
        return _abs_topk(x, c["afrac"]) if c["afrac"] is not None and loc in locs else x

    def norm(x, prefix):
        if c["rms_norm"]:
            return F.rms_norm(x, (x.shape[-1],), sd[f"{prefix}.weight"], eps=None)
        return F.layer_norm(x, (x.shape[-1],), sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"), 1e-5)

    def linear(x, prefix):
        return F.linear(x, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"))

    def attention(q, k, v, sink):
        B, _, T, _ = q.shape
        if sink is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / math.sqrt(dh))
        # A zero key/value slot in front, always visible, whose logit is the head's sink logit.
        k = torch.cat([torch.zeros_like(k[:, :, :1]), k], dim=2)
        v = torch.cat([torch.zeros_like(v[:, :, :1]), v], dim=2)
        allow = torch.ones(T, T + 1, dtype=torch.bool)
        allow[:, 1:] = torch.ones(T, T, dtype=torch.bool).tril()
        mask = torch.where(allow, 0.0, torch.finfo(q.dtype).min).expand(B, H, T, T + 1).clone()
        mask[..., 0] += sink.view(1, H, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / math.sqrt(dh))

    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx]
    pos = sd["transformer.wpe.weight"][:T][None]
    cat = c["d_pos_emb"] is not None
    if not cat:
        x = x + pos
    act = {"gelu": F.gelu, "relu": F.relu}[c["activation_type"]]
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}"
        saved[f"{i}.resid_in"] = x
        h = norm(x, f"{p}.ln_1")
        if cat:
            h = torch.cat([h, norm(pos, f"{p}.ln_p1").expand(B, -1, -1)], dim=-1)
        h = saved[f"{i}.attn.act_in"] = sparsify(h, "attn_in")
        q, k, v = linear(h, f"{p}.attn.c_attn").split(H * dh, dim=-1)
        k, q, v = sparsify(k, "attn_k"), sparsify(q, "attn_q"), sparsify(v, "attn_v")
        saved.update({f"{i}.attn.q": q, f"{i}.attn.k": k, f"{i}.attn.v": v})
        heads = [t.view(B, T, H, dh).transpose(1, 2) for t in (q, k, v)]
        sink = sd.get(f"{p}.attn.attn_imp.sink_logit") if c["sink"] else None
        y = attention(*heads, sink).transpose(1, 2).reshape(B, T, H * dh)
        saved[f"{i}.attn.y"] = y
        o = saved[f"{i}.attn.resid_delta"] = sparsify(linear(y, f"{p}.attn.c_proj"), "attn_out")
        x = x + o
        if c["residual_activation_type"] == "relu":
            x = torch.relu(x)
        x = sparsify(x, "resid_post_attn")
        saved[f"{i}.resid_mid"] = x
        h = norm(x, f"{p}.ln_2")
        if cat:
            h = torch.cat([h, norm(pos, f"{p}.ln_p2").expand(B, -1, -1)], dim=-1)
        h = saved[f"{i}.mlp.act_in"] = sparsify(h, "mlp_in")
        n = saved[f"{i}.mlp.post_act"] = sparsify(act(linear(h, f"{p}.mlp.c_fc")), "mlp_neuron")
        o = saved[f"{i}.mlp.resid_delta"] = sparsify(linear(n, f"{p}.mlp.c_proj"), "mlp_out")
        x = x + o
        if c["residual_activation_type"] == "relu":
            x = torch.relu(x)
        x = sparsify(x, "resid_post_mlp")
    saved["final_resid"] = x
    logits = F.linear(norm(x, "transformer.ln_f"), sd["lm_head.weight"])
    logits = logits + sd.get("final_logits_bias", torch.zeros(logits.shape[-1]))
    if c["enable_bigram_table"]:
        logits = logits + sd["bigram_table"][idx]
    return logits, saved


#: Reference hook names -> circuitlab hook names (docs/interop.md has the same table).
HOOK_NAMES = {"resid_in": "resid_in", "attn.act_in": "attn.in", "attn.q": "attn.q", "attn.k": "attn.k",
              "attn.v": "attn.v", "attn.y": "attn.y", "attn.resid_delta": "attn.out", "resid_mid": "resid_mid",
              "mlp.act_in": "mlp.in", "mlp.post_act": "mlp.neuron", "mlp.resid_delta": "mlp.out"}


def circuitlab_hook(ref_name: str) -> str:
    if ref_name == "final_resid":
        return "final.resid"
    layer, rest = ref_name.split(".", 1)
    return f"{layer}.{HOOK_NAMES[rest]}"
