"""Every intermediate tensor of one forward pass, read from the model's own forward.

`trace(model, src, tgt)` runs one sentence (batch of 1) through an `EncoderDecoder` or a
`DecoderOnly` model inside `qkv.model.record.recording`: the model's embeddings, attention,
feed-forward and residual sublayers record what they compute as they run, and the trace arranges
those tensors in the order of the paper:

    tokens -> token embedding * sqrt(d_model) + positional encoding
    for each layer:   (post-LN, the paper)             (pre-LN)
        attention:    x = LN(x + MHA(x))               x = x + MHA(LN(x))
        [cross:       x = LN(x + MHA(x, memory))       x = x + MHA(LN(x), memory)]
        feed-forward: x = LN(x + FFN(x))               x = x + FFN(LN(x))
    logits = lm_head(x)  [soft-cap: logits = cap * tanh(logits / cap)]  ->  softmax  ->  next-token distribution

and inside every multi-head attention, for every head h:

    [pre-LN: x = norm(stream) (`norm`)]
    Q = x W_Q,  K = m W_K,  V = m W_V                  (split into H heads of d_head; with
                                                        grouped-query attention H_kv < H heads of K, V)
    [QK-norm: Q, K = RMSNorm(Q) g_Q, RMSNorm(K) g_K  per head, when model.qk_norm]
    [RoPE: Q, K = rotate(Q, position), rotate(K, position)   when model.positional = "rope"]
    scores = Q K^T,  scaled = scores / sqrt(d_head),  masked positions -> -inf
    weights = softmax(scaled),  mixed = weights V,  MHA(x) = concat_h(mixed_h) W_O + b_O

Nothing is recomputed except each head's share of the output projection, mixed_h W_O[:, h]
(`head_outputs`, which add up to the attention output): the tests check that the recorded
tensors are the forward's own. The weights each attention used are kept per head
(`weights_used`), and with pre-LN the norms before each attention and before the output layer
(`norm`, `final_norm`), QK-norm's input, gains and output (`q_norm`, `k_norm`) and the logits before
the soft-cap (`raw_logits`), so that every number can be recomputed from the ones before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from qkv.errors import ConfigError, DataError, ShapeError
from qkv.model.attention import MultiHeadAttention
from qkv.model.record import Record, recording
from qkv.model.transformer import DecoderOnly, EncoderDecoder
from qkv.tokenizers import SPECIAL_TOKENS

KINDS = ("enc", "dec", "cross")
KIND_NAMES = {"enc": "encoder self-attention", "dec": "decoder masked self-attention", "cross": "cross-attention"}


def special_labels(cfg) -> dict[int, str]:
    """The names of the model's special ids (from its config: pad, bos, eos, unk)."""
    return dict(zip((cfg.pad_id, cfg.bos_id, cfg.eos_id, cfg.unk_id), SPECIAL_TOKENS))


# ---------------------------------------------------------------------------------------------
# What a trace holds. Batch dimension dropped: one sentence, shapes (T, ...) or (H, T, ...).
# ---------------------------------------------------------------------------------------------


@dataclass
class EmbeddingTrace:
    """Tokens and their input vectors: token * scale + position."""

    ids: list[int]
    tokens: list[str]                 # display strings (ids as text when no tokenizer is given)
    token_embedding: torch.Tensor     # (T, d_model), already multiplied by `scale`
    scale: float                      # sqrt(d_model) in the paper, 1.0 if scaling is off
    positional: torch.Tensor          # (T, d_model); zeros with RoPE (positions enter attention instead)
    sum: torch.Tensor                 # (T, d_model): the input of the first layer


