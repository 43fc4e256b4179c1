"""Learning-rate schedules, as multipliers for `torch.optim.lr_scheduler.LambdaLR`.

The paper's schedule ("noam", section 5.3) grows the rate linearly for `warmup` steps, then
decays it with the inverse square root of the step:

    lr(step) = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)

It peaks at step = warmup with factor * (d_model * warmup)^-0.5; with d_model = 512 and
warmup = 4000 that is 7e-4 (factor 1). Warmup matters for post-LN Transformers: early gradients
are large and Adam's second-moment estimates are still poor.

"cosine" warms up linearly to `lr`, then follows half a cosine down to `min_lr` at the last
step; "linear" warms up, then falls in a straight line to `min_lr` at the last step (with
min_lr = 0: "straight to zero", which Bergsma et al., 2025, find beats cosine when a model sees
many tokens per parameter); "constant" warms up and stays. Steps count from 1 (the first
optimizer update).

"wsd" (warmup-stable-decay; Hu et al., 2024, "MiniCPM"; Hägele et al., 2024, "Scaling Laws and
Compute-Optimal Training Beyond Fixed Training Durations") warms up, holds `lr` flat, and decays
to `min_lr` over the last `decay_fraction` of the steps only. Until the decay starts the rate does
not depend on the run's length, so a run can be continued from its stable phase. The decay is
Hägele et al.'s "1 - sqrt" shape, lr - (lr - min_lr) * sqrt(progress), which they find better
than a linear decay of the same length (and, with 20% of the steps, a match for cosine): it
leaves the stable rate quickly and then spends longer at small rates.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from qkv.errors import ConfigError
from qkv.run.config import SCHEDULES        # the names TrainConfig accepts; made here


def noam(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The learning rate of the paper's schedule at optimizer step `step` (>= 1)."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def warmup_cosine(step: int, lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Linear warmup to `lr` over `warmup` steps, then cosine decay to `min_lr` at `total`."""
    step = max(step, 1)
    if step <= warmup:
        return lr * step / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_linear(step: int, lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Linear warmup to `lr` over `warmup` steps, then a straight line down to `min_lr` at `total`."""
    step = max(step, 1)
    if step <= warmup:
        return lr * step / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return lr - (lr - min_lr) * progress


def warmup_stable_decay(step: int, lr: float, warmup: int, total: int, min_lr: float = 0.0,
                        decay_fraction: float = 0.2) -> float:
    """Linear warmup to `lr`, flat at `lr`, then "1 - sqrt" decay to `min_lr` over the last
    `decay_fraction` of `total` steps (never starting before warmup ends); `min_lr` at `total`."""
    step = max(step, 1)
    if step <= warmup:
        return lr * step / max(warmup, 1)
    decay_start = max(warmup, total - round(decay_fraction * total))
    if step <= decay_start:
        return lr
    progress = min(1.0, (step - decay_start) / max(total - decay_start, 1))
    return lr - (lr - min_lr) * math.sqrt(progress)


def warmup_constant(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, max(step, 1) / max(warmup, 1))


def lr_at(name: str, step: int, *, lr: float, warmup: int, total: int, d_model: int, min_lr: float = 0.0,
          decay_fraction: float = 0.2) -> float:
    """The rate of schedule `name` at `step`. For "noam", `lr` is the paper's scale factor."""
    if name == "noam":
        return noam(step, d_model, warmup, lr)
    if name == "cosine":
        return warmup_cosine(step, lr, warmup, total, min_lr)
    if name == "linear":
        return warmup_linear(step, lr, warmup, total, min_lr)
    if name == "wsd":
        return warmup_stable_decay(step, lr, warmup, total, min_lr, decay_fraction)
    if name == "constant":
        return warmup_constant(step, lr, warmup)
    raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")


def peak_lr(name: str, **kwargs) -> float:
    """The highest rate of schedule `name`: the rate at the end of warmup."""
    return lr_at(name, max(kwargs["warmup"], 1), **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, scale: float = 1.0,
                   **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose rate after k calls to `.step()` is `scale * lr_at(name, k + 1, ...)`.

    The optimizer's base lr is set to `scale` (1.0: the lambda *is* the learning rate); LambdaLR
    multiplies it by the lambda. A second optimizer (Muon) follows the same curve at another height.
    """
    lr_at(name, 1, **kwargs)  # validate the name now, not at the first step
    for group in optimizer.param_groups:
        group["lr"] = scale
        group["initial_lr"] = scale
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_rate, name, kwargs))


def retarget(scheduler: torch.optim.lr_scheduler.LambdaLR, total: int) -> None:
    """Make a `make_scheduler` schedule end at step `total` from now on, the next step's rate included
    (the speed probe's second fit, qkv.training.probe). The steps already taken keep their rates."""
    for i, rate in enumerate(scheduler.lr_lambdas):
        if not isinstance(rate, partial):
            raise TypeError("retarget() takes a schedule that make_scheduler() built")
        name, kwargs = rate.args
        scheduler.lr_lambdas[i] = partial(_rate, name, {**kwargs, "total": total})
    for group, base, rate in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * rate(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def _rate(name: str, kwargs: dict, index: int) -> float:
    return lr_at(name, index + 1, **kwargs)
