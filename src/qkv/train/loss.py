"""Label-smoothed cross-entropy that ignores padding, summed so batches can be combined exactly.

With smoothing eps the target distribution puts 1 - eps on the true token and spreads eps
uniformly over the whole vocabulary (as torch's `label_smoothing`):

    loss_t = (1 - eps) * -log p(y_t) + eps * mean_v(-log p(v))

Padding positions contribute nothing. The function returns the *sum* over real tokens and their
count; the trainer divides by the number of real tokens in the whole optimizer step (over
gradient-accumulation micro-batches and DDP ranks), so a step's gradient does not depend on how
its tokens were split up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_nll(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0, ignore_index: int = 0
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """logits (B, T, V), target (B, T) -> (smoothed loss sum, plain NLL sum, real tokens).

    Computed in float32 whatever the logits' dtype (log-softmax in bf16 loses too much).
    """
    logp = F.log_softmax(logits.float(), dim=-1).flatten(0, -2)           # (B*T, V)
    target = target.flatten()                                              # (B*T,)
    real = target != ignore_index                                          # (B*T,)
    nll = F.nll_loss(logp, target, ignore_index=ignore_index, reduction="sum")
    smooth = -(logp.mean(dim=-1) * real).sum()                             # uniform-target term
    loss = (1.0 - smoothing) * nll + smoothing * smooth
    return loss, nll.detach(), int(real.sum())
