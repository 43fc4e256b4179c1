"""Building blocks: embeddings, positional encodings, feed-forward, encoder and decoder layers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qkv.config import ModelConfig
from qkv.errors import ShapeError
from qkv.model.attention import KVCache, MultiHeadAttention
from qkv.model.record import note


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """The paper's encoding: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same).

    Returns (max_len, d_model). Each pair of dimensions is a clock with its own wavelength, from
    2*pi to 10000*2*pi, so every position gets a unique pattern and relative offsets are linear maps.
    """
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]              # (L, 1)
    i2 = torch.arange(0, d_model, 2, dtype=torch.float64)                  # 2i
    angle = pos / torch.pow(10000.0, i2 / d_model)                         # (L, d/2)
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed positions (no parameters); works for any position below max_len."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        """Encodings for positions start .. start+length-1: (length, d_model)."""
        _check_positions(length, start, self.max_len)
        return self.pe[start : start + length]


class LearnedPositionalEncoding(nn.Module):
    """One trained vector per position (BERT, GPT-2)."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        _check_positions(length, start, self.max_len)
        return self.weight[start : start + length]


def _check_positions(length: int, start: int, max_len: int) -> None:
    if start + length > max_len:
        raise ShapeError(
            f"sequence needs positions up to {start + length}, but the model was built with "
            f"max_len={max_len}; shorten the input or raise model.max_len"
        )


class Embeddings(nn.Module):
    """Token embedding (scaled by sqrt(d_model)) plus positional encoding, then dropout."""

    record: list | None = None          # see qkv.model.record

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.token = nn.Embedding(vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        nn.init.normal_(self.token.weight, std=cfg.d_model**-0.5)
        with torch.no_grad():
            self.token.weight[cfg.pad_id].zero_()
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        pos_cls = SinusoidalPositionalEncoding if cfg.positional == "sinusoidal" else LearnedPositionalEncoding
        self.position = pos_cls(cfg.max_len, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def weight(self) -> torch.Tensor:
        return self.token.weight

    def forward(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, T) ids -> (B, T, d_model)"""
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ShapeError(f"token ids must be an integer tensor of shape (B, T), got {ids.dtype} {tuple(ids.shape)}")
        token = self.token(ids) * self.scale                               # (B, T, d_model)
        position = self.position(ids.size(1), start)                       # (T, d_model)
        x = token + position
        note(self, ids=ids, token=token, position=position, sum=x)
        return self.dropout(x)


class FeedForward(nn.Module):
    """Position-wise feed-forward: FFN(x) = W2 act(W1 x + b1) + b2, the same for every position."""

    record: list | None = None          # see qkv.model.record

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.act = F.relu if cfg.activation == "relu" else F.gelu
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.w1(x))                                      # (B, T, d_ff)
        out = self.w2(self.dropout(hidden))                                # (B, T, d_model)
        note(self, input=x, hidden=hidden, output=out)
        return out


class Sublayer(nn.Module):
    """Residual connection around `fn` with LayerNorm, in either placement.

    post-LN (the paper):  x = LayerNorm(x + Dropout(fn(x)))
    pre-LN  (GPT-2):      x = x + Dropout(fn(LayerNorm(x)))
    """

    record: list | None = None          # see qkv.model.record

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm_first = cfg.norm_first

    def forward(self, x: torch.Tensor, fn) -> torch.Tensor:
        fn_input = self.norm(x) if self.norm_first else x
        fn_output = fn(fn_input)
        residual = x + self.dropout(fn_output)
        out = residual if self.norm_first else self.norm(residual)
        note(self, input=x, fn_input=fn_input, fn_output=fn_output, residual=residual, output=out)
        return out


class EncoderLayer(nn.Module):
    """Self-attention over the whole source, then the feed-forward network."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias)
        self.ff = FeedForward(cfg)
        self.attn_block = Sublayer(cfg)
        self.ff_block = Sublayer(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, S, d_model); mask: (B, 1, 1, S) source padding mask."""
        x = self.attn_block(x, lambda h: self.self_attn(h, mask=mask)[0])
        return self.ff_block(x, self.ff)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder (if `cross`), then feed-forward."""

    def __init__(self, cfg: ModelConfig, cross: bool = True):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias)
        self.attn_block = Sublayer(cfg)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias, cross=True) if cross else None
        self.cross_block = Sublayer(cfg) if cross else None
        self.ff = FeedForward(cfg)
        self.ff_block = Sublayer(cfg)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x: (B, T, d_model); self_mask: causal (& padding), broadcastable to (B, H, T, T_past + T);
        memory: encoder output (B, S, d_model) with memory_mask (B, 1, 1, S)."""
        x = self.attn_block(x, lambda h: self.self_attn(h, mask=self_mask, cache=self_cache)[0])
        if self.cross_attn is not None:
            x = self.cross_block(x, lambda h: self.cross_attn(h, memory, mask=memory_mask, cache=cross_cache)[0])
        return self.ff_block(x, self.ff)
