"""oneDNN matrix products for decoding on x86 CPUs that are not Intel's.

    from qkv.fast.onednn import onednn_model
    fast = onednn_model(run.model)             # shares the run's weights; only the linears change
    translate_ids(fast, src, dcfg)             # the same search code, the same call

PyTorch's CPU `nn.Linear` multiplies through Intel MKL, whose fast (AVX-512) code paths are chosen
on Intel CPUs only. oneDNN, also inside PyTorch, picks its kernels by the CPU's features. On an AMD
EPYC with AVX-512 (2 cores, one thread) oneDNN's fp32 linear (`torch.ops.mkldnn._linear_pointwise`,
the op PyTorch's own compiler emits) ran the decoder's products 1.6-2.9x faster than MKL at 32 and
128 rows, and slower below about 8 rows (a step at batch 1), so each linear picks by its number of
rows. Same fp32 arithmetic in another summation order: logits agree to ~1e-5 and a trained model
gives the same tokens (tests/fast/test_fast_onednn.py). The output layer of a cached decoding step is
`qkv.model`'s own product and is left alone.

Measured gain: `python benchmarks/decode_speed_ct2.py` (system "qkv-onednn").
"""

from __future__ import annotations

import copy
import platform

import torch
import torch.nn.functional as F
from torch import nn

from qkv.machine import cpu_vendor

MIN_ROWS = 8        # below this many rows MKL's matrix-vector products win (measured, see above)


def onednn_pays(vendor: str | None = None, arch: str | None = None) -> bool:
    """Whether oneDNN's products beat MKL's here: x86-64 CPUs that are not Intel's (measured on AMD)."""
    arch = (platform.machine() if arch is None else arch).lower()
    vendor = cpu_vendor() if vendor is None else vendor
    return arch in ("x86_64", "amd64") and vendor not in ("", "GenuineIntel") and _has_op()


def _has_op() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class OneDnnLinear(nn.Module):
    """An `nn.Linear`'s weights, multiplied by oneDNN from `MIN_ROWS` rows on (inference only)."""

    def __init__(self, linear: nn.Linear, min_rows: int = MIN_ROWS):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias        # shared, not copied
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.min_rows = min_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dtype != torch.float32 or x.numel() < self.min_rows * self.in_features:
            return F.linear(x, self.weight, self.bias)
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return out


def onednn_model(model: nn.Module, min_rows: int = MIN_ROWS) -> nn.Module:
    """A copy of `model` whose linears multiply through oneDNN; it shares every weight with `model`."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    fast = copy.deepcopy(model, shared).eval()
    for module in list(fast.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, OneDnnLinear(child, min_rows))
    return fast
