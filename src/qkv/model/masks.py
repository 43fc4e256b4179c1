"""Attention masks. Boolean everywhere, with True meaning "may attend".

Shapes broadcast against attention scores of shape (B, H, T_q, T_k):
- a padding mask is (B, 1, 1, T_k): every query may look at every real key;
- a causal mask is (T_q, T_k): query t may look at keys 0..t (plus any cached past).
"""

from __future__ import annotations

import torch

from qkv.errors import ShapeError


def padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, T) token ids -> (B, 1, 1, T) mask that is False at padding positions."""
    if ids.dim() != 2:
        raise ShapeError(f"padding_mask expects token ids of shape (B, T), got {tuple(ids.shape)}")
    return (ids != pad_id)[:, None, None, :]


def causal_mask(t_q: int, t_k: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """(T_q, T_k) lower-triangular mask; with T_k > T_q the first T_k - T_q keys are a cached past.

    Query i (the (T_k - T_q + i)-th position overall) may attend to keys 0 .. T_k - T_q + i.
    """
    t_k = t_q if t_k is None else t_k
    if t_k < t_q:
        raise ShapeError(f"causal_mask needs at least as many keys as queries, got {t_q} > {t_k}")
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def combine(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of the masks that are not None (None means "no restriction")."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else out & m
    return out


class Packing:
    """Where the real tokens of a padded (B, T) batch sit, to run position-wise layers without padding.

    Everything in a Transformer layer except attention treats each position on its own (the
    projections, the feed-forward network, LayerNorm, dropout, the output layer), so in teacher
    forcing those layers can run on the N real tokens packed as (N, d) rows and skip the padding:
    on batches of sentences 10-20 tokens long a quarter of the positions are padding. Attention
    needs the (B, T) layout, so its queries, keys and values are unpacked into it (zeros at the
    padding, which the padding mask hides) and its output is packed again.
    """

    def __init__(self, real: torch.Tensor):
        if real.dim() != 2 or real.dtype != torch.bool:
            raise ShapeError(f"Packing needs a boolean (B, T) mask of real tokens, got {real.dtype} {tuple(real.shape)}")
        self.batch, self.length = real.shape
        self.index = real.flatten().nonzero().squeeze(1)                   # (N,) flat positions b*T + t

    @classmethod
    def of(cls, real: torch.Tensor, min_padding: float = 0.05) -> Packing | None:
        """A Packing for the (B, T) mask of real tokens, or None when under `min_padding` of the
        positions are padding (then the copies in and out of attention would cost more than they save)."""
        if real.numel() == 0 or float(real.sum()) > (1.0 - min_padding) * real.numel():
            return None
        return cls(real)

    @property
    def n(self) -> int:
        return self.index.numel()

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): the rows of the real tokens."""
        return x.flatten(0, 1).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padding."""
        out = x.new_zeros(self.batch * self.length, *x.shape[1:])
        return out.index_copy(0, self.index, x).view(self.batch, self.length, *x.shape[1:])

    def select(self, rows: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Packed rows (N, ...) -> those where `keep` (boolean (B, T), True only at packed positions) is True."""
        if keep is None:
            return rows
        kept = keep.flatten().index_select(0, self.index)                  # (N,)
        return rows if bool(kept.all()) else rows[kept]