@dataclass
class AttentionTrace:
    """One multi-head attention: every step of softmax(Q K^T / sqrt(d_head)) V, per head."""

    kind: str                         # "enc", "dec" (masked self-attention) or "cross"
    layer: int
    query_tokens: list[str]
    key_tokens: list[str]
    x: torch.Tensor                   # (T_q, d_model) the stream the queries come from
    memory: torch.Tensor              # (T_k, d_model) the stream keys and values come from
    q: torch.Tensor                   # (H, T_q, d_head)
    k: torch.Tensor                   # (H, T_k, d_head)
    v: torch.Tensor                   # (H, T_k, d_head)
    scores: torch.Tensor              # (H, T_q, T_k) Q K^T
    scaled: torch.Tensor              # (H, T_q, T_k) Q K^T / sqrt(d_head)
    mask: torch.Tensor                # (T_q, T_k) bool, True = may attend
    weights: torch.Tensor             # (H, T_q, T_k) softmax over keys; masked entries exactly 0
    mixed: torch.Tensor               # (H, T_q, d_head) weights @ V
    head_outputs: torch.Tensor        # (H, T_q, d_model) each head's share of the output projection
    out: torch.Tensor                 # (T_q, d_model) sum of head outputs + output bias
    q_before_rope: torch.Tensor | None = None   # (H, T_q, d_head) with RoPE: Q before its rotation (q is after)
    k_before_rope: torch.Tensor | None = None   # (H, T_k, d_head) the same for K (each query head's K/V head)
    n_kv_heads: int | None = None               # key/value heads (fewer than H with grouped-query attention)
    weights_used: ProjectionWeights | None = None   # the matrices that made Q, K, V and the output
    norm: NormTrace | None = None               # pre-LN: the norm that made x from the residual stream
    q_norm: NormTrace | None = None             # QK-norm: Q (H, T_q, d_head) before and after its RMSNorm
    k_norm: NormTrace | None = None             # the same for K (each query head's K/V head)
    v_before_embed: torch.Tensor | None = None  # (H, T_k, d_head) with value embeddings: V before them (v is after)
    value_embedding: torch.Tensor | None = None # (H, T_k, d_head) the rows E_V[token] added (each query head's K/V head)

    @property
    def n_heads(self) -> int:
        return self.q.size(0)

    def kv_head(self, head: int) -> int:
        """The key/value head that query head `head` reads (itself without grouped-query attention)."""
        return head // (self.n_heads // (self.n_kv_heads or self.n_heads))

    @property
    def d_head(self) -> int:
        return self.q.size(-1)

    @property
    def title(self) -> str:
        return f"layer {self.layer} {KIND_NAMES[self.kind]}"


@dataclass
class ProjectionWeights:
    """One attention's projections, cut per head, written as right-multiplied matrices (x W):
    Q_h = x W_Q[h] + b_Q[h], K_j = m W_K[j] + b_K[j], V_j = m W_V[j] + b_V[j] for key/value head j,
    head h's share of the output = mixed_h W_O[h]; the output adds all shares and b_O."""

    w_q: torch.Tensor                 # (H, d_model, d_head)
    w_k: torch.Tensor                 # (H_kv, d_model, d_head)
    w_v: torch.Tensor                 # (H_kv, d_model, d_head)
    w_o: torch.Tensor                 # (H, d_head, d_model)
    b_q: torch.Tensor | None          # (H, d_head), None without biases
    b_k: torch.Tensor | None          # (H_kv, d_head)
    b_v: torch.Tensor | None          # (H_kv, d_head)
    b_o: torch.Tensor | None          # (d_model,)


