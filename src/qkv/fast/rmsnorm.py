"""RMSNorm as one autograd node with its backward written out, for training.

The paper path's `qkv.model.layers.RMSNorm` is the formula in PyTorch operations: cast to fp32,
square, mean, add eps, square root, divide, cast back, multiply by the gain. Autograd records
each of them and its backward replays about a dozen more, each a pass over the whole tensor. With
QK-norm (`model.qk_norm`) that runs on every head's queries and keys in every layer: it made a
training step of the Tiny Shakespeare recipe 1.11x slower (docs/language_model.md).

`FastRMSNorm` computes the same forward, operation for operation (the output is bit-identical),
and saves only the input and the RMS for a backward written out from the derivative

    y = x / r * g,  r = sqrt(mean(x^2) + eps)
    dL/dx = (dy - x_hat * mean(dy * x_hat)) / r,  with dy = dL/dy * g and x_hat = x / r
    dL/dg = sum over rows of dL/dy * x_hat

(the same terms autograd derives, summed in another order: equal within fp32 rounding). When a
recording is on (the explanations read the paper path's tensors) it is the paper path.

Measured: `python benchmarks/fast_layer.py --only rmsnorm` (a training step of the long Tiny
Shakespeare recipe's model with QK-norm, and of its Llama-style twin with RMSNorm everywhere).
Proof: tests/fast/test_fast_rmsnorm.py (forward bit-equal, gradients equal within rounding in fp32
and under bf16 autocast, recording falls back, the swap keeps the state dict).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from qkv.model.layers import RMSNorm


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.float()
        rms = torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)          # as the paper path
        ctx.save_for_backward(x, weight, rms)
        return (xf / rms).to(x.dtype) * weight

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight, rms = ctx.saved_tensors
        x_hat = x.float() / rms
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            dy = (grad * weight).to(x.dtype).float()          # the gradient reaching x_hat, rounded as x_hat was
            grad_x = ((dy - x_hat * (dy * x_hat).mean(dim=-1, keepdim=True)) / rms).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * x_hat.to(x.dtype)).sum(dim=tuple(range(grad.dim() - 1))).to(weight.dtype)
        return grad_x, grad_weight, None


class FastRMSNorm(RMSNorm):
    """qkv's RMSNorm (same parameter, same forward) with the backward written out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record is not None:                 # an explanation reads the paper path's own tensors
            return super().forward(x)
        return cast(torch.Tensor, _RMSNormFunction.apply(x, self.weight, self.eps))   # type: ignore[no-untyped-call]


def use_fast_rmsnorm(model: nn.Module) -> int:
    """Make every RMSNorm of `model` a FastRMSNorm (the same weight object: parameters, optimizer
    groups and checkpoints are unchanged); returns how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is RMSNorm:
            module.__class__ = FastRMSNorm
            swapped += 1
    return swapped
