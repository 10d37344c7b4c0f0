"""``circuitlab import-oai``: an OpenAI circuit_sparsity checkpoint folder -> a circuitlab run folder.

A released model is ``beeg_config.json`` (see ``oai_config``) and ``final_model.pt``, a plain
``torch.save(model.state_dict())``. The weights are read with ``torch.load(weights_only=True,
mmap=True)``: weights-only loading refuses any pickled object that is not a tensor or a plain
container, so a crafted file cannot run code; it is never retried with a full unpickle. Memory-mapping
keeps a large model (csp_yolo2: 1.7 GB) out of RAM until each tensor is converted and written.

The run folder written is an ordinary one (docs/interop.md): ``model.safetensors`` (float32, circuitlab
parameter names), ``config.json`` (``kind: circuitlab-run``, the mapped ``ModelConfig``, provenance
naming the source files and their sha256), and ``tokenizer.json`` when ``--tokenizer`` is given.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import ImportConfig, ModelConfig, to_dict
from ..errors import CircuitlabError
from ..files import (
    fault_point,
    read_json,
    recover_dir,
    remove_tree,
    replace_dir,
    sha256_file,
    sibling_tmp,
    write_bytes,
    write_json,
)
from ..outputs import guard_output
from ..train.runs import RUN_KIND, TOKENIZER
from .oai_config import model_config_from_oai, with_final_logits_bias

CONFIG_FILE = "beeg_config.json"
WEIGHTS_FILE = "final_model.pt"
SOURCE_FORMAT = "openai/circuit_sparsity"

# Reference state-dict names (regex) -> circuitlab names; ``{}`` receives the layer index.
_BLOCK_NAMES = {
    r"ln_1\.(weight|bias)": "ln_1.{}", r"ln_2\.(weight|bias)": "ln_2.{}",
    r"ln_p1\.(weight|bias)": "ln_p1.{}", r"ln_p2\.(weight|bias)": "ln_p2.{}",
    r"attn\.c_attn\.(weight|bias)": "attn.c_attn.{}", r"attn\.c_proj\.(weight|bias)": "attn.c_proj.{}",
    r"attn\.attn_imp\.sink_logit": "attn.sink_logit",
    r"mlp\.c_fc\.(weight|bias)": "mlp.c_fc.{}", r"mlp\.c_proj\.(weight|bias)": "mlp.c_proj.{}",
}
_TOP_NAMES = {
    "transformer.wte.weight": "wte.weight", "transformer.wpe.weight": "wpe.weight",
    "transformer.ln_f.weight": "ln_f.weight", "transformer.ln_f.bias": "ln_f.bias",
    "lm_head.weight": "lm_head.weight", "final_logits_bias": "final_logits_bias", "bigram_table": "bigram",
}
_BLOCK_RE = re.compile(r"transformer\.h\.(\d+)\.(.+)")
_MASK_BUFFER_RE = re.compile(r"transformer\.h\.\d+\.attn\.bias")  # the non-flash causal mask, not a bias


def circuitlab_name(name: str) -> str | None:
    """The circuitlab parameter name of a reference state-dict key (None: not a model parameter)."""
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    m = _BLOCK_RE.fullmatch(name)
    if m:
        layer, rest = m.groups()
        for pattern, target in _BLOCK_NAMES.items():
            sub = re.fullmatch(pattern, rest)
            if sub:
                return f"blocks.{layer}." + target.format(*sub.groups())
    return None


def _refusal(exc: Exception) -> str:
    """The one line of torch's weights-only refusal that names what was refused."""
    text = str(exc)
    m = re.search(r"(Unsupported (global|operand)[^\n]*|Weights only load failed[^\n.]*)", text)
    return (m.group(1) if m else text.strip().splitlines()[0] if text.strip() else type(exc).__name__)[:200]


