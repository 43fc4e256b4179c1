"""Nearest neighbours in a model's embedding space: words used alike lie close together.

Two tokens are compared by the cosine of the angle between their embedding vectors (1: same
direction, 0: unrelated, -1: opposite). `pca_2d` flattens the neighbourhood onto the plane of its
two main directions of variation, for a picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from qkv.errors import DataError
from qkv.explain.trace import display_token
from qkv.tokenizers import SPECIAL_TOKENS


@dataclass
class Neighbour:
    id: int
    token: str            # display string
    similarity: float     # cosine similarity to the query word


def token_id(tokenizer, word: str) -> int:
    """The id of `word` as one token: as written, or with a leading space (byte-level BPE)."""
    for candidate in (word, "Ġ" + word, " " + word):
        i = tokenizer.token_to_id(candidate)
        if i is not None:
            return i
    pieces = tokenizer.tokens(word) if hasattr(tokenizer, "tokens") else []
    hint = f" (it splits into {pieces})" if len(pieces) > 1 else ""
    raise DataError(f"{word!r} is not a single token of this model's vocabulary{hint}; pick a word it knows")


def nearest_neighbours(weight: torch.Tensor, tokenizer, word: str, k: int = 10) -> list[Neighbour]:
    """The word itself, then its `k` nearest tokens by cosine similarity (special tokens skipped)."""
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    i = token_id(tokenizer, word)
    sims = F.cosine_similarity(weight[i][None, :], weight, dim=-1)          # (V,)
    specials = [j for j in map(tokenizer.token_to_id, SPECIAL_TOKENS) if j is not None]
    sims[specials] = float("-inf")
    sims[i] = float("-inf")
    k = min(k, int(torch.isfinite(sims).sum()))
    top = torch.topk(sims, k)
    ids = [i] + top.indices.tolist()
    values = [1.0] + top.values.tolist()
    return [Neighbour(j, display_token(tokenizer, j), float(s)) for j, s in zip(ids, values)]


def pca_2d(vectors: torch.Tensor) -> np.ndarray:
    """(N, d) -> (N, 2): coordinates on the two directions of largest variance."""
    x = vectors.double() - vectors.double().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)                       # rows of v: directions
    return (x @ v[:2].T).numpy() if v.size(0) >= 2 else np.c_[x @ v[:1].T, np.zeros(len(x))]
