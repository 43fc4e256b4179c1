"""A qkv language model as Hugging Face `LlamaForCausalLM`, and a Llama-format directory back into qkv.

    to_llama(model)                              # LlamaForCausalLM, the same logits
    import_llama("exported/lm-llama", "runs/lm")  # `qkv import --from DIR --out RUN`

Llama is the 2017 decoder with the changes of docs/paper-map.md ("After 2017"): pre-norm RMSNorm,
rotary positions, SwiGLU, grouped-query attention, no biases, no sqrt(d_model) embedding scale.
A qkv decoder-only model with exactly those options computes the same function; any other
option is refused with a one-line ConfigError naming it.

The one layout difference: qkv's RoPE rotates the pairs of neighbouring dimensions (2i, 2i+1), as
in the RoFormer paper, while Llama's `rotate_half` pairs dimension i with i + d_head/2. Both use
frequency theta^(-2i/d_head) for pair i, so within every head the export renames the rows of W_Q
and W_K by P = [0, 2, 4, ..., 1, 3, 5, ...] (the even dimensions, then the odd). Q K^T sums over
dimensions in any order, so the scores are unchanged; W_V and W_O are copied as they are. The
import applies the inverse permutation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.config import ModelConfig
from qkv.errors import CheckpointError, ConfigError
from qkv.files import atomic_directory
from qkv.interop.common import halves_permutation, require_transformers
from qkv.run.targets import LLAMA_OPTIONS, check_llama
from qkv.model.layers import swiglu_width


def llama_config(cfg: ModelConfig) -> Any:
    """The LlamaConfig that mirrors `cfg`."""
    transformers = require_transformers()
    return transformers.LlamaConfig(
        vocab_size=cfg.tgt_vocab_size, hidden_size=cfg.d_model, intermediate_size=swiglu_width(cfg.d_ff),
        num_hidden_layers=cfg.n_decoder_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads, hidden_act="silu", max_position_embeddings=cfg.max_len,
        rms_norm_eps=cfg.layer_norm_eps, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=cfg.bias, mlp_bias=cfg.bias, attention_dropout=cfg.attention_dropout,
        tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=cfg.pad_id, bos_token_id=cfg.bos_id, eos_token_id=cfg.eos_id,
    )


def _rope_rows(heads: int, d_head: int, inverse: bool = False) -> torch.Tensor:
    """Row order of a (heads * d_head, ...) q or k projection: qkv's pairs (2i, 2i+1) -> Llama's (i, i + d/2)."""
    p = halves_permutation(d_head)
    if inverse:
        p = torch.argsort(p)
    return (torch.arange(heads)[:, None] * d_head + p).flatten()


# qkv parameter name -> Llama parameter name, per layer (the q and k rows are permuted, see above)
_LAYER_NAMES = {
    "self_attn.q_proj": "self_attn.q_proj", "self_attn.k_proj": "self_attn.k_proj",
    "self_attn.v_proj": "self_attn.v_proj", "self_attn.out_proj": "self_attn.o_proj",
    "ff.w1": "mlp.gate_proj", "ff.w3": "mlp.up_proj", "ff.w2": "mlp.down_proj",
    "attn_block.norm": "input_layernorm", "ff_block.norm": "post_attention_layernorm",
}


def _name_pairs(cfg: ModelConfig) -> list[tuple[str, str, torch.Tensor | None]]:
    """(qkv name, Llama name, row permutation or None) for every parameter."""
    pairs: list[tuple[str, str, torch.Tensor | None]] = [("embed.token.weight", "model.embed_tokens.weight", None)]
    rows = {"self_attn.q_proj": _rope_rows(cfg.n_heads, cfg.d_head), "self_attn.k_proj": _rope_rows(cfg.kv_heads, cfg.d_head)}
    kinds = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_decoder_layers):
        for ours, theirs in _LAYER_NAMES.items():
            for kind in ("weight",) if ours.endswith("norm") else kinds:
                pairs.append((f"decoder.layers.{i}.{ours}.{kind}", f"model.layers.{i}.{theirs}.{kind}", rows.get(ours)))
    pairs.append(("decoder.norm.weight", "model.norm.weight", None))
    if not cfg.tie_embeddings:
        pairs.append(("lm_head.weight", "lm_head.weight", None))
    return pairs


def to_llama(model: nn.Module) -> Any:
    """The `LlamaForCausalLM` (eval mode) that computes what the qkv language model `model` computes."""
    transformers = require_transformers()
    cfg = model.cfg
    check_llama(cfg)
    llama = transformers.LlamaForCausalLM(llama_config(cfg)).eval()
    ours, theirs = model.state_dict(), llama.state_dict()
    with torch.no_grad():
        for src, dst, rows in _name_pairs(cfg):
            theirs[dst].copy_(ours[src] if rows is None else ours[src][rows])
    gen = llama.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = cfg.bos_id, cfg.eos_id, cfg.pad_id
    gen.max_length = cfg.max_len
    return llama


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or one CheckpointError (unreadable, not UTF-8, not JSON, nested
    too deep, not an object)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())[:160]
        raise CheckpointError(f"{path} cannot be read as JSON ({reason}); copy the file again from the "
                              f"model's source") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object; copy the file again "
                              f"from the model's source")
    return data


def model_config_from_llama(hf: dict[str, Any]) -> ModelConfig:
    """The qkv ModelConfig of a Llama config.json (a missing or mistyped field: one CheckpointError)."""
    try:
        return _model_config_from_llama(hf)
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as exc:
        if isinstance(exc, ConfigError):
            raise
        what = f"lacks {exc.args[0]!r}" if isinstance(exc, KeyError) else f"has a value of the wrong type or size ({exc})"
        raise CheckpointError(f"config.json {what}; a Llama config.json needs hidden_size, num_attention_heads, "
                              f"num_hidden_layers, intermediate_size, vocab_size, max_position_embeddings "
                              f"as positive integers") from None


def _model_config_from_llama(hf: dict[str, Any]) -> ModelConfig:
    if hf.get("model_type") != "llama":
        raise ConfigError(f"config.json describes model_type={hf.get('model_type')!r}, not 'llama'")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ConfigError(f"RoPE scaling {rope.get('rope_type', rope.get('type'))!r} is not supported; "
                          "only the original RoPE (rope_type 'default')")
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"hidden_act={hf['hidden_act']!r} is not SwiGLU's silu")
    d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, d_model // n_heads):
        raise ConfigError(f"head_dim={hf['head_dim']} differs from hidden_size / num_attention_heads")
    if bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)):
        raise ConfigError("attention_bias and mlp_bias differ; qkv has one `bias` option for all linear layers")
    d_ff = round(1.5 * hf["intermediate_size"])                        # swiglu_width(d_ff) == intermediate_size
    cfg = ModelConfig(
        arch="decoder-only", tgt_vocab_size=hf["vocab_size"], d_model=d_model, n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads, n_decoder_layers=hf["num_hidden_layers"],
        d_ff=d_ff, dropout=0.0, attention_dropout=float(hf.get("attention_dropout", 0.0)),
        max_len=hf["max_position_embeddings"], layer_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), bias=bool(hf.get("attention_bias", False)),
        pad_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
        bos_id=hf.get("bos_token_id", 1), eos_id=hf.get("eos_token_id", 2),
        **{k: v for k, v in LLAMA_OPTIONS.items() if k != "arch"},
    )
    if swiglu_width(cfg.d_ff) != hf["intermediate_size"]:
        raise ConfigError(f"intermediate_size={hf['intermediate_size']} is not a SwiGLU width qkv can hold")
    return cfg


def _read_weights(src: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    def load(path: Path) -> dict[str, torch.Tensor]:
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the model's weights are incomplete, copy them again")
        try:
            return load_file(path)
        except Exception as exc:  # safetensors' SafetensorError (truncated, bad header), OSError
            raise CheckpointError(f"{path} cannot be read as safetensors ({' '.join(str(exc).split())[:160]}); "
                                  f"the file is damaged or truncated, copy it again") from None

    # the Hugging Face layout's file names (not a qkv run's: those are qkv.run.RunDir's)
    single, index = src / "model.safetensors", src / "model.safetensors.index.json"
    if single.is_file():
        return load(single)
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index} has no weight_map of tensor names to files; copy it again")
        files = sorted(set(weight_map.values()))
        return {k: v for f in files for k, v in load(src / f).items()}
    raise CheckpointError(f"{src} holds no model.safetensors (or model.safetensors.index.json)")


def _read_tokenizer(src: Path) -> Any:
    """The qkv tokenizer of `src/tokenizer.json` (as qkv exports them: char, word or byte-level BPE)."""
    from tokenizers import Tokenizer as HFTokenizer

    from qkv.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

    path = src / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{src} has no tokenizer.json; qkv needs the tokenizer to write a run")
    data = _read_json(path)
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: 'model' is not an object; copy the file again")
    try:
        if model.get("type") == "BPE":
            return BPETokenizer(HFTokenizer.from_file(str(path)))
        if model.get("type") == "WordLevel":
            vocab = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
            char = (data.get("pre_tokenizer") or {}).get("type") == "Split"
            return (CharTokenizer if char else WordTokenizer)(vocab)
    except Exception as exc:  # DataError from the qkv classes, the Rust parser's plain Exception, a RecursionError
        raise CheckpointError(f"{path} cannot be read as a qkv tokenizer ({' '.join(str(exc).split())[:160]})") from None
    raise CheckpointError(f"{path} holds a {model.get('type')!r} tokenizer; qkv reads byte-level BPE, char or word")


def import_llama(src_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the Llama-format directory `src_dir` as a qkv run directory `out_dir`."""
    from qkv.model import DecoderOnly
    from qkv.run import save_run

    src = Path(src_dir)
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src} is not a Hugging Face model directory: config.json is missing")
    cfg = model_config_from_llama(_read_json(src / "config.json"))
    tokenizer = _read_tokenizer(src)
    if tokenizer.vocab_size != cfg.tgt_vocab_size:
        raise CheckpointError(f"{src}: tokenizer has {tokenizer.vocab_size} tokens, config.json vocab_size="
                              f"{cfg.tgt_vocab_size}")
    weights = _read_weights(src)
    model = DecoderOnly(cfg)
    state = model.state_dict()
    inverse = {"self_attn.q_proj": _rope_rows(cfg.n_heads, cfg.d_head, inverse=True),
               "self_attn.k_proj": _rope_rows(cfg.kv_heads, cfg.d_head, inverse=True)}
    with torch.no_grad():
        for ours, theirs, rows in _name_pairs(cfg):
            if theirs not in weights:
                raise CheckpointError(f"{src} lacks the weight {theirs!r} that a Llama of this config.json has")
            tensor = weights[theirs].float()
            if tensor.shape != state[ours].shape:       # the RoPE row permutation keeps the shape
                raise CheckpointError(f"{src}: {theirs} has shape {tuple(tensor.shape)}, expected {tuple(state[ours].shape)}")
            if rows is not None:
                tensor = tensor[inverse[next(k for k in inverse if k in ours)]]
            state[ours].copy_(tensor)
    with atomic_directory(out_dir, "imported run") as tmp:        # whole, or not at all
        save_run(tmp, model.eval(), {}, None, tokenizer)
    return Path(out_dir)
