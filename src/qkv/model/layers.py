"""Building blocks: embeddings, positional encodings, feed-forward, norms, encoder and decoder layers.

Besides the paper's choices, the changes that today's decoder-only models made since 2017 are
options here, each a few lines with its paper: rotary positions (RotaryPositionalEncoding), RMSNorm,
the SwiGLU feed-forward, QK-norm (qk_rmsnorm), the logit soft-cap (LogitSoftCap), and (in
attention.py) grouped-query attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from qkv.config import ModelConfig
from qkv.errors import ShapeError
from qkv.model.attention import KVCache, MultiHeadAttention
from qkv.model.record import Calls, note


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

    pe: torch.Tensor                    # buffer (max_len, d_model)

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


class RotaryPositionalEncoding(nn.Module):
    """RoPE (Su et al., 2021, "RoFormer", eq. 34): instead of adding a vector to the embedding,
    rotate every pair of dimensions (x_2i, x_2i+1) of each query and key by the angle
    pos * theta^(-2i/d_head). A rotation keeps lengths, and the dot product of a query rotated by
    m and a key rotated by n depends only on m - n: attention scores see relative positions.
    Used inside self-attention (see MultiHeadAttention); no parameters.
    """

    cos: torch.Tensor                   # buffers (max_len, d_head/2)
    sin: torch.Tensor

    def __init__(self, max_len: int, d_head: int, theta: float = 10000.0):
        super().__init__()
        self.max_len = max_len
        pos = torch.arange(max_len, dtype=torch.float64)[:, None]               # (L, 1)
        freq = torch.pow(theta, -torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)   # theta^(-2i/d)
        angle = pos * freq                                                     # (L, d_head/2)
        self.register_buffer("cos", torch.cos(angle).float(), persistent=False)
        self.register_buffer("sin", torch.sin(angle).float(), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x: (B, H, T, d_head) queries or keys at positions start .. start+T-1 -> rotated, same shape."""
        _check_positions(x.size(-2), start, self.max_len)
        cos, sin = self.cos[start : start + x.size(-2)], self.sin[start : start + x.size(-2)]   # (T, d_head/2)
        x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()                    # the pairs (x_2i, x_2i+1)
        rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)   # (B, H, T, d_head/2, 2)
        return rotated.flatten(-2).to(x.dtype)


def _check_positions(length: int, start: int, max_len: int) -> None:
    if start + length > max_len:
        raise ShapeError(
            f"sequence needs positions up to {start + length}, but the model was built with "
            f"max_len={max_len}; shorten the input or raise model.max_len"
        )


class Embeddings(nn.Module):
    """Token embedding (scaled by sqrt(d_model)) plus positional encoding, then dropout."""

    record: Calls | None = None         # see qkv.model.record

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.token = nn.Embedding(vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        nn.init.normal_(self.token.weight, std=cfg.d_model**-0.5)
        with torch.no_grad():
            self.token.weight[cfg.pad_id].zero_()
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        pos_cls = {"sinusoidal": SinusoidalPositionalEncoding, "learned": LearnedPositionalEncoding}.get(cfg.positional)
        self.position = pos_cls(cfg.max_len, cfg.d_model) if pos_cls else None   # None: RoPE, in attention
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def weight(self) -> torch.Tensor:
        return self.token.weight

    def forward(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, T) ids -> (B, T, d_model)"""
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ShapeError(f"token ids must be an integer tensor of shape (B, T), got {ids.dtype} {tuple(ids.shape)}")
        token = self.token(ids) * self.scale                               # (B, T, d_model)
        position = self.position(ids.size(1), start) if self.position is not None else None  # (T, d_model)
        x = token + position if position is not None else token
        note(self, ids=ids, token=token, position=position, sum=x)
        out: torch.Tensor = self.dropout(x)
        return out


def swiglu_width(d_ff: int) -> int:
    """The hidden width of SwiGLU that holds as many parameters as a ReLU FFN of width d_ff:
    three d_model x h matrices instead of two, so h = 2/3 d_ff (rounded)."""
    return round(2 * d_ff / 3)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu, "swiglu": F.silu}


class FeedForward(nn.Module):
    """Position-wise feed-forward: FFN(x) = W2 act(W1 x + b1) + b2, the same for every position.

    activation="swiglu" (Shazeer, 2020, "GLU Variants Improve Transformer"; Llama): a gated unit,
    FFN(x) = W2 (Swish(W1 x) * W3 x), Swish = SiLU, hidden width 2/3 d_ff (see swiglu_width).
    """

    record: Calls | None = None         # see qkv.model.record

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        gated = cfg.activation == "swiglu"
        hidden = swiglu_width(cfg.d_ff) if gated else cfg.d_ff
        self.w1 = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        self.w3 = nn.Linear(cfg.d_model, hidden, bias=cfg.bias) if gated else None   # the gate's other half
        self.w2 = nn.Linear(hidden, cfg.d_model, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.activation]
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.w1(x))                                      # (B, T, d_ff)
        if self.w3 is not None:
            hidden = hidden * self.w3(x)                                   # SwiGLU: Swish(x W1) * (x W3)
        out: torch.Tensor = self.w2(self.dropout(hidden))                  # (B, T, d_model)
        note(self, input=x, hidden=hidden, output=out)
        return out


class RMSNorm(nn.Module):
    """Root mean square normalisation (Zhang & Sennrich, 2019): RMSNorm(x) = x / RMS(x) * g with
    RMS(x) = sqrt(mean_i(x_i^2) + eps). LayerNorm without subtracting the mean and without a bias:
    fewer operations, and the paper finds it trains as well (written out here as the formula, it is
    slower on a CPU than PyTorch's fused LayerNorm kernel: see docs/language_model.md)."""

    record: Calls | None = None         # see qkv.model.record

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))                      # the gain g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)   # (B, T, 1)
        out = (x.float() / rms).to(x.dtype) * self.weight
        note(self, input=x, rms=rms, output=out)
        return out


