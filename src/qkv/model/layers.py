"""Building blocks: embeddings, positional encodings, feed-forward, encoder and decoder layers."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qkv.config import ModelConfig
from qkv.errors import ShapeError
from qkv.model.attention import KVCache, MultiHeadAttention
from qkv.model.masks import Packing


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


class Dropout(nn.Module):
    """Inverted dropout, as nn.Dropout: in training, zero each element with probability p and
    scale the others by 1 / (1 - p); in evaluation, the identity.

    On the CPU the mask comes from NumPy's PCG64 generator (64 random bits give four 16-bit
    draws) instead of torch's bernoulli_, which draws from a Mersenne Twister one element at a
    time: on 2 CPU cores that made dropout about 15% of a translation training step, now ~5%.
    Each call seeds PCG64 from torch's generator, so torch.manual_seed and the RNG state in a
    checkpoint still make every mask reproducible. Elsewhere (CUDA, torch.compile) it is F.dropout.
    """

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ShapeError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return F.dropout(x, self.p, training=True)
        return x.masked_fill(drop_mask(x.shape, self.p), 0.0).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A boolean tensor of `shape`, True with probability p (to within 1/65536), drawn on the CPU."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (1,)))                          # torch's generator decides
    bits = np.random.PCG64(seed).random_raw((n + 3) // 4)                  # (n/4,) uint64
    draws = torch.from_numpy(bits.view(np.int16)[:n]).view(shape)         # uniform on [-32768, 32767]
    return draws < -32768 + round(p * 65536)


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

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.token = nn.Embedding(vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        nn.init.normal_(self.token.weight, std=cfg.d_model**-0.5)
        with torch.no_grad():
            self.token.weight[cfg.pad_id].zero_()
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        pos_cls = SinusoidalPositionalEncoding if cfg.positional == "sinusoidal" else LearnedPositionalEncoding
        self.position = pos_cls(cfg.max_len, cfg.d_model)
        self.dropout = Dropout(cfg.dropout)

    @property
    def weight(self) -> torch.Tensor:
        return self.token.weight

    def forward(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, T) ids -> (B, T, d_model)"""
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ShapeError(f"token ids must be an integer tensor of shape (B, T), got {ids.dtype} {tuple(ids.shape)}")
        x = self.token(ids) * self.scale                                   # (B, T, d_model)
        x = x + self.position(ids.size(1), start)                          # + (T, d_model)
        return self.dropout(x)


class FeedForward(nn.Module):
    """Position-wise feed-forward: FFN(x) = W2 act(W1 x + b1) + b2, the same for every position."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.act = F.relu if cfg.activation == "relu" else F.gelu
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(self.act(self.w1(x))))


class Sublayer(nn.Module):
    """Residual connection around `fn` with LayerNorm, in either placement.

    post-LN (the paper):  x = LayerNorm(x + Dropout(fn(x)))
    pre-LN  (GPT-2):      x = x + Dropout(fn(LayerNorm(x)))
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)
        self.norm_first = cfg.norm_first

    def forward(self, x: torch.Tensor, fn) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class EncoderLayer(nn.Module):
    """Self-attention over the whole source, then the feed-forward network."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias)
        self.ff = FeedForward(cfg)
        self.attn_block = Sublayer(cfg)
        self.ff_block = Sublayer(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None) -> torch.Tensor:
        """x: (B, S, d_model), or (N, d_model) real tokens with `packing`; mask: (B, 1, 1, S) source padding mask."""
        x = self.attn_block(x, lambda h: self.self_attn(h, mask=mask, packing=packing)[0])
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
        packing: Packing | None = None,
        memory_packing: Packing | None = None,
    ) -> torch.Tensor:
        """x: (B, T, d_model); self_mask: causal (& padding), broadcastable to (B, H, T, T_past + T);
        memory: encoder output (B, S, d_model) with memory_mask (B, 1, 1, S). With `packing` /
        `memory_packing`, x / memory are the (N, d_model) rows of the real tokens (teacher forcing)."""
        x = self.attn_block(x, lambda h: self.self_attn(h, mask=self_mask, cache=self_cache, packing=packing)[0])
        if self.cross_attn is not None:
            x = self.cross_block(x, lambda h: self.cross_attn(h, memory, mask=memory_mask, cache=cross_cache,
                                                              packing=packing, memory_packing=memory_packing)[0])
        return self.ff_block(x, self.ff)
