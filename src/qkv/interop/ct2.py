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

Loading picks per machine, never process-wide: the compute type (`compute_type_for_machine`: int8
only where CTranslate2's int8 kernels keep 32-bit sums) and the threads (`default_threads`:
one on a 2-core machine; CTranslate2's own default of 4 threads ran 4-9x slower there).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.errors import ConfigError, QkvError
from qkv.interop.targets import check_ct2

QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16", "bfloat16")
ENGINES = ("qkv", "ct2")


def int8_kernels_are_exact(flags: frozenset[str] | None = None, vendor: str | None = None,
                           arch: str | None = None, use_mkl: str | None = None) -> bool:
    """Whether CTranslate2's int8 matrix products keep their 32-bit sums on this machine.

    On x86-64 CTranslate2 uses Intel MKL on Intel CPUs (or where CT2_USE_MKL=1) and oneDNN elsewhere.
    oneDNN's int8 product is exact where the CPU has VNNI (one instruction, 32-bit sums) and saturates
    16-bit partial sums where it has not: measured on an AMD EPYC without VNNI, a 32-wide reverse model
    lost 17.8 BLEU in int8 (47.7 -> 29.9). MKL is exact everywhere (and on AMD CPUs very slow: int8
    ran 20x slower than without it on an AMD EPYC with VNNI). aarch64 builds use Ruy, which is exact.
    """
    from qkv.machine import cpu_flags, cpu_has_vnni, cpu_vendor

    arch = (platform.machine() if arch is None else arch).lower()
    if arch not in ("x86_64", "amd64"):
        return True
    use_mkl = os.environ.get("CT2_USE_MKL") if use_mkl is None else use_mkl
    vendor = cpu_vendor() if vendor is None else vendor
    if use_mkl == "1" or (use_mkl is None and vendor == "GenuineIntel"):
        return True
    return cpu_has_vnni(cpu_flags() if flags is None else flags)


def compute_type_for_machine(requested: str = "auto") -> str:
    """The CTranslate2 compute type to load a model with: `requested`, or for "auto" the model's own
    type ("default": an int8 export runs in int8) where int8 kernels are exact here, else "float32"
    (an int8 export is then dequantized when it loads: float32 speed, int8-rounded weights). No
    process-wide backend switch: CT2_USE_MKL is read, never set."""
    if requested != "auto":
        return requested
    return "default" if int8_kernels_are_exact() else "float32"


def default_threads() -> int:
    """CTranslate2's intra-op threads: 1 on machines of 1-2 cores, else one per core, at most 4.

    CTranslate2's own default is 4 whatever the machine. On 2 cores that ran 4-9x slower than 1 thread,
    and 2 threads were as slow as 4 there (benchmarks/ct2_settings.py): with the Python process, a
    server or other jobs on the other core, every parallel operation waits for a busy core. Not
    measured on larger machines, where one thread per core is CTranslate2's advice."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if cores <= 2 else min(4, cores)


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


def vocabulary(tokenizer: Any) -> list[str]:
    """Every id's token string; CTranslate2 needs them distinct to map tokens back to ids."""
    tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    if len(set(tokens)) != len(tokens):
        raise ConfigError("the tokenizer has repeated token strings, which CTranslate2 cannot tell apart; "
                          "retrain the tokenizer with qkv")
    return tokens


def export_ct2(run_dir: str | os.PathLike, out_dir: str | os.PathLike, quantize: str | None = None) -> Path:
    """Write run `run_dir` as a CTranslate2 model directory (float32, or quantized)."""
    from qkv.run import load_run

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    run = load_run(run_dir)
    check_ct2(run.cfg)
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
                 compute_type: str = "auto", threads: int = 0):
        """`compute_type`: "auto" (`compute_type_for_machine`) or a CTranslate2 compute type;
        `threads`: intra-op threads, 0 for `default_threads()`."""
        ctranslate2 = require_ctranslate2()
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise QkvError(f"{model_dir} is not a CTranslate2 model (no model.bin); "
                           f"create it with `qkv export --format ct2 --out {model_dir}`")
        _check_vocabularies(model_dir, src_tokens, tgt_tokens)
        self.translator = ctranslate2.Translator(str(model_dir), device="cpu",
                                                 compute_type=compute_type_for_machine(compute_type),
                                                 intra_threads=threads or default_threads())
        self.src_tokens = src_tokens
        self.tgt_ids = {t: i for i, t in enumerate(tgt_tokens)}
        self.eos_id = self.tgt_ids.get(_read_json(model_dir / "config.json").get("eos_token"), -1)

    def translate_ids(self, src: list[list[int]], max_len: list[int], beam_size: int = 1,
                      length_penalty: float = 0.0) -> list[list[int]]:
        """Output ids (no <bos>/<eos>) of each source, at most `max_len[i]` tokens for sentence i."""
        from qkv.search import DecodeConfig

        dcfg = DecodeConfig(beam_size=beam_size, length_penalty=length_penalty)
        return [h[0].tokens for h in self.search(src, max_len, dcfg)]

    def search(self, src: list[list[int]], limits: list[int], dcfg: Any, batch_size: int = 0) -> list[list[Any]]:
        """`qkv.search.translate_ids` on CTranslate2: each source's n-best `Hypothesis` list (ids without
        <bos>/<eos>), at most `limits[i]` new tokens for source i. Empty sources give one empty hypothesis.

        CTranslate2 has one output limit per call, so sources are decoded in groups of equal limit (as
        qkv's search stops each sentence at its own limit). Scores mean what they mean in qkv:
        CTranslate2 returns log p / n ** alpha (n counting <eos>, greedy too), so the log-probability
        is recovered exactly and rescored with qkv's GNMT length penalty (beam search) or kept as it is
        (greedy, sampling). The ranking inside the beam is still CTranslate2's: with a length penalty
        above 0 the chosen hypothesis can differ from qkv's.
        """
        ctranslate2 = require_ctranslate2()
        if dcfg.seed is not None:
            ctranslate2.set_random_seed(dcfg.seed)
        from qkv.search import Hypothesis

        out: list[list[Any]] = [[Hypothesis([], 0.0, 0.0)] for _ in src]
        groups: dict[int, list[int]] = {}
        for i, (x, limit) in enumerate(zip(src, limits)):
            if x:
                groups.setdefault(limit, []).append(i)
        for limit, rows in groups.items():
            results = self.translator.translate_batch(
                [[self.src_tokens[i] for i in src[r]] for r in rows], max_batch_size=batch_size,
                beam_size=dcfg.beam_size, num_hypotheses=dcfg.n_best, length_penalty=dcfg.length_penalty,
                max_decoding_length=limit, min_decoding_length=dcfg.min_len, return_scores=True,
                return_end_token=True, sampling_topk=(dcfg.top_k or 0) if dcfg.sample else 1,
                sampling_topp=dcfg.top_p, sampling_temperature=dcfg.temperature,
            )
            for r, result in zip(rows, results):
                out[r] = [self._hypothesis(h, score, dcfg) for h, score in zip(result.hypotheses, result.scores)]
        return out

    def _hypothesis(self, tokens: list[str], score: float, dcfg: Any) -> Any:
        from qkv.search import Hypothesis, length_penalty

        ids = [self.tgt_ids[t] for t in tokens]
        n, alpha = max(1, len(ids)), dcfg.length_penalty                 # n counts <eos> when produced
        log_prob = score * n ** alpha
        if ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        return Hypothesis(ids, log_prob / length_penalty(n, alpha) if dcfg.beam_size > 1 else log_prob, log_prob)


