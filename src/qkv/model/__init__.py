"""The Transformer, module by module: attention, layers, the two model shapes, masks."""

from qkv.model.attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from qkv.model.masks import causal_mask, padding_mask
from qkv.model.transformer import DecoderCache, DecoderOnly, EncoderDecoder, build_model

__all__ = [
    "scaled_dot_product_attention",
    "MultiHeadAttention",
    "KVCache",
    "DecoderCache",
    "EncoderDecoder",
    "DecoderOnly",
    "build_model",
    "causal_mask",
    "padding_mask",
]
