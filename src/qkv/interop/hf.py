"""Export a qkv run as a Hugging Face `transformers` model that computes exactly the same function.

    export_hf("runs/de-en", "exported/de-en-hf")
    MarianMTModel.from_pretrained("exported/de-en-hf")       # offline, no qkv needed

Which architecture, and why it is exact:

- encoder-decoder, post-LN (the paper)   -> `MarianMTModel`: post-LN layers, sinusoidal positions
  from 0, sqrt(d_model) embedding scale, no final LayerNorms.
- encoder-decoder, pre-LN                -> `PegasusForConditionalGeneration`: pre-LN layers with a
  final LayerNorm after each stack, the same sinusoidal positions.
- decoder-only, pre-LN                   -> `GPT2LMHeadModel`: its learned position table holds
  qkv's positions (learned or sinusoidal), the sqrt(d_model) scale is folded into the weights.
- decoder-only with RoPE, RMSNorm, SwiGLU (and grouped-query attention) -> `LlamaForCausalLM`,
  see qkv.interop.llama.

Marian and Pegasus lay the sinusoidal table out as [sin half | cos half] while qkv interleaves
sin and cos (the paper's PE[pos, 2i] = sin, PE[pos, 2i+1] = cos). The two differ by a fixed
permutation P of the d_model dimensions, so the export renames every residual-stream dimension
by P: embedding columns, LayerNorm weights and biases, the input columns of every projection
that reads the stream (q, k, v, FFN w1, output layer) and the output rows of every projection
that writes to it (attention out, FFN w2). LayerNorm and attention do not care about the order
of dimensions, so the permuted network computes the same logits. qkv's `bias=false` exports as
zero biases. Options with no exact equivalent are refused with a one-line ConfigError; the
rules are qkv.run.targets.hf_architecture, which `qkv train` applies before training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.config import ModelConfig
from qkv.files import atomic_directory
from qkv.interop.common import halves_permutation, require_transformers
from qkv.run import RunDir
from qkv.run.targets import hf_architecture
from qkv.model.layers import sinusoidal_table


# ---------------------------------------------------------------------------------------------
# Copying weights (everything under torch.no_grad)
# ---------------------------------------------------------------------------------------------


def _bias(linear: nn.Linear) -> torch.Tensor:
    """The bias of `linear`, or zeros when it has none (bias=false is the same as a zero bias)."""
    if linear.bias is not None:
        return linear.bias
    return torch.zeros(linear.out_features, dtype=linear.weight.dtype)


def _reading(dst: nn.Linear, src: nn.Linear, perm: torch.Tensor) -> None:
    """A projection that reads the residual stream: its input columns follow the permutation."""
    dst.weight.copy_(src.weight[:, perm])
    dst.bias.copy_(_bias(src))


def _writing(dst: nn.Linear, src: nn.Linear, perm: torch.Tensor) -> None:
    """A projection that writes to the residual stream: its output rows follow the permutation."""
    dst.weight.copy_(src.weight[perm])
    dst.bias.copy_(_bias(src)[perm])


def _norm(dst: nn.LayerNorm, src: nn.LayerNorm, perm: torch.Tensor | None = None) -> None:
    """A LayerNorm of the residual stream (its dimensions permuted when `perm` is given)."""
    index = slice(None) if perm is None else perm
    dst.weight.copy_(src.weight[index])
    dst.bias.copy_(src.bias[index])


def _attention(dst: nn.Module, src: nn.Module, perm: torch.Tensor) -> None:
    """qkv MultiHeadAttention -> a BART-family attention (q_proj, k_proj, v_proj, out_proj)."""
    for name in ("q_proj", "k_proj", "v_proj"):
        _reading(getattr(dst, name), getattr(src, name), perm)
    _writing(dst.out_proj, src.out_proj, perm)


def _feed_forward(dst_layer: nn.Module, src_ff: nn.Module, perm: torch.Tensor) -> None:
    _reading(dst_layer.fc1, src_ff.w1, perm)
    _writing(dst_layer.fc2, src_ff.w2, perm)


def _encoder_layer(dst: nn.Module, src: nn.Module, perm: torch.Tensor) -> None:
    _attention(dst.self_attn, src.self_attn, perm)
    _norm(dst.self_attn_layer_norm, src.attn_block.norm, perm)
    _feed_forward(dst, src.ff, perm)
    _norm(dst.final_layer_norm, src.ff_block.norm, perm)


def _decoder_layer(dst: nn.Module, src: nn.Module, perm: torch.Tensor) -> None:
    _attention(dst.self_attn, src.self_attn, perm)
    _norm(dst.self_attn_layer_norm, src.attn_block.norm, perm)
    _attention(dst.encoder_attn, src.cross_attn, perm)
    _norm(dst.encoder_attn_layer_norm, src.cross_block.norm, perm)
    _feed_forward(dst, src.ff, perm)
    _norm(dst.final_layer_norm, src.ff_block.norm, perm)


# ---------------------------------------------------------------------------------------------
# Encoder-decoder: Marian (post-LN) and Pegasus (pre-LN)
# ---------------------------------------------------------------------------------------------


def _seq2seq_config(cfg: ModelConfig, arch: str) -> Any:
    """The MarianConfig or PegasusConfig that mirrors `cfg`."""
    transformers = require_transformers()
    common = dict(
        vocab_size=cfg.src_vocab_size, d_model=cfg.d_model, max_position_embeddings=cfg.max_len,
        encoder_layers=cfg.n_encoder_layers, decoder_layers=cfg.n_decoder_layers,
        encoder_attention_heads=cfg.n_heads, decoder_attention_heads=cfg.n_heads,
        encoder_ffn_dim=cfg.d_ff, decoder_ffn_dim=cfg.d_ff, activation_function=cfg.activation,
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.dropout,
        scale_embedding=cfg.scale_embeddings, tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=cfg.pad_id, bos_token_id=cfg.bos_id, eos_token_id=cfg.eos_id,
        decoder_start_token_id=cfg.bos_id, forced_eos_token_id=None,
    )
    if arch == "pegasus":
        return transformers.PegasusConfig(**common)
    return transformers.MarianConfig(
        **common, decoder_vocab_size=cfg.tgt_vocab_size, share_encoder_decoder_embeddings=cfg.share_embeddings
    )


def _seq2seq_model(model: nn.Module, arch: str) -> Any:
    """A MarianMTModel / PegasusForConditionalGeneration with `model`'s weights, permuted."""
    transformers = require_transformers()
    cfg = model.cfg
    hf_cls = transformers.PegasusForConditionalGeneration if arch == "pegasus" else transformers.MarianMTModel
    hf = hf_cls(_seq2seq_config(cfg, arch)).eval()
    perm = halves_permutation(cfg.d_model)
    enc, dec = hf.model.encoder, hf.model.decoder
    with torch.no_grad():
        enc.embed_tokens.weight.copy_(model.src_embed.token.weight[:, perm])
        dec.embed_tokens.weight.copy_(model.tgt_embed.token.weight[:, perm])
        for dst, src in zip(enc.layers, model.encoder.layers):
            _encoder_layer(dst, src, perm)
        for dst, src in zip(dec.layers, model.decoder.layers):
            _decoder_layer(dst, src, perm)
        if arch == "pegasus":
            _norm(enc.layer_norm, model.encoder.norm, perm)
            _norm(dec.layer_norm, model.decoder.norm, perm)
        if not cfg.tie_embeddings:
            hf.lm_head.weight.copy_(model.lm_head.weight[:, perm])
        hf.final_logits_bias.zero_()
    return hf