def make_norm(cfg: ModelConfig) -> nn.Module:
    """The normalisation the config names: LayerNorm (the paper) or RMSNorm."""
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)


def qk_rmsnorm(cfg: ModelConfig) -> RMSNorm | None:
    """QK-norm (Henry et al., 2020; Dehghani et al., 2023, ViT-22B): an RMSNorm over d_head, one for
    the queries and one for the keys of an attention, its gain shared by all heads, as in Gemma 3 and
    Qwen3 (OLMo 2 normalizes the whole projection instead; the modded-nanogpt records go per head
    without a gain). Unit-RMS queries and keys bound every score by d_head * max|g_q| * max|g_k|,
    however large the projections grow, so softmax does not saturate. None when model.qk_norm is off."""
    return RMSNorm(cfg.d_head, eps=cfg.layer_norm_eps) if cfg.qk_norm else None


def value_embedding(cfg: ModelConfig) -> nn.Embedding | None:
    """Value embeddings (modded-nanogpt, 2024): a table of one (H_kv * d_head) vector per token whose
    row is added to that token's values. It starts at zero, so the model starts as the one without
    it and learns what to add; an embedding, it trains with AdamW beside Muon. None when
    model.value_embeddings is off."""
    if not cfg.value_embeddings:
        return None
    table = nn.Embedding(cfg.vocab_size, cfg.kv_heads * cfg.d_head)
    nn.init.zeros_(table.weight)
    return table


def self_attention(cfg: ModelConfig) -> MultiHeadAttention:
    """Self-attention as the config shapes it: key/value heads, rotary positions, QK-norm and value
    embeddings if chosen."""
    rope = RotaryPositionalEncoding(cfg.max_len, cfg.d_head, cfg.rope_theta) if cfg.positional == "rope" else None
    return MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias,
                              n_kv_heads=cfg.kv_heads, rope=rope, q_norm=qk_rmsnorm(cfg), k_norm=qk_rmsnorm(cfg),
                              value_embed=value_embedding(cfg))


def cross_attention(cfg: ModelConfig) -> MultiHeadAttention:
    """Cross-attention as the config shapes it: key/value heads and QK-norm (no RoPE: the source's
    positions are already in the encoder's output)."""
    return MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias, cross=True,
                              n_kv_heads=cfg.kv_heads, q_norm=qk_rmsnorm(cfg), k_norm=qk_rmsnorm(cfg))


class LogitSoftCap(nn.Module):
    """Logit soft-capping (Gemma 2, Gemma Team 2024; the modded-nanogpt speed records):

        logits = cap * tanh(logits / cap)

    about the identity for |logits| << cap, and never beyond +-cap: no token can be pushed to an
    ever larger logit, which keeps the output layer's growth (and the loss's spikes) in check.
    Computed in float32, returned in the logits' dtype."""

    record: Calls | None = None         # see qkv.model.record

    def __init__(self, cap: float):
        super().__init__()
        self.cap = cap

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        capped = (self.cap * torch.tanh(logits.float() / self.cap)).to(logits.dtype)   # (B, T, V)
        note(self, logits=logits, capped=capped)
        return capped

    def extra_repr(self) -> str:
        return f"cap={self.cap}"


class Sublayer(nn.Module):
    """Residual connection around `fn` with LayerNorm, in either placement.

    post-LN (the paper):  x = LayerNorm(x + Dropout(fn(x)))
    pre-LN  (GPT-2):      x = x + Dropout(fn(LayerNorm(x)))
    (RMSNorm in place of LayerNorm when model.norm = "rmsnorm".)
    """

    record: Calls | None = None         # see qkv.model.record

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = make_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm_first = cfg.norm_first

    def forward(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        fn_input = self.norm(x) if self.norm_first else x
        fn_output = fn(fn_input)
        residual = x + self.dropout(fn_output)
        out: torch.Tensor = residual if self.norm_first else self.norm(residual)
        note(self, input=x, fn_input=fn_input, fn_output=fn_output, residual=residual, output=out)
        return out


class EncoderLayer(nn.Module):
    """Self-attention over the whole source, then the feed-forward network."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = self_attention(cfg)
        self.ff = FeedForward(cfg)
        self.attn_block = Sublayer(cfg)
        self.ff_block = Sublayer(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, S, d_model); mask: (B, 1, 1, S) source padding mask."""
        x = self.attn_block(x, lambda h: self.self_attn(h, mask=mask)[0])
        x = self.ff_block(x, self.ff)
        return x


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder (if `cross`), then feed-forward."""

    def __init__(self, cfg: ModelConfig, cross: bool = True):
        super().__init__()
        self.self_attn = self_attention(cfg)
        self.attn_block = Sublayer(cfg)
        self.cross_attn = cross_attention(cfg) if cross else None
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
        ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, T, d_model); self_mask: causal (& padding), broadcastable to (B, H, T, T_past + T);
        memory: encoder output (B, S, d_model) with memory_mask (B, 1, 1, S); ids: (B, T) the tokens,
        for value embeddings."""
        x = self.attn_block(x, lambda h: self.self_attn(h, mask=self_mask, cache=self_cache, ids=ids)[0])
        if self.cross_attn is not None and self.cross_block is not None:   # (both or neither)
            x = self.cross_block(x, lambda h: self.cross_attn(h, memory, mask=memory_mask, cache=cross_cache)[0])
        x = self.ff_block(x, self.ff)
        return x
