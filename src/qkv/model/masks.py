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


def causal_padding_mask(real_keys: torch.Tensor, t_q: int) -> torch.Tensor:
    """The decoder's self-attention mask: the last `t_q` of the (B, T_k) keys are the queries;
    each sees the keys up to itself that are real (not padding). Returns (B, 1, T_q, T_k)."""
    return causal_mask(t_q, real_keys.size(1), real_keys.device) & real_keys[:, None, None, :]
