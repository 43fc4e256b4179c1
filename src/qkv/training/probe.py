"""The speed probe: fit `train.steps` to `train.max_minutes` on the machine at hand.

A run with a fixed step count and a time cap wastes the budget on a fast machine (it finishes
early) and spoils the schedule on a slow or busy one (the cap stops it before the cosine has
come down). With the probe, the trainer first times this run's own training steps (the same
model, config, batches and processes), after a few warm-up steps that are not counted, then one
validation on a sample of its batches and one checkpoint, and sets `train.steps` so that the
whole run, periodic validations and checkpoints included, ends near `fill` (the recipes: 95%) of
`train.max_minutes`. The learning-rate schedule is built for that step count; the cap stays as a
safety net. The probe's updates are undone (weights, data position, random state; the optimizer
is built again), so the run is the one a fixed `train.steps` of the chosen count would give.

    train(config, out, fill_budget=0.95)       # what recipes/shakespeare.py and multi30k.py do
    steps_for_budget(300, Costs(step_s=0.1, valid_s=5, checkpoint_s=0.2), eval_every=1000,
                     checkpoint_every=1000)   # the arithmetic alone

The record (metrics.jsonl, kind "probe") says what was measured and chosen: the probe's own
seconds, steps/s, the costs, the budget, the chosen steps and the CPU.

A few seconds of steps can misjudge the pace of a whole run: a translation's batches change shape
from step to step (length buckets), and the first steps of each shape are slower (kernel selection
for it), so on Multi30k the probe's ~10 steps ran 27% slower than the run's average and the run
ended at 75% of its budget. So the trainer checks once more: after REFIT_SHARE of the chosen steps
it takes the pace of the steps it has done (its validations and checkpoints counted at the probe's
costs), and if that is more than REFIT_TOLERANCE off the probe's, fits the steps again for the time
left (`steps_after`): the schedule is rebuilt for the new last step (a cosine changes its rate at
that point by a fraction of a percent: it has hardly begun to fall), config.toml records it and
metrics.jsonl gets a record of kind "refit". Within the tolerance the run stays the fixed run of
the probe's count.

Where `train.precision` is "auto" on a CPU that has bf16 (AVX-512 BF16, AMX), bf16 autocast is not
always the faster: oneDNN's bf16 kernels pay off on large matrices, while a small model's steps can be
dominated by the casts around them (the 5-minute Tiny Shakespeare model on 2 cores of an Intel Xeon
with AMX: 18 steps/s in bf16, 26 in fp32; its long recipe, 3.2M parameters: bf16 1.3x faster). So the
probe first times both on the same batches (PRECISION_WARMUP untimed steps each, then about
PRECISION_SECONDS of steps) and the run trains in the faster (`faster`); config.toml records the
choice (train.precision "bf16" or "fp32", so a resumed run keeps it) and the probe's record both
speeds. Without the probe, "auto" is bf16 wherever the CPU has it.

More steps are not always better: a language model on a small text overfits once it has read it
too many times (Tiny Shakespeare's long recipe, 3.2M parameters on 1M characters: 1.450 after ten
passes, at best 1.461 in a fast machine's hour of thirty-two). `train.max_passes` caps what the
probe plans (and refits) at that many passes over the training text (`steps_for_passes`); a
machine fast enough to do more ends before its budget, and the probe's record says so
(`passes_cap`, `capped`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from qkv.errors import ConfigError

T = TypeVar("T")

FILL = 0.95                 # the recipes end training near 95% of train.max_minutes
WARMUP_STEPS = 3            # untimed: first-call allocations, kernel selection, DDP's bucket setup
TIMED_SECONDS = 10.0        # the timed steps take about this long at most ...
TIMED_SHARE = 0.04          # ... and at most this share of the budget (a 5-minute budget: 10 s)
MIN_TIMED_STEPS = 3
REFIT_SHARE = 0.1           # after this share of the chosen steps the run's own pace is checked ...
REFIT_TOLERANCE = 0.05      # ... and the steps fitted again when it is more than 5% off the probe's
VALID_SAMPLE = 0.1          # the probe's validation reads about this share of the batches
PRECISION_WARMUP = 2        # precision "auto" on a bf16 CPU: untimed steps in each precision (its kernels chosen) ...
PRECISION_SECONDS = 2.0     # ... then each timed about this long (at most 1% of the budget), on the same batches


@dataclass(frozen=True)
class Costs:
    """Seconds of one training step, one validation and one checkpoint on this machine."""

    step_s: float
    valid_s: float = 0.0
    checkpoint_s: float = 0.0


def validations(steps: int, eval_every: int) -> int:
    """How many validations a run of `steps` does: every `eval_every` steps, and at the last step."""
    if eval_every <= 0:
        return 1
    return steps // eval_every + (1 if steps % eval_every else 0)


def checkpoints(steps: int, checkpoint_every: int) -> int:
    """How many checkpoints a run of `steps` writes: every `checkpoint_every` steps, and at the end."""
    return (steps // checkpoint_every if checkpoint_every > 0 else 0) + 1


def planned_seconds(steps: int, costs: Costs, eval_every: int, checkpoint_every: int) -> float:
    """The training time of a run of `steps`: its steps, validations and checkpoints."""
    return (steps * costs.step_s + validations(steps, eval_every) * costs.valid_s
            + checkpoints(steps, checkpoint_every) * costs.checkpoint_s)


def steps_for_budget(budget_s: float, costs: Costs, eval_every: int, checkpoint_every: int,
                     fill: float = FILL) -> int:
    """The most steps whose planned time fits in `fill` of `budget_s` (at least 1)."""
    if not costs.step_s > 0:
        raise ValueError(f"a step must take some time, got {costs.step_s} s")
    target = fill * budget_s
    return _most(1, max(1, int(target / costs.step_s)) + 1,      # the upper end: its steps alone overrun
                 lambda n: planned_seconds(n, costs, eval_every, checkpoint_every) <= target)


def steps_for_passes(passes: float, tokens_per_pass: int, tokens_per_step: int) -> int:
    """The steps that read `passes` times the training text (rounded up; at least 1)."""
    if not (tokens_per_pass > 0 and tokens_per_step > 0):
        raise ValueError(f"a pass and a step must hold tokens, got {tokens_per_pass} and {tokens_per_step}")
    return max(1, math.ceil(passes * tokens_per_pass / tokens_per_step))


def _most(low: int, high: int, fits: Callable[[int], bool]) -> int:
    """The largest n in [low, high) with fits(n), for a `fits` true up to some n and false after it
    (false at `high`); `low` when not even it fits."""
    if not fits(low):
        return low
    while high - low > 1:                                      # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def refit_step(steps: int) -> int:
    """The step after which a probed run checks its pace (0: a run too short to check)."""
    at = round(steps * REFIT_SHARE)
    return at if 0 < at < steps else 0


def pace(elapsed_s: float, done: int, costs: Costs, eval_every: int, checkpoint_every: int) -> float:
    """Seconds per step of the `done` steps that took `elapsed_s`, their validations and checkpoints
    taken out at the probe's costs (all of it per step if that leaves nothing)."""
    overhead = (done // eval_every if eval_every > 0 else 0) * costs.valid_s \
        + (done // checkpoint_every if checkpoint_every > 0 else 0) * costs.checkpoint_s
    return (elapsed_s - overhead) / done if elapsed_s > overhead else elapsed_s / done


def steps_after(budget_s: float, elapsed_s: float, done: int, costs: Costs, eval_every: int,
                checkpoint_every: int, fill: float = FILL) -> int:
    """The most steps whose run ends within `fill` of `budget_s`, when `done` steps took `elapsed_s`
    and the rest cost `costs` (their validations and checkpoints included); at least done + 1."""
    if not costs.step_s > 0:
        raise ValueError(f"a step must take some time, got {costs.step_s} s")
    def fits(n: int) -> bool:
        rest = planned_seconds(n, costs, eval_every, checkpoint_every) - planned_seconds(done, costs, eval_every,
                                                                                         checkpoint_every)
        return elapsed_s + rest <= fill * budget_s
    return _most(done + 1, done + max(1, int((fill * budget_s - elapsed_s) / costs.step_s)) + 2, fits)


def timed_steps(warm_step_s: float, budget_s: float) -> int:
    """How many steps to time, after warm-up steps of `warm_step_s` each: about
    min(TIMED_SECONDS, TIMED_SHARE of the budget) of them, at least MIN_TIMED_STEPS."""
    return _steps_in(min(TIMED_SECONDS, TIMED_SHARE * budget_s), warm_step_s, most=100_000)


def precision_steps(warm_step_s: float, budget_s: float) -> int:
    """How many steps to time in each precision, after warm-up steps of `warm_step_s` each: about
    min(PRECISION_SECONDS, 1% of the budget) of them, at least MIN_TIMED_STEPS."""
    return _steps_in(min(PRECISION_SECONDS, 0.01 * budget_s), warm_step_s, most=10_000)


def _steps_in(seconds: float, step_s: float, most: int) -> int:
    """About `seconds` of steps of `step_s` each: at least MIN_TIMED_STEPS, at most `most`."""
    return max(MIN_TIMED_STEPS, min(most, int(seconds / max(step_s, 1e-6))))


def faster(step_s: dict[str, float]) -> str:
    """The precision whose step took the least time ("bf16" or "fp32"; fp32, exact, on a tie)."""
    if not step_s or not all(s > 0 for s in step_s.values()):
        raise ValueError(f"every precision's step must take some time, got {step_s}")
    return min(sorted(step_s, key=lambda name: name != "fp32"), key=lambda name: step_s[name])


class Sample:
    """A validation on a few of its batches, timed: the probe's estimate of a whole one.

    `take(batches)` yields about `fraction` of them (at least one), evenly spread (a translation
    validation reads its batches shortest first) and times what the caller does with each;
    `extra` then holds the time the batches left out would have taken (kept time x (all / kept - 1)).
    A validation's whole time is its measured time plus `extra`.
    """

    def __init__(self, fraction: float = VALID_SAMPLE, clock: Callable[[], float] = time.perf_counter) -> None:
        self.fraction, self.clock = fraction, clock
        self.extra = 0.0

    def take(self, batches: Iterable[T]) -> Iterator[T]:
        items = list(batches)
        if not items:
            return
        kept = max(1, round(len(items) * self.fraction))
        spent = 0.0
        for j in range(kept):
            start = self.clock()
            yield items[int((j + 0.5) * len(items) / kept)]
            spent += self.clock() - start
        self.extra += spent * (len(items) / kept - 1)


def checked_fill(fill: float | None, max_minutes: float) -> float | None:
    """`fill`, or a one-line ConfigError when it is out of range or there is no budget to fill."""
    if fill is None:
        return None
    if not 0 < fill <= 1:
        raise ConfigError(f"the share of train.max_minutes to fill must be in (0, 1], got {fill}")
    if max_minutes <= 0:
        raise ConfigError("the speed probe fits train.steps to train.max_minutes, which is 0 (no budget); "
                          "set train.max_minutes, or give the steps (the recipes: --no-probe or --steps N)")
    return fill


def fixed_steps(overrides: Iterable[str]) -> bool:
    """Whether `--set` overrides give train.steps (a fixed run: the recipes then do not probe)."""
    return any(o.split("=", 1)[0].strip() == "train.steps" for o in overrides)


def recipe_fill(overrides: Iterable[str], no_probe: bool = False) -> float | None:
    """The recipes' rule: fill FILL of the budget, unless the probe is turned off (--no-probe,
    --steps N) or the overrides give train.steps (a fixed run, e.g. a quick one)."""
    return None if no_probe or fixed_steps(overrides) else FILL


def summary(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What a recipe's results.json says about the probe, from a run's metrics.jsonl records:
    the probe's record (used: true; with `refit` when the run fitted its steps again), or
    used: false when the run's steps were fixed."""
    found: dict[str, Any] = {}
    for record in records:
        if record.get("kind") == "probe":
            found = {"used": True, **{k: v for k, v in record.items() if k not in ("kind", "step")}}
        elif record.get("kind") == "refit" and found:
            found["refit"] = {k: v for k, v in record.items() if k != "kind"}
    if found:
        return found
    return {"used": False, "why": "train.steps fixed (--no-probe, --steps or --set train.steps)"}
