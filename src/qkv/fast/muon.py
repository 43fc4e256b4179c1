"""Muon with the Newton-Schulz iterations of all same-shaped matrices done at once.

The paper path's optimizer is `torch.optim.Muon`: for each hidden matrix in turn, momentum, then
five Newton-Schulz iterations of three small bf16 matrix products each. qkv's models are small
(the Tiny Shakespeare recipe: 28 matrices of 96x96 and 96x256), so a Muon step is ~420 tiny
products, each mostly call overhead: it made a training step 1.2x (one process) to 1.45x (two
DDP processes, where the forward and backward halve but Muon does not) an AdamW step.

`FastMuon` is `torch.optim.Muon` (same constructor, parameter groups, state dict and update) whose
step stacks the matrices of one shape (a tall matrix transposed, as torch does) and runs the
iterations on the stack with batched products: 15 calls per shape instead of 15 per matrix. The
arithmetic is torch's, term by term; the batched bf16 products may round differently in the last
bit, which the proof bounds.

Measured: see `python benchmarks/fast_layer.py --only muon` (the optimizer step alone, on the
recipe's model) and docs/language_model.md (the recipe's steps in its 5 minutes).
Proof: tests/fast/test_fast_muon.py (a FastMuon step = torch's Muon step, within bf16 rounding;
same momentum; same state dict keys, so a checkpoint loads in either).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim._muon import _adjust_lr   # torch's learning-rate rule, used as it is (torch is pinned)


class FastMuon(torch.optim.Muon):
    """torch.optim.Muon with a batched Newton-Schulz over the matrices of each shape."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            updates = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                updates.append(p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf)
            by_shape: dict[tuple[Any, ...], list[int]] = {}
            for i, u in enumerate(updates):
                by_shape.setdefault((min(u.shape), max(u.shape), u.device), []).append(i)
            for indices in by_shape.values():
                wide = orthogonalise(torch.stack([_wide(updates[i]) for i in indices]), group)
                for row, i in enumerate(indices):
                    p = params[i]
                    update = wide[row].T if p.size(0) > p.size(1) else wide[row]
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update, alpha=-_adjust_lr(group["lr"], group["adjust_lr_fn"], p.shape))
        return loss


def _wide(m: torch.Tensor) -> torch.Tensor:
    """A matrix with no more rows than columns (a tall one transposed), in bf16: torch's orientation."""
    m = m.bfloat16()
    return m.T if m.size(0) > m.size(1) else m


def orthogonalise(x: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    """torch's quintic Newton-Schulz iteration on a stack (n, rows <= cols) of bf16 matrices at once."""
    a, b, c = group["ns_coefficients"]
    x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=group["eps"])   # spectral norm at most 1
    for _ in range(group["ns_steps"]):
        gram = x @ x.mT
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, gram_update, x, beta=a)
    return x
