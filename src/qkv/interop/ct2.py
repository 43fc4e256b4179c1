"""Export a qkv translation model to CTranslate2, and translate with it.

    export_ct2("runs/de-en", "exported/de-en-ct2", quantize="int8")
    qkv translate --model runs/de-en --engine ct2 --ct2-model exported/de-en-ct2 "Ein Hund."

The export fills a `ctranslate2.specs.TransformerSpec` straight from qkv's weights: CTranslate2's
Transformer has a switch or a slot for every option qkv has (post-/pre-LN, ReLU/GELU, sinusoidal or
learned positions as an explicit table, sqrt(d_model) scaling, shared or separate embeddings,
tied or untied output layer, no biases), so no option is refused and no detour through
`transformers` is needed. The position table is written as qkv computes it (interleaved sin/cos).
The vocabulary lists each id's token string, so ids map one to one.

`quantize="int8"` stores the matrices as 8-bit integers with one scale per row: about 4x smaller
and faster on CPU, at a small cost in accuracy (measure it with BLEU, see docs/interop.md).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.errors import ConfigError, QkvError

QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16", "bfloat16")
ENGINES = ("qkv", "ct2")


def use_mkl_for_int8() -> None:
    """Ask CTranslate2 for its Intel MKL kernels on every x86-64 CPU, unless the user chose.

    On non-Intel x86 CPUs CTranslate2 defaults to oneDNN, whose u8s8 int8 GEMM saturates 16-bit
    intermediate sums on CPUs without VNNI: measured here on an AMD EPYC without AVX-512, a 32-wide
    reverse model lost 17.8 BLEU in int8 (47.7 -> 29.9) with oneDNN and gained 1.7 with MKL
    (-> 49.4). MKL is the default on Intel CPUs already; aarch64 builds have no MKL.
    """
    import platform

    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("CT2_USE_MKL", "1")


use_mkl_for_int8()   # before anything loads ctranslate2: it reads the variable once


def require_ctranslate2() -> Any:
    """The `ctranslate2` module, or a one-line error saying how to install it."""
    try:
        import ctranslate2
    except ImportError:
        raise QkvError("CTranslate2 export and decoding need `ctranslate2`: pip install -e '.[interop]'") from None
    return ctranslate2


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
    require_ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    cfg = model.cfg
    if cfg.arch != "encoder-decoder":
        raise ConfigError("CTranslate2 export covers translation (encoder-decoder) models; this run is a "
                          "decoder-only language model: export it with --format hf")
    from qkv.interop.llama import post_2017_options

    if post_2017_options(cfg):
        raise ConfigError(f"{post_2017_options(cfg)[0]} is not covered by the CTranslate2 export (2017 Transformer options only)")
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


def vocabulary(tokenizer: Any) -> list[str]:
    """Every id's token string; CTranslate2 needs them distinct to map tokens back to ids."""
    tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    if len(set(tokens)) != len(tokens):
        raise ConfigError("the tokenizer has repeated token strings, which CTranslate2 cannot tell apart; "
                          "retrain the tokenizer with qkv")
    return tokens


def export_ct2(run_dir: str | os.PathLike, out_dir: str | os.PathLike, quantize: str | None = None) -> Path:
    """Write run `run_dir` as a CTranslate2 model directory (float32, or quantized)."""
    from qkv.train.checkpoint import load_run

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    run = load_run(run_dir)
    if run.src_tokenizer is None:
        raise ConfigError("CTranslate2 export covers translation models; this run is a language model: "
                          "export it with --format hf")
    return write_ct2(run.model, vocabulary(run.src_tokenizer), vocabulary(run.tgt_tokenizer), out_dir, quantize)


def write_ct2(model: nn.Module, src_tokens: list[str], tgt_tokens: list[str], out_dir: str | os.PathLike,
              quantize: str | None = None) -> Path:
    """Convert `model`, quantize its weights if asked, and save model.bin + vocabularies in `out_dir`."""
    spec = to_ct2_spec(model, src_tokens, tgt_tokens)
    spec.validate()
    spec.optimize(quantization=quantize)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))
    return out