def projection_weights(attn: MultiHeadAttention) -> ProjectionWeights:
    """The weights of `attn` per head (views of its parameters, detached)."""
    d = attn.d_head

    def per_head(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = linear.weight.detach().t()                                           # (d_model, heads * d_head)
        b = linear.bias
        return (w.reshape(w.size(0), -1, d).permute(1, 0, 2),
                None if b is None else b.detach().view(-1, d))

    (w_q, b_q), (w_k, b_k), (w_v, b_v) = per_head(attn.q_proj), per_head(attn.k_proj), per_head(attn.v_proj)
    w_o = attn.out_proj.weight.detach().view(attn.d_model, attn.n_heads, d).permute(1, 2, 0)   # (H, d_head, d_model)
    b_o = attn.out_proj.bias
    return ProjectionWeights(w_q, w_k, w_v, w_o, b_q, b_k, b_v, None if b_o is None else b_o.detach())


@dataclass
class NormTrace:
    """One LayerNorm or RMSNorm as it ran: its input, its parameters, its output.

    LayerNorm(x) = (x − mean(x)) / √(var(x) + eps) · g + b;   RMSNorm(x) = x / √(mean(x²) + eps) · g.
    (QK-norm's RMSNorms work per head: input and output (H, T, d_head), gain (d_head,).)"""

    kind: str                         # "layernorm" or "rmsnorm"
    input: torch.Tensor               # (T, d_model)
    output: torch.Tensor              # (T, d_model)
    gain: torch.Tensor                # (d_model,) g
    bias: torch.Tensor | None         # (d_model,) b (LayerNorm), None for RMSNorm
    eps: float


def norm_trace(norm: nn.Module, input: torch.Tensor, output: torch.Tensor) -> NormTrace:
    """What `norm` (nn.LayerNorm or RMSNorm) did to `input`, given its recorded `output`."""
    kind = "layernorm" if isinstance(norm, nn.LayerNorm) else "rmsnorm"
    weight, bias = norm.weight, getattr(norm, "bias", None)
    return NormTrace(kind, input, output, weight.detach(), None if bias is None else bias.detach(), float(norm.eps))


@dataclass
class RMSNormTrace:
    """One RMSNorm as it ran: what it normalised, the RMS it divided by, its gain, what came out."""

    input: torch.Tensor               # (T, d_model)
    rms: torch.Tensor                 # (T, 1) sqrt(mean(x^2) + eps)
    gain: torch.Tensor                # (d_model,) the learned g
    output: torch.Tensor              # (T, d_model) input / rms * g


@dataclass
class SublayerTrace:
    """A residual block: what went in, what the function saw, what it added, what came out."""

    input: torch.Tensor               # (T, d_model) the residual stream before the block
    fn_input: torch.Tensor            # LN(input) for pre-LN, input itself for post-LN
    fn_output: torch.Tensor           # attention or feed-forward output
    residual: torch.Tensor            # input + fn_output
    output: torch.Tensor              # LN(residual) for post-LN, residual for pre-LN
    rmsnorm: RMSNormTrace | None = None   # the block's norm, when it is an RMSNorm (LayerNorm does not record)

    @property
    def rms(self) -> torch.Tensor | None:
        """(T, 1) with RMSNorm: sqrt(mean(x^2) + eps) of what the block's norm divided by."""
        return None if self.rmsnorm is None else self.rmsnorm.rms


@dataclass
class FeedForwardTrace:
    input: torch.Tensor               # (T, d_model)
    hidden: torch.Tensor              # (T, d_ff) act(x W1 + b1)
    output: torch.Tensor              # (T, d_model) hidden W2 + b2


@dataclass
class LayerTrace:
    stack: str                        # "encoder" or "decoder"
    index: int
    self_attn: AttentionTrace
    self_block: SublayerTrace
    cross_attn: AttentionTrace | None
    cross_block: SublayerTrace | None
    ff: FeedForwardTrace
    ff_block: SublayerTrace

    @property
    def output(self) -> torch.Tensor:
        return self.ff_block.output


@dataclass
class Trace:
    """One forward pass, every number of it. `logits[t]` predicts the token after `tgt.tokens[t]`."""

    arch: str                                   # "encoder-decoder" or "decoder-only"
    norm_first: bool
    src: EmbeddingTrace | None
    tgt: EmbeddingTrace                         # the decoder's input (shifted right for enc-dec)
    encoder_layers: list[LayerTrace]
    decoder_layers: list[LayerTrace]
    memory: torch.Tensor | None                 # (S, d_model) encoder output
    final: torch.Tensor                         # (T, d_model) decoder output (after the final LN)
    logits: torch.Tensor                        # (T, V)
    probs: torch.Tensor                         # (T, V)
    next_ids: list[int | None]                  # the true next token at each step, when known
    vocab: list[str] | None = None              # display string of every output id, if known
    warnings: list[str] = field(default_factory=list)
    specials: dict[int, str] = field(default_factory=dict)   # special id -> its name
    positional: str = "sinusoidal"              # model.positional ("rope": rotations inside attention)
    norm: str = "layernorm"                     # model.norm ("rmsnorm")
    activation: str = "relu"                    # model.activation ("gelu", "swiglu")
    rope_theta: float = 10000.0                 # model.rope_theta: RoPE's base wavelength
    final_rmsnorm: RMSNormTrace | None = None   # pre-LN with RMSNorm: the decoder's final norm
    final_norm: NormTrace | None = None         # pre-LN: the decoder's final norm, before the output layer
    logit_softcap: float = 0.0                  # model.logit_softcap (0: logits as the output layer made them)
    raw_logits: torch.Tensor | None = None      # (T, V) with a soft-cap: the output layer's logits before it
    qk_norm: bool = False                       # model.qk_norm
    value_embeddings: bool = False              # model.value_embeddings

    def attention(self, kind: str, layer: int) -> AttentionTrace:
        """The attention of `kind` ("enc", "dec", "cross") in layer `layer` (0-based)."""
        if kind not in KINDS:
            raise ConfigError(f"attention kind must be one of {', '.join(KINDS)}; got {kind!r}")
        if kind == "enc" and self.arch == "decoder-only":
            raise ConfigError("a decoder-only model has no encoder; use kind 'dec'")
        if kind == "cross" and self.arch == "decoder-only":
            raise ConfigError("a decoder-only model has no cross-attention; use kind 'dec'")
        layers = self.encoder_layers if kind == "enc" else self.decoder_layers
        if not 0 <= layer < len(layers):
            raise ConfigError(f"layer {layer} does not exist: the {layers[0].stack} has layers 0..{len(layers) - 1}")
        found = layers[layer].cross_attn if kind == "cross" else layers[layer].self_attn
        assert found is not None
        return found

    def attentions(self) -> list[AttentionTrace]:
        """Every attention in the order the forward pass runs them."""
        out = [layer.self_attn for layer in self.encoder_layers]
        for layer in self.decoder_layers:
            out.append(layer.self_attn)
            if layer.cross_attn is not None:
                out.append(layer.cross_attn)
        return out

    def label(self, token_id: int) -> str:
        if self.vocab is not None and 0 <= token_id < len(self.vocab):
            return self.vocab[token_id]
        return self.specials.get(token_id, str(token_id))

    def top_k(self, k: int = 5) -> list[dict[str, Any]]:
        """For every decoder step: its input token, the k most likely next tokens, the true one."""
        steps = []
        k = min(k, self.probs.size(-1))
        for t, (p, i) in enumerate(zip(*torch.topk(self.probs, k, dim=-1))):
            true = self.next_ids[t]
            steps.append({
                "step": t,
                "input": self.tgt.tokens[t],
                "top": [{"id": int(j), "token": self.label(int(j)), "prob": float(q)} for q, j in zip(p, i)],
                "target": None if true is None else {
                    "id": true, "token": self.label(true), "prob": float(self.probs[t, true]),
                },
            })
        return steps

    def to_dict(self, k: int = 5) -> dict[str, Any]:
        """A JSON-able summary: tokens, attention weights per kind/layer/head, top-k per step."""
        return {
            "arch": self.arch,
            "norm_first": self.norm_first,
            "src_tokens": None if self.src is None else self.src.tokens,
            "tgt_tokens": self.tgt.tokens,
            "attention": [
                {
                    "kind": a.kind,
                    "layer": a.layer,
                    "query_tokens": a.query_tokens,
                    "key_tokens": a.key_tokens,
                    "weights": rounded(a.weights),            # [head][query][key]
                }
                for a in self.attentions()
            ],
            "top_k": self.top_k(k),
            "warnings": list(self.warnings),
        }


def rounded(t: torch.Tensor, digits: int = 5) -> list:
    """A tensor as nested lists of floats rounded to `digits` decimals (for JSON)."""
    return torch.round(t.float(), decimals=digits).tolist()


# ---------------------------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def trace(
    model: nn.Module,
    src: str | Sequence[int] | torch.Tensor,
    tgt: str | Sequence[int] | torch.Tensor | None = None,
    src_tokenizer: Any | None = None,
    tgt_tokenizer: Any | None = None,
) -> Trace:
    """Run one example through `model` and return every intermediate tensor.

    The token conventions are those of training (qkv.data.batching) and decoding (qkv.search):
    EncoderDecoder: `src` is the source (no special tokens), `tgt` the target; the decoder reads
    <bos> + target and is scored on target + <eos> (teacher forcing). Without `tgt` the decoder
    reads <bos> alone. DecoderOnly: `src` is the text (a prompt; <bos> alone if it is empty); the
    model predicts each next token (`tgt`, if given, is appended to the text).
    Text needs the tokenizer(s); token ids (a list or a (T,)/(1, T) tensor) are used as they are,
    padding included, which lets you see padded keys receive zero attention.
    """
    if not isinstance(model, (EncoderDecoder, DecoderOnly)):
        raise ConfigError(f"trace needs an EncoderDecoder or DecoderOnly model, got {type(model).__name__}")
    cfg = model.cfg
    specials = special_labels(cfg)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, EncoderDecoder):
            src_tokenizer = src_tokenizer if src_tokenizer is not None else tgt_tokenizer
            src_ids = _ids(src, src_tokenizer, "source", cfg)
            tgt_body = [] if tgt is None else _ids(tgt, tgt_tokenizer, "target", cfg, allow_empty=True)
            tgt_ids = [cfg.bos_id] + tgt_body
            next_ids: list[int | None] = tgt_body + [cfg.eos_id] if tgt is not None else [None]
            with recording(model) as rec:
                logits = model(_batch(src_ids, device), _batch(tgt_ids, device))[0]      # (T, V)
            src_tokens = token_strings(src_ids, src_tokenizer, specials)
            tgt_tokens = token_strings(tgt_ids, tgt_tokenizer, specials)
            embed_calls = rec.of(model.src_embed) + (rec.of(model.tgt_embed) if model.tgt_embed is not model.src_embed else [])
            src_emb = _embedding(embed_calls[0], src_ids, src_tokens, model.src_embed.scale)
            tgt_emb = _embedding(embed_calls[1], tgt_ids, tgt_tokens, model.tgt_embed.scale)
            enc_layers = [_layer(rec, layer, "encoder", i, src_tokens, src_tokens)
                          for i, layer in enumerate(model.encoder.layers)]
            memory = rec.of(model.encoder)[0]["output"][0]
        else:
            text = _ids(src, tgt_tokenizer, "text", cfg, allow_empty=True)
            if tgt is not None:
                text = text + _ids(tgt, tgt_tokenizer, "target", cfg, allow_empty=True)
            text = text or [cfg.bos_id]
            if len(text) > cfg.max_len:
                raise DataError(f"the text and target have {len(text)} tokens but the model handles at most {cfg.max_len}; shorten them")
            with recording(model) as rec:
                logits = model(_batch(text, device))[0]                                  # (T, V)
            src_tokens, src_emb, memory, enc_layers = None, None, None, []
            tgt_tokens = token_strings(text, tgt_tokenizer, specials)
            tgt_emb = _embedding(rec.of(model.embed)[0], text, tgt_tokens, model.embed.scale)
            next_ids = list(text[1:]) + [None]
        dec_layers = [_layer(rec, layer, "decoder", i, tgt_tokens, src_tokens)
                      for i, layer in enumerate(model.decoder.layers)]
        final = rec.of(model.decoder)[0]["output"][0]
        raw_logits = rec.of(model.softcap)[0]["logits"][0] if model.softcap is not None else None
        final_rmsnorm = _rmsnorm(rec, model.decoder.norm) if model.decoder.norm is not None else None
        final_norm = (norm_trace(model.decoder.norm, dec_layers[-1].output, final)
                      if model.decoder.norm is not None else None)
    finally:
        model.train(was_training)
    return Trace(
        arch=cfg.arch,
        norm_first=cfg.norm_first,
        src=src_emb,
        tgt=tgt_emb,
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        memory=memory,
        final=final,
        logits=logits,
        probs=torch.softmax(logits.float(), dim=-1),
        next_ids=next_ids,
        vocab=_vocab(tgt_tokenizer, cfg.tgt_vocab_size),
        specials=specials,
        positional=cfg.positional,
        norm=cfg.norm,
        activation=cfg.activation,
        rope_theta=cfg.rope_theta,
        final_rmsnorm=final_rmsnorm,
        final_norm=final_norm,
        logit_softcap=cfg.logit_softcap,
        raw_logits=raw_logits,
        qk_norm=cfg.qk_norm,
        value_embeddings=cfg.value_embeddings,
    )