# ---------------------------------------------------------------------------------------------
# Decoder-only: GPT-2
# ---------------------------------------------------------------------------------------------


def _gpt2_model(model: nn.Module) -> Any:
    """A GPT2LMHeadModel with `model`'s weights (GPT-2's Conv1D stores weights as (in, out)).

    GPT-2 adds no sqrt(d_model) scale to its token embedding, so wte holds scale * E. With a tied
    output layer (logits = ln_f(x) wte^T) the final LayerNorm is divided by the same scale, which
    gives back qkv's logits = ln_f(x) E^T exactly.
    """
    transformers = require_transformers()
    cfg = model.cfg
    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.tgt_vocab_size, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_decoder_layers,
        n_head=cfg.n_heads, n_inner=cfg.d_ff, activation_function=cfg.activation,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.attention_dropout,
        layer_norm_epsilon=cfg.layer_norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=cfg.bos_id, eos_token_id=cfg.eos_id, pad_token_id=cfg.pad_id,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    scale = model.embed.scale
    with torch.no_grad():
        hf.transformer.wte.weight.copy_(model.embed.token.weight * scale)
        hf.transformer.wpe.weight.copy_(_position_table(model.embed.position, cfg))
        for dst, src in zip(hf.transformer.h, model.decoder.layers):
            _gpt2_block(dst, src)
        _norm(hf.transformer.ln_f, model.decoder.norm)
        if cfg.tie_embeddings:
            hf.transformer.ln_f.weight.div_(scale)
            hf.transformer.ln_f.bias.div_(scale)
        else:
            hf.lm_head.weight.copy_(model.lm_head.weight)
    return hf


