"""bf16 weights for decoding, on CPUs that compute bf16 natively (AVX-512 BF16 or AMX).

    from qkv.fast.bf16 import bf16_model
    fast = bf16_model(run.model)                  # a bf16 copy; the run's float32 model is untouched
    translate_ids(fast, src, dcfg)                # the same search code, the same call

The copy holds every weight and buffer in bf16, so the matrix products (most of a decoding step
at batch 32) run in oneDNN's native bf16 kernels; LayerNorm and softmax keep fp32 arithmetic
inside PyTorch's bf16 kernels, and the search takes `log_softmax` of the logits in fp32. Without
native bf16 PyTorch emulates it, far slower than fp32, so the copy is refused there.

Not equal to the float32 paper path bit for bit: bf16 keeps 8 bits of mantissa. Its quality is
tested like int8 (tests/fast/test_fast_bf16.py: outputs and BLEU of a trained model against float32).
Measured gain: `python benchmarks/decode_speed_ct2.py` (system "qkv-bf16"); it pays at batch 32
and not at batch 1, where per-step overheads, not products, dominate (docs/decoding.md).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from qkv.errors import ConfigError
from qkv.machine import cpu_has_fast_bf16


def bf16_model(model: nn.Module) -> nn.Module:
    """An inference copy of `model` in bf16 (eval mode); a ConfigError on CPUs without native bf16."""
    if not cpu_has_fast_bf16():
        raise ConfigError("this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 decoding would be emulated, "
                          "slower than float32; decode in float32")
    return copy.deepcopy(model).to(torch.bfloat16).eval()
