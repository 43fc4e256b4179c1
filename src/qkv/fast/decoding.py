"""Fast decoding steps: the paper path's cached step, with three savings that change no number.

`qkv.search` feeds one new token per row and step. Through the paper path a step is
`model.decode(ids, memory, src_mask, cache)[:, -1]` (or `model(ids, cache)[:, -1]` for a
language model). `CachedSteps` runs the model's own modules in the same order (embedding,
decoder stack, output layer) and saves three things:

1. **No mask where nothing is hidden.** One new query over past keys that are all real needs no
   causal or padding mask, and sources of a batch without padding need no cross-attention mask:
   PyTorch's fused attention kernel runs 1.3-1.5x faster without a mask (one-query steps, B 1-128,
   25-50 keys, 2 AVX2 cores). Decided once per step (self-attention) and once per batch (sources:
   rows leaving the batch cannot add padding).
2. **Only the last position is projected.** The first step of a language model feeds the whole
   prompt; only its last position's logits choose the next token.
3. **A (d_model, V) copy of the output weight**, made once per decoding call (8 MB at d_model 256,
   V 8000): at batch 1 a step's output layer is a vector-matrix product, about 1.15x faster in this
   layout than through the (V, d_model) weight (batch 1 greedy 1.22 s -> 1.06 s per 30-token batch,
   beam 4 2.43 -> 2.15 s; batch 32 1.02x).

Measured with `python benchmarks/fast_layer.py --only decoding` (30 steps, small config, one
thread, CPU time; 2 AVX-512 EPYC cores, quiet, 2026-12-01): the paper path takes 1.17x the fast
steps' time at batch 1 and 1.035x at batch 32 (1.033x with padded sources).

Proof of equality: tests/search/test_decode.py::test_fast_steps_equal_the_paper_path (logits equal the
paper path's within float rounding, with and without padding, both model shapes, and a language
model with every option since 2017: RoPE takes its positions from the cache length inside
attention, grouped-query attention caches its H_kv heads, QK-norm runs inside the model's own
attention, and the logit soft-cap is the model's own module applied after saving 3, so nothing
else here changes) and every cached == uncached decoding test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from qkv.model.masks import causal_padding_mask

if TYPE_CHECKING:
    from qkv.model import DecoderOnly, EncoderDecoder


class CachedSteps:
    """Decoding steps of `model` over one batch, keeping the keys/values in `model.new_cache()`."""

    @staticmethod
    def supports(model: object) -> bool:
        """The Transformers of qkv.model (the history lab's recurrent models step on their own)."""
        from qkv.model import DecoderOnly, EncoderDecoder

        return isinstance(model, (EncoderDecoder, DecoderOnly))

    def __init__(self, model: EncoderDecoder | DecoderOnly) -> None:
        self.model: Any = model     # its parts are taken by src_mask: a language model has none
        self.cache = model.new_cache()
        self.output_weight_t: torch.Tensor | None = None    # (d_model, V), made at the first step
        self.source_unpadded: bool | None = None             # decided at the first step

    def __call__(self, ids: torch.Tensor, memory: torch.Tensor | None = None,
                 src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """New token ids (B, T) -> logits of the last position (B, V)."""
        model, cache = self.model, self.cache
        start = cache.length
        keys = cache.extend_keys(ids != model.cfg.pad_id)                    # (B, T_past + T)
        if ids.size(1) == 1 and bool(keys.all()):
            self_mask = None                                                  # saving 1
        else:
            self_mask = causal_padding_mask(keys, ids.size(1))
        if src_mask is None:                                                  # a language model
            h: torch.Tensor = model.decoder(model.embed(ids, start), self_mask, cache=cache, ids=ids)
        else:
            if self.source_unpadded is None:
                self.source_unpadded = bool(src_mask.all())
            memory_mask = None if self.source_unpadded else src_mask           # saving 1
            h = model.decoder(model.tgt_embed(ids, start), self_mask, memory, memory_mask, cache)
        if self.output_weight_t is None:
            self.output_weight_t = model.lm_head.weight.detach().t().contiguous()
        logits: torch.Tensor = h[:, -1] @ self.output_weight_t                # savings 2 and 3
        if model.softcap is not None:                                         # the model's own soft-cap
            logits = model.softcap(logits)
        return logits

    def reorder(self, index: torch.Tensor, same_sources: bool = False) -> None:
        self.cache.reorder(index, same_sources)