def _read_json(path: Path, default: Any = None) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {} if default is None else default


def _check_vocabularies(model_dir: Path, src_tokens: list[str], tgt_tokens: list[str]) -> None:
    """A one-line error when the CTranslate2 model was exported from another run (other vocabularies)."""
    saved = {name: model_dir / f"{name}_vocabulary.json" for name in ("shared", "source", "target")}
    expected = {"shared": src_tokens, "source": src_tokens, "target": tgt_tokens}
    for name, path in saved.items():
        if path.is_file() and _read_json(path, []) != expected[name]:
            raise QkvError(f"{model_dir} was exported from another model (its {name} vocabulary differs from "
                           f"this run's); export this run with `qkv export --format ct2 --out DIR`")


def translate_lines_ct2(run: Any, lines: list[str], dcfg: Any, batch_size: int = 32, warn: Any = None, *,
                        model_dir: str | os.PathLike) -> list[list[tuple[str, float]]]:
    """`qkv.text.translate_lines` on CTranslate2: each line's n-best list of (text, score).

    CTranslate2 batches, sorts by length and searches by itself (`Ct2Translator.search`). One
    difference from qkv's own search: its beam ranks by log p / length ** alpha (not GNMT's
    ((5 + len) / 6) ** alpha); scores are reported on qkv's scale.
    """
    translator = Ct2Translator(model_dir, vocabulary(run.src_tokenizer), vocabulary(run.tgt_tokenizer))
    ids = [run.src_tokenizer.encode(line)[: run.cfg.max_len] if line.strip() else [] for line in lines]
    hyps = translator.search(ids, ct2_limits(ids, dcfg, run.cfg.max_len), dcfg, batch_size)
    return [[(run.tgt_tokenizer.decode(h.tokens), h.score) for h in n_best] for n_best in hyps]


def ct2_limits(ids: list[list[int]], dcfg: Any, model_max_len: int) -> list[int]:
    """Each source's output limit, as `qkv.search.max_new_tokens` computes it."""
    return [min(model_max_len, max(1, int(dcfg.max_len_a * len(x) + dcfg.max_len_b))) for x in ids]


def check_engine(engine: str, ct2_model: str | os.PathLike | None) -> None:
    """`--engine` and `--ct2-model` go together: a one-line ConfigError when they do not."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "qkv" and ct2_model is not None:
        raise ConfigError("--ct2-model is used with --engine ct2 only")
    if engine == "ct2" and ct2_model is None:
        raise ConfigError("--engine ct2 needs --ct2-model DIR; write DIR with `qkv export --model RUN --format ct2 --out DIR`")


def engine_translate_lines(engine: str, ct2_model: str | os.PathLike | None, qkv_translate_lines: Any) -> Any:
    """`qkv translate --engine`: qkv's own `translate_lines`, or the same call on a CTranslate2 export."""
    check_engine(engine, ct2_model)
    if engine == "qkv":
        return qkv_translate_lines
    return functools.partial(translate_lines_ct2, model_dir=ct2_model)