def torch_load_weights_only(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``, memory-mapped where the file allows: tensors and plain
    containers only. A pickle with anything else, or a file that is no torch checkpoint, is one line."""
    import pickle
    import zipfile

    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Files from before torch's zip format cannot be memory-mapped: read them whole, still weights-only.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CircuitlabError(f"{str(path)!r} holds more than tensors, and weights-only loading refused it "
                              f"({_refusal(exc)}); circuitlab never unpickles arbitrary objects: re-save the "
                              "weights as a plain state dict of tensors") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, IndexError, KeyError, TypeError,
            AttributeError) as exc:  # a foreign file trips the unpickler in many ways
        raise CircuitlabError(f"{str(path)!r} is not a readable torch checkpoint ({_refusal(exc)}); "
                              "download it again") from None
    return state


def load_weights(path: Path) -> dict[str, Any]:
    """``final_model.pt`` as {name: tensor}, weights-only and memory-mapped; one-line errors."""
    import torch

    if not path.is_file():
        raise CircuitlabError(f"{str(path)!r} does not exist; an OpenAI checkpoint folder holds {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE}")
    state = torch_load_weights_only(path)
    if isinstance(state, dict) and set(state) == {"model"} and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CircuitlabError(f"{str(path)!r} is not a state dict of named tensors (got {type(state).__name__}); "
                              "pass the final_model.pt of a released model")
    for prefix in ("_orig_mod.", "module."):  # torch.compile / DDP wrappers
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _shape(state: dict[str, Any], name: str) -> tuple[int, ...] | None:
    t = state.get(name)
    return None if t is None else tuple(t.shape)


def check_fits(state: dict[str, Any], model: ModelConfig) -> None:
    """The config's dimensions against the weights' names and shapes, from the tensors' metadata alone,
    before any model is built from the config (a config claiming 10^8 layers must not build them)."""
    layers = sorted({int(m.group(1)) for k in state if (m := _BLOCK_RE.fullmatch(k))})
    if layers != list(range(model.n_layer)):
        held = f"layers 0..{layers[-1]}" if layers == list(range(len(layers))) and layers else f"{len(layers)} layers"
        raise CircuitlabError(f"{CONFIG_FILE} says n_layer={model.n_layer}, but {WEIGHTS_FILE} holds {held}; "
                              "the two files do not belong together")
    d_in = model.d_in
    expected = {
        "transformer.wte.weight": ((model.vocab_size, model.d_model), "vocab_size, d_model"),
        "transformer.wpe.weight": ((model.n_ctx, model.d_pos_emb or model.d_model), "block_size, d_pos_emb or d_model"),
        "transformer.h.0.attn.c_attn.weight": ((3 * model.n_head * model.d_head, d_in), "3 n_head d_head, d_model"),
        "transformer.h.0.mlp.c_fc.weight": ((model.d_mlp, d_in), "d_mlp, d_model"),
    }
    for name, (shape, keys) in expected.items():
        got = _shape(state, name)
        if name == "transformer.wpe.weight" and got is None and not model.pos_emb and not model.d_pos_emb:
            continue
        if got is None:
            raise CircuitlabError(f"{WEIGHTS_FILE} lacks {name}, which {CONFIG_FILE} calls for; pass the "
                                  "final_model.pt of a released model")
        if got != shape:
            raise CircuitlabError(f"{WEIGHTS_FILE}: {name} has shape {got}, but {CONFIG_FILE} ({keys}) implies "
                                  f"{shape}; the two files do not belong together")


def convert_state(state: dict[str, Any], model: ModelConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Reference tensors -> circuitlab float32 tensors, checked name by name and shape by shape."""
    import torch

    from ..model.gpt import GPT

    check_fits(state, model)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        expected = {k: tuple(v.shape) for k, v in GPT(model).state_dict().items()}
    out, dtypes, unexpected = {}, {}, []
    for name, tensor in state.items():
        if _MASK_BUFFER_RE.fullmatch(name):
            continue
        target = circuitlab_name(name)
        if target is None or target not in expected:
            unexpected.append(name)
            continue
        t = tensor
        if target.endswith("sink_logit") and t.numel() == 1:  # one logit shared by every head
            t = t.reshape(1).expand(model.n_head)
        if tuple(t.shape) != expected[target]:
            raise CircuitlabError(f"{WEIGHTS_FILE}: {name} has shape {tuple(tensor.shape)}, but {CONFIG_FILE} "
                                  f"implies {expected[target]}; the two files do not belong together")
        dtypes[name] = str(tensor.dtype).replace("torch.", "")
        out[target] = t.to(torch.float32).contiguous()
    if unexpected:
        raise CircuitlabError(f"{WEIGHTS_FILE} has tensors this config does not use: {unexpected[:4]}"
                              f"{' ...' if len(unexpected) > 4 else ''}; check that {CONFIG_FILE} belongs to it")
    missing = sorted(set(expected) - set(out))
    if missing:
        raise CircuitlabError(f"{WEIGHTS_FILE} lacks {missing[:4]}{' ...' if len(missing) > 4 else ''} that "
                              f"{CONFIG_FILE} calls for (e.g. sink: true needs attn.attn_imp.sink_logit)")
    if model.tied_unembed:
        if not torch.equal(out["wte.weight"], out["lm_head.weight"]):
            raise CircuitlabError(f"{CONFIG_FILE} says tied_unembed: true, but wte and lm_head differ in "
                                  f"{WEIGHTS_FILE}")
        out["lm_head.weight"] = out["lm_head.weight"].clone()  # safetensors stores no shared tensors
    return out, dtypes


def read_tokenizer(path: str | Path, vocab_size: int):
    """A tokenizers JSON file, or a GPT-2 style ``encoder.json`` with ``vocab.bpe`` beside it."""
    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"--tokenizer {str(path)!r} does not exist; pass a tokenizers JSON file or an "
                              "encoder.json with vocab.bpe beside it")
    tok = _gpt2_tokenizer(path) if (path.parent / "vocab.bpe").exists() and path.name != TOKENIZER else None
    if tok is None:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise CircuitlabError(f"--tokenizer {str(path)!r} is not a tokenizers JSON file "
                                  f"({str(exc).splitlines()[0][:120]}); pass tokenizer.json, or encoder.json "
                                  "with vocab.bpe beside it") from None
    if tok.get_vocab_size() > vocab_size:
        raise CircuitlabError(f"--tokenizer {str(path)!r} has {tok.get_vocab_size()} tokens but the model only "
                              f"{vocab_size}; pass the tokenizer the model was trained with")
    return tok


