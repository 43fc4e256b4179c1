"""Scaled dot-product attention and multi-head attention, as in "Attention Is All You Need".

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Attention is a soft look-up: each query is compared with every key (a dot product), the scores
are scaled by 1/sqrt(d_k) so their spread does not grow with the head size, masked positions are
removed, softmax turns the scores into weights that sum to 1, and the weights mix the values.
Multi-head attention does this H times in parallel on d_model/H-dimensional projections and
concatenates the results.

Three changes since 2017 are options of MultiHeadAttention: grouped-query attention (Ainslie et al.,
2023), where H_kv < H key/value heads each serve a group of query heads (H_kv = 1: multi-query
attention, Shazeer 2019), so the KV cache shrinks by H/H_kv; rotary positions (RoPE, see
qkv.model.layers.RotaryPositionalEncoding), which turn queries and keys by their positions; and
QK-norm (Henry et al., 2020, "Query-Key Normalization for Transformers"; Dehghani et al., 2023,
ViT-22B), which normalizes each head's queries and keys before their dot product, so the scores
cannot grow without bound and saturate softmax. A fourth, value embeddings (the modded-nanogpt speed
records, Jordan et al., 2024, after the value residuals of Zhou et al., 2024, "Value Residual
Learning"), gives each token a learned vector of its own that is added to its values: V = x W_V +
E_V[token], so a layer can pass on what the token is without spending its projection on it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qkv.errors import ShapeError
from qkv.model.record import Calls, note


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    return_weights: bool = False,
    dropout_p: float = 0.0,
    record: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d_k)) v with a boolean mask (True = may attend).

    q: (..., T_q, d_k), k: (..., T_k, d_k), v: (..., T_k, d_v); mask broadcastable to
    (..., T_q, T_k). Returns (output (..., T_q, d_v), weights (..., T_q, T_k) or None).

    With `return_weights=False` the fused kernel `torch.nn.functional.scaled_dot_product_attention`
    does the work; with `return_weights=True` the same maths runs step by step so the weights can
    be returned. Masked keys get exactly zero weight; a query whose keys are all masked gets zero
    weights and a zero output (never NaN). A `record` dict (see qkv.model.record) receives the
    step-by-step `scores`, `scaled` and `weights`.
    """
    _check_qkv(q, k, v, mask)
    if not return_weights and record is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return out, None

    scores = q @ k.transpose(-2, -1)                                # (..., T_q, T_k) Q K^T
    scaled = scores / math.sqrt(q.size(-1))                         # / sqrt(d_k)
    masked = scaled if mask is None else scaled.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(masked.float(), dim=-1).to(q.dtype)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)                   # rows of all -inf: NaN -> 0
    if record is not None:
        record.update(scores=scores, scaled=scaled, weights=weights)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> None:
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ShapeError(
            f"q, k, v must have the same number of dimensions (>= 2), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.size(-1) != k.size(-1):
        raise ShapeError(f"q and k must share the last dimension d_k, got {q.size(-1)} and {k.size(-1)}")
    if k.size(-2) != v.size(-2):
        raise ShapeError(f"k and v must have the same length T_k, got {k.size(-2)} and {v.size(-2)}")
    if not (q.is_floating_point() and q.dtype == k.dtype == v.dtype):
        raise ShapeError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ShapeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
        if mask.size(-1) != k.size(-2) or mask.size(-2) not in (1, q.size(-2)):
            raise ShapeError(
                f"mask of shape {tuple(mask.shape)} does not fit scores of shape "
                f"(..., {q.size(-2)}, {k.size(-2)})"
            )


class KVCache:
    """Keys and values already computed for one attention layer, shape (B, H_kv, T, d_head)
    (H_kv = H for multi-head attention; keys already normalized and rotated with QK-norm and RoPE).

    Incremental decoding appends one step at a time; storage grows by doubling so that a step
    costs a copy of the new keys only. For cross-attention the encoder's keys and values are
    stored once and reused at every step.
    """

    def __init__(self) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.length = 0

    @property
    def k(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[:, :, : self.length]

    @property
    def v(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[:, :, : self.length]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add (B, H, T_new, d) keys/values; return all keys/values so far."""
        t_new = k.size(2)
        if self._k is None or self._v is None:                          # (both None or both set)
            capacity = max(16, 2 * t_new)
            self._k = k.new_empty(k.size(0), k.size(1), capacity, k.size(3))
            self._v = v.new_empty(v.size(0), v.size(1), capacity, v.size(3))
        elif self.length + t_new > self._k.size(2):
            capacity = max(2 * self._k.size(2), self.length + t_new)
            self._k = _grow(self._k, capacity, self.length)
            self._v = _grow(self._v, capacity, self.length)
        self._k[:, :, self.length : self.length + t_new] = k
        self._v[:, :, self.length : self.length + t_new] = v
        self.length += t_new
        return self._k[:, :, : self.length], self._v[:, :, : self.length]

    def store(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep (B, H, T, d) keys/values that will never grow (the encoder's, for cross-attention)."""
        self._k, self._v, self.length = k.contiguous(), v.contiguous(), k.size(2)
        return self._k, self._v

    def reorder(self, index: torch.Tensor, moves: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Keep batch rows `index` (beam search keeps the surviving hypotheses).

        When the batch keeps its size (beams of the same sentences reshuffled), only the rows that
        change are copied, in place and over the used length; `moves` = row_moves(index), computed
        once for all layers. When rows leave, the whole buffer moves, spare capacity included (each
        row is one contiguous block), so the next append finds room instead of growing."""
        if self._k is None or self._v is None:
            return
        if index.numel() != self._k.size(0):
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)
            return
        dst, src = moves if moves is not None else row_moves(index)
        if dst.numel():
            for buf in (self._k, self._v):
                used = buf[:, :, : self.length]
                used.index_copy_(0, dst, used.index_select(0, src))   # gathered first, then written


def row_moves(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a reordering `index` of a batch into itself: the rows that change and where they come from."""
    dst = (index != torch.arange(index.numel(), device=index.device)).nonzero().squeeze(1)
    return dst, index[dst]


def _grow(buf: torch.Tensor, capacity: int, used: int) -> torch.Tensor:
    new = buf.new_empty(buf.size(0), buf.size(1), capacity, buf.size(3))
    new[:, :, :used] = buf[:, :, :used]
    return new


class MultiHeadAttention(nn.Module):
    """Multi-head attention: self-attention, causal self-attention (via the mask) or cross-attention.

    Self-attention: queries, keys and values all come from `x`.
    Cross-attention (`cross=True`): queries come from the decoder stream `x`, keys and values from
    the encoder output `memory`.
    `n_kv_heads` < n_heads: grouped-query attention (Ainslie et al., 2023), fewer key/value heads,
    each shared by n_heads / n_kv_heads consecutive query heads; 1 is multi-query attention.
    `rope`: rotary positions (Su et al., 2021) applied to queries and keys (self-attention).
    `q_norm`, `k_norm`: QK-norm (Henry et al., 2020; Dehghani et al., 2023; as in Gemma 3, Qwen3 and
    the modded-nanogpt speed records): each head's query and key vectors go through a norm over
    their d_head numbers (RMSNorm with a learned gain, see qkv.model.layers.qk_rmsnorm), before RoPE
    and before Q K^T.
    `value_embed`: value embeddings (self-attention in a decoder-only model): a table E_V of one
    (H_kv * d_head) row per token, added to the values of the tokens `ids` (forward's `ids`).
    """

    record: Calls | None = None         # see qkv.model.record

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True, cross: bool = False,
                 n_kv_heads: int | None = None, rope: nn.Module | None = None,
                 q_norm: nn.Module | None = None, k_norm: nn.Module | None = None,
                 value_embed: nn.Embedding | None = None):
        super().__init__()
        if d_model % n_heads != 0:
            raise ShapeError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        n_kv_heads = n_kv_heads or n_heads
        if n_heads % n_kv_heads != 0:
            raise ShapeError(f"n_kv_heads ({n_kv_heads}) must divide n_heads ({n_heads})")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.n_kv_heads = n_kv_heads
        self.cross = cross
        self.dropout = dropout
        self.rope = rope
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.d_head, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.d_head, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.q_norm, self.k_norm = q_norm, k_norm
        self.value_embed = value_embed

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, heads * d_head) -> (B, heads, T, d_head)"""
        b, t, _ = x.shape
        return x.view(b, t, -1, self.d_head).transpose(1, 2)

    def share_kv_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H_kv, T, d_head) -> (B, H, T, d_head): each key/value head serves H/H_kv query heads."""
        group = self.n_heads // self.n_kv_heads
        return x if group == 1 else x.repeat_interleave(group, dim=1)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, d_head) -> (B, T, d_model)"""
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.d_model)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
        ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T_q, d_model); memory: (B, T_k, d_model) for cross-attention; ids: (B, T_q) the
        tokens of x, which value embeddings need (ignored without them).

        mask: boolean, broadcastable to (B, H, T_q, T_k), True = may attend.
        cache: past keys/values (self-attention: appended to; cross-attention: filled once).
        Returns the output (B, T_q, d_model) and, if asked, the per-head weights (B, H, T_q, T_k).
        """
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ShapeError(f"attention input must be (B, T, {self.d_model}), got {tuple(x.shape)}")
        source = memory if self.cross else x                            # where keys and values come from
        q = self.split_heads(self.q_proj(x))                            # (B, H, T_q, d_head)
        before: dict[str, torch.Tensor] = {}                            # q and k before QK-norm and RoPE
        if self.q_norm is not None:                                     # QK-norm: RMSNorm(q) per head (in q's
            before["q_before_norm"], q = q, self.q_norm(q).to(q.dtype)  # dtype: bf16 under autocast, like v)
        if self.cross and cache is not None and cache.length > 0:
            k, v = cache.k, cache.v                                     # encoder K, V: computed once
            assert k is not None and v is not None                      # (length > 0)
        else:
            if source is None:
                raise ShapeError("cross-attention needs the encoder output `memory`")
            k = self.split_heads(self.k_proj(source))                   # (B, H_kv, T_k, d_head)
            v = self.split_heads(self.v_proj(source))
            if self.value_embed is not None:                            # value embeddings: V += E_V[token]
                if ids is None or ids.shape != x.shape[:2]:
                    raise ShapeError(f"attention with value embeddings needs the ids of its {tuple(x.shape[:2])} "
                                     f"tokens, got {None if ids is None else tuple(ids.shape)}")
                embedded = self.split_heads(self.value_embed(ids)).to(v.dtype)    # (B, H_kv, T, d_head)
                before.update(v_before_embed=v, value_embedding=embedded)
                v = v + embedded
            if self.k_norm is not None:                                 # QK-norm: RMSNorm(k) per head
                before["k_before_norm"], k = k, self.k_norm(k).to(k.dtype)
            if self.rope is not None:                                   # RoPE: turn q and k by their positions
                start = cache.length if cache is not None else 0
                before.update(q_before_rope=q, k_before_rope=k)
                q, k = self.rope(q, start), self.rope(k, start)
            if cache is not None:
                k, v = cache.store(k, v) if self.cross else cache.append(k, v)   # self: T_past + T_q keys
        k, v = self.share_kv_heads(k), self.share_kv_heads(v)           # (B, H, T_k, d_head)
        p = self.dropout if self.training else 0.0
        steps: dict[str, torch.Tensor] | None = {} if self.record is not None else None
        mixed, weights = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=need_weights,
                                                      dropout_p=p, record=steps)
        out = self.out_proj(self.merge_heads(mixed))                    # concat heads, W_O: (B, T_q, d_model)
        note(self, x=x, memory=source, **before, q=q, k=k, v=v, mask=mask, **(steps or {}), mixed=mixed, out=out)
        return out, weights
