"""Export a qkv translation model to CTranslate2.

    export_ct2("runs/de-en", "exported/de-en-ct2", quantize="int8")
    qkv translate --model runs/de-en --engine ct2 --ct2-model exported/de-en-ct2 "Ein Hund."

The export fills a `ctranslate2.specs.TransformerSpec` straight from qkv's weights: CTranslate2's
Transformer has a switch or a slot for every option of the 2017 Transformer (post-/pre-LN,
ReLU/GELU, sinusoidal or learned positions as an explicit table, sqrt(d_model) scaling, shared or
separate embeddings, tied or untied output layer, no biases), so no detour through `transformers`
is needed; the options since 2017 (RoPE, RMSNorm, SwiGLU, GQA, QK-norm, the logit soft-cap) are
refused by `qkv.run.targets.check_ct2`. The position table is written as qkv computes it (interleaved sin/cos).
The vocabulary lists each id's token string, so ids map one to one. `qkv_source.json` records
the SHA-256 of the weights exported, so that `--engine ct2` refuses the export beside another run.

`quantize="int8"` stores the matrices as 8-bit integers with one scale per row: about 4x smaller
and faster on CPU, at a small cost in accuracy (measure it with BLEU, see docs/interop.md).

Translating with the exported model is a search backend, `qkv.search.ct2.Ct2Translator`, used
through the one text pipeline (`qkv.text`, `backend=`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.errors import ConfigError
from qkv.files import atomic_directory
from qkv.run import RunDir
from qkv.run.targets import check_ct2
from qkv.search.ct2 import SOURCE_RECORD, require_ctranslate2, vocabulary

QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16", "bfloat16")


def _np(t: torch.Tensor) -> Any:
    return t.detach().float().cpu().numpy()


def _linear(spec: Any, *linears: nn.Linear) -> None:
    """Fill a LinearSpec from one nn.Linear, or from several stacked (fused q|k|v, k|v)."""
    spec.weight = _np(torch.cat([m.weight for m in linears]))
    if linears[0].bias is not None:
        spec.bias = _np(torch.cat([m.bias for m in linears]))


def _norm(spec: Any, norm: nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _np(norm.weight), _np(norm.bias)


def _self_attention(spec: Any, attn: nn.Module, norm: nn.LayerNorm) -> None:
    _linear(spec.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)
    _linear(spec.linear[1], attn.out_proj)
    _norm(spec.layer_norm, norm)


def _cross_attention(spec: Any, attn: nn.Module, norm: nn.LayerNorm) -> None:
    _linear(spec.linear[0], attn.q_proj)
    _linear(spec.linear[1], attn.k_proj, attn.v_proj)
    _linear(spec.linear[2], attn.out_proj)
    _norm(spec.layer_norm, norm)


def _feed_forward(spec: Any, layer: nn.Module) -> None:
    _linear(spec.linear_0, layer.ff.w1)
    _linear(spec.linear_1, layer.ff.w2)
    _norm(spec.layer_norm, layer.ff_block.norm)


def _embeddings(spec: Any, embed: nn.Module) -> None:
    """Token embedding, its sqrt(d_model) scale and the position table as qkv computes it."""
    token_spec = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    token_spec.weight = _np(embed.token.weight)
    spec.scale_embeddings = float(embed.scale)
    spec.position_encodings.encodings = _np(embed.position(embed.position.max_len))


def to_ct2_spec(model: nn.Module, src_tokens: list[str], tgt_tokens: list[str]) -> Any:
    """The CTranslate2 TransformerSpec of a qkv EncoderDecoder, with both vocabularies."""
    cfg = model.cfg
    check_ct2(cfg)
    require_ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    activation = common_spec.Activation.GELU if cfg.activation == "gelu" else common_spec.Activation.RELU
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.n_encoder_layers, cfg.n_decoder_layers), cfg.n_heads, pre_norm=cfg.norm_first, activation=activation
    )
    _embeddings(spec.encoder, model.src_embed)
    _embeddings(spec.decoder, model.tgt_embed)
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder.layers):
        _self_attention(layer_spec.self_attention, layer.self_attn, layer.attn_block.norm)
        _feed_forward(layer_spec.ffn, layer)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder.layers):
        _self_attention(layer_spec.self_attention, layer.self_attn, layer.attn_block.norm)
        _cross_attention(layer_spec.attention, layer.cross_attn, layer.cross_block.norm)
        _feed_forward(layer_spec.ffn, layer)
    if cfg.norm_first:
        _norm(spec.encoder.layer_norm, model.encoder.norm)
        _norm(spec.decoder.layer_norm, model.decoder.norm)
    spec.decoder.projection.weight = _np(model.lm_head.weight)
    _set_config(spec, tgt_tokens, cfg)
    spec.register_source_vocabulary(src_tokens)
    spec.register_target_vocabulary(tgt_tokens)
    return spec


def _set_config(spec: Any, tgt_tokens: list[str], cfg: Any) -> None:
    """Decoding starts from <bos> and stops at <eos>; the source gets no special tokens (as in qkv)."""
    config = spec.config
    config.bos_token = config.decoder_start_token = tgt_tokens[cfg.bos_id]
    config.eos_token = tgt_tokens[cfg.eos_id]
    config.unk_token = tgt_tokens[cfg.unk_id]
    config.add_source_bos = config.add_source_eos = False
    config.layer_norm_epsilon = cfg.layer_norm_eps


def export_ct2(run_dir: str | os.PathLike, out_dir: str | os.PathLike, quantize: str | None = None) -> Path:
    """Write run `run_dir` as a CTranslate2 model directory (float32, or quantized)."""
    from qkv.run import load_run

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    run = load_run(run_dir)
    check_ct2(run.cfg)
    extra = {}
    if run.weights_digest is not None:      # which weights it came from: --engine ct2 checks it
        record = {"weights_sha256": run.weights_digest, "run": str(Path(run_dir).resolve())}
        extra[SOURCE_RECORD] = (json.dumps(record, indent=1) + "\n").encode("utf-8")
    return write_ct2(run.model, vocabulary(run.src_tokenizer), vocabulary(run.tgt_tokenizer), out_dir, quantize, extra)


def write_ct2(model: nn.Module, src_tokens: list[str], tgt_tokens: list[str], out_dir: str | os.PathLike,
              quantize: str | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """Convert `model`, quantize its weights if asked, and save model.bin + vocabularies (and the
    `extra` files, name -> bytes) in `out_dir`, all at once."""
    spec = to_ct2_spec(model, src_tokens, tgt_tokens)
    spec.validate()
    spec.optimize(quantization=quantize)
    out = Path(out_dir)
    with atomic_directory(out, "CTranslate2 export", replaceable=is_ct2_export) as tmp:   # whole, or not at all
        spec.save(str(tmp))
        for name, data in (extra or {}).items():
            (tmp / name).write_bytes(data)            # inside the temporary directory: whole, or not at all
    return out


def is_ct2_export(directory: Path) -> bool:
    """Whether `directory` looks like a CTranslate2 model directory (a previous export, replaceable)."""
    return (directory / "model.bin").is_file() and not RunDir(directory).holds_run()
