"""Tiny untrained run directories for the server tests (seconds to build, no training)."""

from __future__ import annotations

from pathlib import Path

import torch

from qkv.model import build_model
from qkv.tokenizers import CharTokenizer
from qkv.run import save_run
from tests.tiny import tiny_config

ALPHABET = "abcdefghijklmnopqrstuvwxyz "


def tiny_run(path: Path, arch: str = "encoder-decoder", max_len: int = 64, **model) -> Path:
    """A 2-layer, 2-head, 32-wide model over lowercase letters, saved as a run directory.
    A small `max_len` bounds every decoding (tests that send many random requests use one);
    `model` sets other ModelConfig fields (positional="rope", norm="rmsnorm", ...)."""
    torch.manual_seed(0)
    tok = CharTokenizer.from_alphabet(ALPHABET)
    v = tok.vocab_size
    cfg = tiny_config(v, arch, n_heads=2, max_len=max_len, **model)
    src = tok if arch == "encoder-decoder" else None
    return save_run(path, build_model(cfg), {"data": {"task": "test"}}, src, tok)