def _gpt2_tokenizer(encoder: Path):
    """The byte-level BPE of encoder.json + vocab.bpe (tiktoken's "data gym" files), with the paper's split."""
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    from ..data.tokenizer import EOT, PRETOKENIZE_PATTERN

    try:
        vocab = json.loads(encoder.read_text(encoding="utf-8"))
        lines = (encoder.parent / "vocab.bpe").read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        tok = Tokenizer(models.BPE(vocab={k: v for k, v in vocab.items()}, merges=merges))
    except Exception as exc:
        raise CircuitlabError(f"--tokenizer {str(encoder)!r} with vocab.bpe is not a GPT-2 style BPE "
                              f"({str(exc).splitlines()[0][:120]})") from None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    return tok


def _read_config(src: Path) -> tuple[ModelConfig, dict, dict]:
    if not src.is_dir():
        raise CircuitlabError(f"{str(src)!r} is not a folder; pass the folder holding {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE}")
    raw = read_json(src / CONFIG_FILE, CONFIG_FILE)
    model, notes = model_config_from_oai(raw)
    return model, notes, raw


def import_oai(src: str | Path, out: str | Path, config: ImportConfig | None = None, note=None) -> dict:
    """Convert the checkpoint folder ``src`` into the run folder ``out``; returns a summary."""
    config = config or ImportConfig()
    src, out = Path(src), Path(out)
    guard_output(out, "run", inputs=(src, config.tokenizer, config.corpus))  # never over anything but a run
    model, notes, raw = _read_config(src)  # a bad config fails before the weights are touched
    recover_dir(out)  # a kill during an earlier replacement: the complete run back in place
    if out.exists() and not config.overwrite:
        raise CircuitlabError(f"{str(out)!r} already exists; pass --overwrite to replace it, or another --out")
    tok = read_tokenizer(config.tokenizer, model.vocab_size) if config.tokenizer else None
    state = load_weights(src / WEIGHTS_FILE)
    model = with_final_logits_bias(model, "final_logits_bias" in state)
    tensors, dtypes = convert_state(state, model)
    if note and notes["ignored"]:
        note(f"ignored config keys (no effect on the forward pass): {', '.join(notes['ignored'])}")
    provenance = {
        "circuitlab_version": __version__, "imported_from": {
            "format": SOURCE_FORMAT, "path": str(src.resolve()),
            "config_sha256": sha256_file(src / CONFIG_FILE), "weights_sha256": sha256_file(src / WEIGHTS_FILE),
            "config": raw, "ignored_keys": notes["ignored"], "dtypes": sorted(set(dtypes.values())),
            "tokenizer_name": notes["tokenizer_name"]},
        "tokenizer": None if tok is None else str(Path(config.tokenizer).resolve()),
        "tokenizer_hash": None if tok is None else _tokenizer_hash(tok),
        "corpus": {"hash": None, "note": "trained on OpenAI's corpus; ablation means and mined tasks use "
                                         "train.corpus (default: this interpreter's stdlib)"},
    }
    write_run(out, tensors, model, provenance, tok, config.corpus, SOURCE_FORMAT)
    return {"run": str(out), "source": str(src), "model": to_dict(model), "ignored_keys": notes["ignored"],
            "tokenizer": provenance["tokenizer"], "stored_values": int(sum(t.numel() for t in tensors.values()))}


def write_run(out: Path, tensors: dict, model: ModelConfig, provenance: dict, tok, corpus: str | None,
              source: str) -> None:
    """Write an imported run folder next to ``out`` and swap it into place (replacing ``out``)."""
    meta = {"kind": RUN_KIND, "status": "complete", "model": to_dict(model), "train": {"corpus": corpus},
            "provenance": provenance}
    # Built beside --out, then swapped in (replace_dir): a kill or a full disk at any instant leaves the
    # old run folder or the new one at --out, never neither, and no temporary folder once swept.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling_tmp(out)
    tmp.mkdir()
    try:
        _save_weights(tensors, tmp / "model.safetensors", out / "model.safetensors", source)
        if tok is not None:
            write_bytes(tmp / TOKENIZER, tok.to_str().encode())
        write_json(tmp / "config.json", meta)
        fault_point("import:before-swap")
        replace_dir(tmp, out)
    finally:
        remove_tree(tmp, settle=0.0)


def _save_weights(tensors: dict[str, Any], path: Path, shown: Path, source: str) -> None:
    """``save_file``, with its write errors (file-size limit, full disk) as the ``OSError`` they are."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata={"circuitlab_version": __version__, "source": source})
    except SafetensorError as exc:
        m = re.search(r"(?:code: |os error )(\d+)", str(exc))
        code = int(m.group(1)) if m else errno.EIO
        raise OSError(code, os.strerror(code), str(shown)) from None


def _tokenizer_hash(tok) -> str:
    from ..data.tokenizer import tokenizer_hash

    return tokenizer_hash(tok)
