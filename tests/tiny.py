"""The tiny Transformer the tests build: 32 wide, 4 heads, 2 + 2 layers, no dropout (milliseconds to
build, seconds to train). A test passes only what it needs changed."""

from __future__ import annotations

from qkv import ModelConfig

TINY_MODEL = dict(d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0, max_len=64)


def tiny_config(vocab: int, arch: str = "encoder-decoder", **changes) -> ModelConfig:
    """A tiny model over `vocab` tokens (a decoder-only one has no source vocabulary)."""
    sizes = dict(src_vocab_size=vocab if arch == "encoder-decoder" else 0, tgt_vocab_size=vocab)
    return ModelConfig(**{**TINY_MODEL, **sizes, "arch": arch, **changes})
