"""Dropout masks from NumPy's PCG64 generator, for training on the CPU.

The paper path uses `torch.nn.Dropout`. On the CPU, torch's `bernoulli_` draws from a Mersenne
Twister one element at a time: on 2 CPU cores that made dropout about 15% of a translation
training step (small config, ~4k tokens per batch). `FastDropout` draws the same kind of mask
(each element dropped with probability p, to within 1/65536; the others scaled by 1/(1-p)) from
PCG64, 64 random bits giving four 16-bit draws: dropout becomes ~5% of the step. Re-measured on
length-bucketed batches like qkv's trainer makes (~3% padding, ~3,600 tokens, small config, one
thread, CPU time, 2 AVX-512 EPYC cores, quiet, 2026-12-01): a training step 1.08x faster.

Each call seeds PCG64 from torch's generator, so `torch.manual_seed` and the RNG state saved in
a checkpoint still make every mask reproducible (exact resume). Elsewhere (CUDA, torch.compile)
it is `F.dropout`. The trainer applies it with `use_fast_dropout(model)`, which swaps every
`nn.Dropout` of the model in place (no parameters change, checkpoints are the same).

Proof: tests/model/test_model.py::test_fast_dropout_is_dropout (rate, scaling, gradient, eval identity,
seeded reproducibility). A/B: `python benchmarks/fast_layer.py --only dropout`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FastDropout(nn.Dropout):
    """nn.Dropout with masks drawn by PCG64 on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return F.dropout(x, self.p, training=True)
        return x.masked_fill(drop_mask(x.shape, self.p), 0.0).mul_(1.0 / (1.0 - self.p))


def drop_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A boolean tensor of `shape`, True with probability p (to within 1/65536), drawn on the CPU."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (1,)))                          # torch's generator decides
    bits = np.random.PCG64(seed).random_raw((n + 3) // 4)                  # (n/4,) uint64
    draws = torch.from_numpy(bits.view(np.int16)[:n]).view(shape)         # uniform on [-32768, 32767]
    return draws < -32768 + round(p * 65536)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every nn.Dropout in `model` by a FastDropout of the same p; returns how many."""
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p)
                fast.train(child.training)
                setattr(parent, name, fast)
                swapped += 1
    return swapped
