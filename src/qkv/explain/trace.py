"""Every intermediate tensor of one forward pass, computed with the paper's equations.

`trace(model, src, tgt)` runs one sentence (batch of 1) through an `EncoderDecoder` or a
`DecoderOnly` model by walking its modules in the same order as their `forward`, using their own
parameters, and keeps everything on the way:

    tokens -> token embedding * sqrt(d_model) + positional encoding
    for each layer:   (post-LN, the paper)             (pre-LN)
        attention:    x = LN(x + MHA(x))               x = x + MHA(LN(x))
        [cross:       x = LN(x + MHA(x, memory))       x = x + MHA(LN(x), memory)]
        feed-forward: x = LN(x + FFN(x))               x = x + FFN(LN(x))
    logits = lm_head(x)  ->  softmax  ->  next-token distribution

and inside every multi-head attention, for every head h:

    Q = x W_Q,  K = m W_K,  V = m W_V                  (split into H heads of d_head)
    scores = Q K^T,  scaled = scores / sqrt(d_head),  masked positions -> -inf
    weights = softmax(scaled),  mixed = weights V,  head_out_h = mixed_h W_O[:, h]
    MHA(x) = sum_h head_out_h + b_O

The model code is not touched: the trace recomputes the same numbers from the same weights, and
the tests check that its logits equal the model's own forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from qkv.errors import ConfigError, DataError, ShapeError
from qkv.model.attention import MultiHeadAttention
from qkv.model.layers import Embeddings, FeedForward, Sublayer
from qkv.model.masks import causal_mask
from qkv.model.transformer import DecoderOnly, EncoderDecoder

KINDS = ("enc", "dec", "cross")
KIND_NAMES = {"enc": "encoder self-attention", "dec": "decoder masked self-attention", "cross": "cross-attention"}
SPECIALS = {0: "<pad>", 1: "<bos>", 2: "<eos>", 3: "<unk>"}


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
    positional: torch.Tensor          # (T, d_model)
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

    @property
    def n_heads(self) -> int:
        return self.q.size(0)

    @property
    def d_head(self) -> int:
        return self.q.size(-1)

    @property
    def title(self) -> str:
        return f"layer {self.layer} {KIND_NAMES[self.kind]}"


@dataclass
class SublayerTrace:
    """A residual block: what went in, what the function saw, what it added, what came out."""

    input: torch.Tensor               # (T, d_model) the residual stream before the block
    fn_input: torch.Tensor            # LN(input) for pre-LN, input itself for post-LN
    fn_output: torch.Tensor           # attention or feed-forward output
    residual: torch.Tensor            # input + fn_output
    output: torch.Tensor              # LN(residual) for post-LN, residual for pre-LN


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
        return SPECIALS.get(token_id, str(token_id))

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
                    "weights": _rounded(a.weights),            # [head][query][key]
                }
                for a in self.attentions()
            ],
            "top_k": self.top_k(k),
            "warnings": list(self.warnings),
        }


def _rounded(t: torch.Tensor, digits: int = 5) -> list:
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

    The token conventions are those of training (qkv.data.batching) and decoding (qkv.decode):
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
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, EncoderDecoder):
            src_tokenizer = src_tokenizer if src_tokenizer is not None else tgt_tokenizer
            src_ids = _ids(src, src_tokenizer, "source", cfg)
            tgt_body = [] if tgt is None else _ids(tgt, tgt_tokenizer, "target", cfg, allow_empty=True)
            tgt_ids = [cfg.bos_id] + tgt_body
            next_ids: list[int | None] = tgt_body + [cfg.eos_id] if tgt is not None else [None]
            src_emb = _embed(model.src_embed, src_ids, src_tokenizer)
            src_mask = torch.tensor(src_ids) != cfg.pad_id                       # (S,)
            x, enc_layers = src_emb.sum, []
            for i, layer in enumerate(model.encoder.layers):
                lt = _encoder_layer(layer, i, x, src_mask[None, :], src_emb.tokens)
                enc_layers.append(lt)
                x = lt.output
            memory = model.encoder.norm(x) if model.encoder.norm is not None else x
            tgt_emb = _embed(model.tgt_embed, tgt_ids, tgt_tokenizer)
            dec_layers, h = _decoder_stack(model, tgt_emb, cfg.pad_id, memory, src_mask, src_emb.tokens)
        else:
            text = _ids(src, tgt_tokenizer, "text", cfg, allow_empty=True)
            if tgt is not None:
                text = text + _ids(tgt, tgt_tokenizer, "target", cfg, allow_empty=True)
            text = text or [cfg.bos_id]
            src_emb, memory, enc_layers = None, None, []
            tgt_emb = _embed(model.embed, text, tgt_tokenizer)
            next_ids = list(text[1:]) + [None]
            dec_layers, h = _decoder_stack(model, tgt_emb, cfg.pad_id, None, None, None)
        logits = model.lm_head(h)                                                   # (T, V)
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
        final=h,
        logits=logits,
        probs=torch.softmax(logits.float(), dim=-1),
        next_ids=next_ids,
        vocab=_vocab(tgt_tokenizer, cfg.tgt_vocab_size),
    )


def _decoder_stack(model, emb: EmbeddingTrace, pad_id: int, memory, src_mask, src_tokens):
    """Run the decoder layers (+ final LN for pre-LN) on embedded tokens; return (layers, output)."""
    ids = torch.tensor(emb.ids)
    t = len(emb.ids)
    self_mask = causal_mask(t) & (ids != pad_id)[None, :]                        # (T, T)
    cross_mask = None if src_mask is None else src_mask[None, :].expand(t, -1)   # (T, S)
    x, layers = emb.sum, []
    for i, layer in enumerate(model.decoder.layers):
        lt = _decoder_layer(layer, i, x, self_mask, memory, cross_mask, emb.tokens, src_tokens)
        layers.append(lt)
        x = lt.output
    h = model.decoder.norm(x) if model.decoder.norm is not None else x
    return layers, h


def _embed(embed: Embeddings, ids: list[int], tokenizer: Any | None) -> EmbeddingTrace:
    t = torch.tensor(ids)
    tok = embed.token.weight[t] * embed.scale                                    # (T, d_model)
    pos = embed.position(len(ids)).detach()                                      # (T, d_model); learned: a view of a parameter
    return EmbeddingTrace(ids, token_strings(ids, tokenizer), tok, float(embed.scale), pos, tok + pos)


def _encoder_layer(layer, index: int, x: torch.Tensor, mask: torch.Tensor, tokens: list[str]) -> LayerTrace:
    mask = mask.expand(x.size(0), -1)                                            # (S, S)
    self_attn, self_block = _attention_block(layer.self_attn, layer.attn_block, x, None, mask, "enc", index, tokens, tokens)
    ff, ff_block = _ff_block(layer.ff, layer.ff_block, self_block.output)
    return LayerTrace("encoder", index, self_attn, self_block, None, None, ff, ff_block)


def _decoder_layer(layer, index, x, self_mask, memory, cross_mask, tokens, src_tokens) -> LayerTrace:
    self_attn, self_block = _attention_block(layer.self_attn, layer.attn_block, x, None, self_mask, "dec", index, tokens, tokens)
    x = self_block.output
    cross_attn = cross_block = None
    if layer.cross_attn is not None:
        cross_attn, cross_block = _attention_block(
            layer.cross_attn, layer.cross_block, x, memory, cross_mask, "cross", index, tokens, src_tokens
        )
        x = cross_block.output
    ff, ff_block = _ff_block(layer.ff, layer.ff_block, x)
    return LayerTrace("decoder", index, self_attn, self_block, cross_attn, cross_block, ff, ff_block)


def _attention_block(attn, block, x, memory, mask, kind, index, q_tokens, k_tokens):
    fn_input = block.norm(x) if block.norm_first else x
    source = fn_input if memory is None else memory      # self-attention: keys come from the same stream
    at = attend(attn, fn_input, source, mask, kind, index, q_tokens, k_tokens)
    return at, _residual(block, x, fn_input, at.out)


def _ff_block(ff: FeedForward, block: Sublayer, x: torch.Tensor) -> tuple[FeedForwardTrace, SublayerTrace]:
    fn_input = block.norm(x) if block.norm_first else x
    hidden = ff.act(ff.w1(fn_input))                                             # (T, d_ff)
    out = ff.w2(hidden)                                                          # (T, d_model)
    return FeedForwardTrace(fn_input, hidden, out), _residual(block, x, fn_input, out)


def _residual(block: Sublayer, x, fn_input, fn_output) -> SublayerTrace:
    residual = x + fn_output
    output = residual if block.norm_first else block.norm(residual)
    return SublayerTrace(x, fn_input, fn_output, residual, output)


def attend(
    attn: MultiHeadAttention,
    x: torch.Tensor,
    memory: torch.Tensor,
    mask: torch.Tensor,
    kind: str,
    layer: int,
    query_tokens: list[str],
    key_tokens: list[str],
) -> AttentionTrace:
    """Multi-head attention, step by step, for one sequence: x (T_q, d_model), memory (T_k, d_model)."""
    h, d = attn.n_heads, attn.d_head
    q = attn.q_proj(x).view(-1, h, d).transpose(0, 1)                            # (H, T_q, d_head)
    k = attn.k_proj(memory).view(-1, h, d).transpose(0, 1)                       # (H, T_k, d_head)
    v = attn.v_proj(memory).view(-1, h, d).transpose(0, 1)                       # (H, T_k, d_head)
    scores = q @ k.transpose(-2, -1)                                             # (H, T_q, T_k)
    scaled = scores / math.sqrt(d)
    weights = torch.softmax(scaled.masked_fill(~mask, float("-inf")), dim=-1)
    weights = weights.masked_fill(~mask, 0.0)                                    # all-masked rows: NaN -> 0
    mixed = weights @ v                                                          # (H, T_q, d_head)
    w_o = attn.out_proj.weight.view(attn.d_model, h, d).permute(1, 2, 0)         # (H, d_head, d_model)
    head_outputs = mixed @ w_o                                                   # (H, T_q, d_model)
    out = head_outputs.sum(0)
    if attn.out_proj.bias is not None:
        out = out + attn.out_proj.bias
    return AttentionTrace(kind, layer, query_tokens, key_tokens, x, memory, q, k, v, scores, scaled,
                          mask, weights, mixed, head_outputs, out)


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
    if len(ids) + 1 > cfg.max_len:
        raise DataError(f"the {what} has {len(ids)} tokens but the model handles at most {cfg.max_len - 1}; shorten it")
    return ids


def token_strings(ids: list[int], tokenizer: Any | None) -> list[str]:
    """Readable display strings: specials by name, byte-level BPE markers made visible."""
    if tokenizer is None:
        return [SPECIALS.get(i, str(i)) for i in ids]
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
