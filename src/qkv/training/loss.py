"""Label-smoothed cross-entropy that ignores padding, summed so batches can be combined exactly.

With smoothing eps the target distribution puts 1 - eps on the true token and spreads eps
uniformly over the whole vocabulary (as torch's `label_smoothing`):

    loss_t = (1 - eps) * -log p(y_t) + eps * mean_v(-log p(v))

Padding positions contribute nothing. The function returns the *sum* over real tokens and their
count; the trainer divides by the number of real tokens in the whole optimizer step (over
gradient-accumulation micro-batches and DDP ranks), so a step's gradient does not depend on how
its tokens were split up.

The loss is one autograd function rather than log_softmax -> nll_loss -> mean: with
-log p(v) = logsumexp(z) - z_v, the forward needs only logsumexp, z_y and mean_v(z) per row, and
the gradient is the closed form

    d loss_t / d z = softmax(z) - (1 - eps) * onehot(y_t) - eps / V

so no (N, V) log-probability tensor is stored, and the backward is one pass over the logits
instead of the chain log_softmax, mean and nll backwards (at vocabulary 8000 that chain was about
a tenth of a CPU training step).
"""

from __future__ import annotations

import torch

from qkv.errors import ShapeError


class _SmoothedCrossEntropy(torch.autograd.Function):
    """(logits (N, V), target (N,)) -> (smoothed loss sum, plain NLL sum); the NLL carries no gradient."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, smoothing: float, ignore_index: int):
        real = target != ignore_index                                          # (N,)
        safe = target.masked_fill(~real, 0)
        lse = torch.logsumexp(logits, dim=-1)                                  # (N,) log sum_v exp z_v
        nll = (lse - logits.gather(1, safe[:, None]).squeeze(1)) * real        # -log p(y_t)
        uniform = (lse - logits.mean(dim=-1)) * real                           # mean_v -log p(v)
        ctx.save_for_backward(logits, lse, safe, real)
        ctx.smoothing = smoothing
        nll_sum = nll.sum()
        ctx.mark_non_differentiable(nll_sum)
        return (1.0 - smoothing) * nll_sum + smoothing * uniform.sum(), nll_sum

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_nll: torch.Tensor):
        logits, lse, safe, real = ctx.saved_tensors
        eps, vocab = ctx.smoothing, logits.size(-1)
        grad = torch.exp(logits - lse[:, None])                                # softmax(z)
        if eps:
            grad.sub_(eps / vocab)
        rows = torch.arange(grad.size(0), device=grad.device)
        grad[rows, safe] -= 1.0 - eps
        grad.mul_((grad_loss * real)[:, None])                                 # padding rows: zero
        return grad, None, None, None


def label_smoothed_nll(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0, ignore_index: int = 0
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """logits (..., V), target (...) -> (smoothed loss sum, plain NLL sum, real tokens).

    Any leading shape: (B, T, V) logits with (B, T) targets, or (N, V) with (N,) when the model
    returned only the real positions. Computed in float32 at least, whatever the logits' dtype
    (log-softmax in bf16 loses too much).
    """
    if logits.shape[:-1] != target.shape:
        raise ShapeError(f"logits {tuple(logits.shape)} do not match targets {tuple(target.shape)}")
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    target = target.reshape(-1)
    loss, nll = _SmoothedCrossEntropy.apply(logits.reshape(-1, logits.size(-1)), target, smoothing, ignore_index)
    return loss, nll.detach(), int((target != ignore_index).sum())