def _batch(ids: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor([ids], dtype=torch.long, device=device)                          # (1, T)


def _embedding(call: dict[str, torch.Tensor], ids: list[int], tokens: list[str], scale: float) -> EmbeddingTrace:
    """What an Embeddings module recorded, for the one sentence."""
    position = call["position"] if call["position"] is not None else torch.zeros_like(call["token"][0])
    return EmbeddingTrace(ids, tokens, call["token"][0], float(scale), position, call["sum"][0])


def _layer(rec: Record, layer: nn.Module, stack: str, index: int, tokens: list[str],
           src_tokens: list[str] | None) -> LayerTrace:
    """One encoder or decoder layer as its modules recorded it."""
    own = "enc" if stack == "encoder" else "dec"
    self_attn = attention_trace(rec.of(layer.self_attn)[0], own, index, tokens, tokens, layer.self_attn)
    self_block = _sublayer(rec, layer.attn_block)
    self_attn.norm = _pre_norm(layer.attn_block, self_block)
    cross_attn = cross_block = None
    if getattr(layer, "cross_attn", None) is not None:
        cross_attn = attention_trace(rec.of(layer.cross_attn)[0], "cross", index, tokens, src_tokens, layer.cross_attn)
        cross_block = _sublayer(rec, layer.cross_block)
        cross_attn.norm = _pre_norm(layer.cross_block, cross_block)
    ff = rec.of(layer.ff)[0]
    return LayerTrace(stack, index, self_attn, self_block, cross_attn,
                      cross_block, FeedForwardTrace(ff["input"][0], ff["hidden"][0], ff["output"][0]),
                      _sublayer(rec, layer.ff_block))


def _pre_norm(block: nn.Module, recorded: SublayerTrace) -> NormTrace | None:
    """Pre-LN: the norm that turned the residual stream into the sublayer's input (None for post-LN)."""
    return norm_trace(block.norm, recorded.input, recorded.fn_input) if block.norm_first else None


def _sublayer(rec: Record, block: nn.Module) -> SublayerTrace:
    """A residual block as it recorded itself, with its RMSNorm when it has one."""
    return SublayerTrace(**_one(rec.of(block)[0]), rmsnorm=_rmsnorm(rec, block.norm))


def _rmsnorm(rec: Record, norm: nn.Module) -> RMSNormTrace | None:
    """What an RMSNorm recorded (None for nn.LayerNorm, which records nothing)."""
    calls = rec.of(norm)
    if not calls:
        return None
    call = _one(calls[0])
    return RMSNormTrace(call["input"], call["rms"], norm.weight.detach(), call["output"])


def _one(call: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first (only) sentence of every recorded (1, ...) tensor."""
    return {name: t[0] for name, t in call.items()}


def attention_trace(call: dict[str, torch.Tensor], kind: str, layer: int, query_tokens: list[str],
                    key_tokens: list[str], attn: MultiHeadAttention) -> AttentionTrace:
    """A MultiHeadAttention's recorded call (batch of one) as an AttentionTrace. The only number
    computed here is each head's share of the output projection: mixed_h W_O[:, h]."""
    scores = call["scores"][0]                                                   # (H, T_q, T_k)
    mask = call["mask"]
    mask = torch.ones_like(scores[0], dtype=torch.bool) if mask is None else torch.broadcast_to(mask, call["scores"].shape)[0, 0]
    mixed = call["mixed"][0]                                                     # (H, T_q, d_head)
    used = projection_weights(attn)
    q_before = call.get("q_before_rope")

    def per_query_head(name: str) -> torch.Tensor | None:
        """A recorded key/value-head tensor (1, H_kv, T_k, d_head), if any, as each query head's (H, T_k, d_head)."""
        kv = call.get(name)
        return None if kv is None else attn.share_kv_heads(kv)[0]

    return AttentionTrace(kind, layer, query_tokens, key_tokens, call["x"][0], call["memory"][0], call["q"][0],
                          call["k"][0], call["v"][0], scores, call["scaled"][0], mask, call["weights"][0], mixed,
                          mixed @ used.w_o, call["out"][0],
                          q_before_rope=None if q_before is None else q_before[0],
                          k_before_rope=per_query_head("k_before_rope"),
                          n_kv_heads=attn.n_kv_heads, weights_used=used,
                          q_norm=_qk_norm(call, attn, "q"), k_norm=_qk_norm(call, attn, "k"),
                          v_before_embed=per_query_head("v_before_embed"),
                          value_embedding=per_query_head("value_embedding"))


def _qk_norm(call: dict[str, torch.Tensor], attn: MultiHeadAttention, which: str) -> NormTrace | None:
    """QK-norm of the queries (`which` = "q") or keys ("k") as it ran: (H, T, d_head) before and after,
    keys per query head (with grouped-query attention each query head's key/value head)."""
    norm = attn.q_norm if which == "q" else attn.k_norm
    before = call.get(f"{which}_before_norm")
    if norm is None or before is None:
        return None
    unrotated = call.get(f"{which}_before_rope")                 # with RoPE the norm's output is rotated next
    after = unrotated if unrotated is not None else call[which]
    if which == "k":                                             # the recorded K is already per query head
        before, after = attn.share_kv_heads(before), attn.share_kv_heads(after) if unrotated is not None else after
    return norm_trace(norm, before[0], after[0])


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


def _ids(value, tokenizer, what: str, cfg, allow_empty: bool = False) -> list[int]:
    """Text (through the tokenizer) or token ids (used as given), checked against the model."""
    if isinstance(value, str):
        if tokenizer is None:
            raise ConfigError(f"the {what} is text but no tokenizer was given; pass one or pass token ids")
        ids = list(tokenizer.encode(value))
    else:
        if isinstance(value, torch.Tensor):
            if value.dim() == 2 and value.size(0) == 1:
                value = value[0]
            if value.dim() != 1:
                raise ShapeError(f"the {what} ids must be one sequence (T,) or (1, T), got {tuple(value.shape)}")
            value = value.tolist()
        ids = [int(i) for i in value]
    vocab = cfg.src_vocab_size if what == "source" else cfg.tgt_vocab_size
    if not ids and not allow_empty:
        raise DataError(f"the {what} has no tokens; give some text")
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise DataError(f"the {what} holds id {bad[0]} outside the vocabulary [0, {vocab})")
    limit = cfg.max_len - 1 if what == "target" else cfg.max_len          # the decoder reads <bos> + target
    if len(ids) > limit:
        raise DataError(f"the {what} has {len(ids)} tokens but the model handles at most {limit}; shorten it")
    return ids


def token_strings(ids: list[int], tokenizer: Any | None, specials: dict[int, str] | None = None) -> list[str]:
    """Readable display strings: specials by name, byte-level BPE markers made visible."""
    if tokenizer is None:
        return [(specials or {}).get(i, str(i)) for i in ids]
    return [display_token(tokenizer, i) for i in ids]


def _vocab(tokenizer: Any | None, size: int) -> list[str] | None:
    if tokenizer is None:
        return None
    return [display_token(tokenizer, i) for i in range(min(size, tokenizer.vocab_size))]


_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "\\r"}


def display_token(tokenizer: Any, token_id: int) -> str:
    """Token `token_id` as a person can read it: byte-level BPE's 'Ġcat' becomes '␣cat' (the
    tokenizer's `display` turns bytes back into text), and whitespace becomes visible."""
    token = tokenizer.id_to_token(token_id)
    if hasattr(tokenizer, "display"):
        token = tokenizer.display(token)
    return "".join(_VISIBLE.get(c, c) for c in token) or "∅"
