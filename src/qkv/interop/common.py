"""What the Hugging Face exporters (`hf`, `hf_tokenizer`, `llama`) share: the `transformers`
module (or one line saying how to install it) and the interleaved-to-halves permutation (Marian's
and Pegasus's sinusoid tables, Llama's rotary pairs)."""

from __future__ import annotations

from typing import Any

import torch

from qkv.errors import QkvError


def require_transformers() -> Any:
    """The `transformers` module, or a one-line error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise QkvError("exporting to Hugging Face needs `transformers`: pip install -e '.[interop]'") from None
    return transformers


def halves_permutation(d_model: int) -> torch.Tensor:
    """P with table_halves[:, k] = table_interleaved[:, P[k]]: the even dimensions, then the odd."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])