class Ct2Translator:
    """A CTranslate2 model that takes and returns qkv token ids."""

    def __init__(self, model_dir: str | os.PathLike, src_tokens: list[str], tgt_tokens: list[str],
                 compute_type: str = "default", threads: int = 0):
        ctranslate2 = require_ctranslate2()
        if not (Path(model_dir) / "model.bin").is_file():
            raise QkvError(f"{model_dir} is not a CTranslate2 model (no model.bin); "
                           f"create it with `qkv export --format ct2 --out {model_dir}`")
        self.translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type=compute_type,
                                                 intra_threads=threads)
        self.src_tokens = src_tokens
        self.tgt_ids = {t: i for i, t in enumerate(tgt_tokens)}

    def translate_ids(self, src: list[list[int]], max_len: list[int], beam_size: int = 1,
                      length_penalty: float = 0.0) -> list[list[int]]:
        """Output ids (no <bos>/<eos>) of each source, at most `max_len[i]` tokens for sentence i."""
        batch = [[self.src_tokens[i] for i in ids] for ids in src]
        results = self.translator.translate_batch(
            batch, beam_size=beam_size, max_decoding_length=max(max_len), length_penalty=length_penalty,
        )
        return [[self.tgt_ids[t] for t in r.hypotheses[0]][:n] for r, n in zip(results, max_len)]


def translate_lines_ct2(run: Any, lines: list[str], dcfg: Any, batch_size: int = 32, warn: Any = None, *,
                        model_dir: str | os.PathLike) -> list[list[tuple[str, float]]]:
    """`qkv.decode.translate_lines` on CTranslate2: each line's n-best list of (text, score).

    CTranslate2 batches, sorts by length and searches by itself. Two differences from qkv's own
    search: its beam length penalty divides by length ** alpha (not GNMT's ((5 + len) / 6) ** alpha),
    and the output limit a * src_len + b is applied per batch, then cut per sentence.
    """
    ctranslate2 = require_ctranslate2()
    translator = Ct2Translator(model_dir, vocabulary(run.src_tokenizer), vocabulary(run.tgt_tokenizer))
    ids = [run.src_tokenizer.encode(line)[: run.cfg.max_len] if line.strip() else [] for line in lines]
    limits = [min(run.cfg.max_len, max(1, int(dcfg.max_len_a * len(x) + dcfg.max_len_b))) for x in ids]
    if dcfg.seed is not None:
        ctranslate2.set_random_seed(dcfg.seed)
    results = translator.translator.translate_batch(
        [[translator.src_tokens[i] for i in x] for x in ids], max_batch_size=batch_size,
        beam_size=dcfg.beam_size, num_hypotheses=dcfg.n_best, length_penalty=dcfg.length_penalty,
        max_decoding_length=max(limits, default=1), min_decoding_length=dcfg.min_len, return_scores=True,
        sampling_topk=(dcfg.top_k or 0) if dcfg.sample else 1, sampling_topp=dcfg.top_p,
        sampling_temperature=dcfg.temperature,
    )
    out = []
    for x, limit, result in zip(ids, limits, results):
        hyps = [([translator.tgt_ids[t] for t in h][:limit], s) for h, s in zip(result.hypotheses, result.scores)]
        out.append([(run.tgt_tokenizer.decode(h), s) for h, s in hyps] if x else [("", 0.0)])
    return out


def engine_translate_lines(engine: str, ct2_model: str | os.PathLike | None, qkv_translate_lines: Any) -> Any:
    """`qkv translate --engine`: qkv's own `translate_lines`, or the same call on a CTranslate2 export."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "qkv":
        if ct2_model is not None:
            raise ConfigError("--ct2-model is used with --engine ct2 only")
        return qkv_translate_lines
    if ct2_model is None:
        raise ConfigError("--engine ct2 needs --ct2-model DIR; write DIR with `qkv export --model RUN --format ct2 --out DIR`")
    return functools.partial(translate_lines_ct2, model_dir=ct2_model)