def _position_table(position: nn.Module, cfg: ModelConfig) -> torch.Tensor:
    if cfg.positional == "sinusoidal":
        return sinusoidal_table(cfg.max_len, cfg.d_model)
    return position.weight


def _gpt2_block(dst: nn.Module, src: nn.Module) -> None:
    attn = src.self_attn
    _norm(dst.ln_1, src.attn_block.norm)
    dst.attn.c_attn.weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).T)
    dst.attn.c_attn.bias.copy_(torch.cat([_bias(attn.q_proj), _bias(attn.k_proj), _bias(attn.v_proj)]))
    dst.attn.c_proj.weight.copy_(attn.out_proj.weight.T)
    dst.attn.c_proj.bias.copy_(_bias(attn.out_proj))
    _norm(dst.ln_2, src.ff_block.norm)
    dst.mlp.c_fc.weight.copy_(src.ff.w1.weight.T)
    dst.mlp.c_fc.bias.copy_(_bias(src.ff.w1))
    dst.mlp.c_proj.weight.copy_(src.ff.w2.weight.T)
    dst.mlp.c_proj.bias.copy_(_bias(src.ff.w2))


# ---------------------------------------------------------------------------------------------
# The whole export
# ---------------------------------------------------------------------------------------------


def to_hf(model: nn.Module) -> Any:
    """The `transformers` model (eval mode) that computes exactly what qkv's `model` computes."""
    arch = hf_architecture(model.cfg)
    if arch == "llama":
        from qkv.interop.llama import to_llama

        return to_llama(model)
    hf = _gpt2_model(model) if arch == "gpt2" else _seq2seq_model(model, arch)
    _set_generation_defaults(hf, model.cfg)
    return hf


def _set_generation_defaults(hf: Any, cfg: ModelConfig) -> None:
    """`generate()` starts from <bos>, stops at <eos>, pads with <pad> and forces nothing."""
    gen = hf.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = cfg.bos_id, cfg.eos_id, cfg.pad_id
    gen.decoder_start_token_id = cfg.bos_id if cfg.arch == "encoder-decoder" else None
    gen.forced_eos_token_id = None
    gen.bad_words_ids = None
    gen.max_length = cfg.max_len


def export_hf(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write run `run_dir` as a `transformers` model directory (weights, config, tokenizer)."""
    from qkv.interop.hf_tokenizer import save_hf_tokenizers
    from qkv.run import load_run

    run = load_run(run_dir)
    hf = to_hf(run.model)
    out = Path(out_dir)
    with atomic_directory(out, "Hugging Face export", replaceable=is_hf_export) as tmp:   # whole, or not at all
        hf.save_pretrained(tmp)
        save_hf_tokenizers(tmp, run.src_tokenizer, run.tgt_tokenizer, run.cfg)
    return out


def is_hf_export(directory: Path) -> bool:
    """Whether `directory` looks like a `transformers` model directory (a previous export, replaceable)."""
    return (directory / "config.json").is_file() and not RunDir(directory).holds_run() and any(
        (directory / name).is_file() for name in ("model.safetensors", "pytorch_model.bin"))

