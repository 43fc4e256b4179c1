"""Built-in synthetic seq2seq tasks: small, exact, and generated on the spot (no download).

Each task turns a random input into a character string `src` and its answer `tgt`:

    copy      "hello"        -> "hello"
    reverse   "hello"        -> "olleh"
    sort      "hello"        -> "ehllo"
    addition  "123+45"       -> "168"
    dates     "March 5, 2019" / "5 Mar 19" / "05.03.2019" / ... -> "2019-03-05"

`make_task(name, n, seed, split=..., min_len=..., max_len=...)` returns `n` distinct (src, tgt)
pairs. It is deterministic given its arguments. The split of an example is a function of its
`src` alone (a hash), so train, valid and test never share an input, whatever seeds or length
ranges were used to make them. Lengths (for addition: digits per number) can be set per call,
so a model trained on lengths 1-10 can be tested on lengths 11-20.

Every task also has a fixed `alphabet`, so `CharTokenizer.from_alphabet(task.alphabet)` builds
its vocabulary without looking at any data.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qkv.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
SPLIT_PERCENT = {"train": 80, "valid": 10, "test": 10}  # share of all possible inputs per split

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"


@dataclass(frozen=True)
class Task:
    """A synthetic task: `sample(rng, length)` draws one (src, tgt) pair.

    length_unit says what min_len/max_len count ("characters", "digits per number"), or is
    None when the task has no length to set (dates).
    """

    name: str
    description: str
    alphabet: str
    sample: Callable[[random.Random, int], tuple[str, str]]
    min_len: int = 1
    max_len: int = 1
    length_unit: str | None = "characters"


# --- the tasks -------------------------------------------------------------------------------


def _letters(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(LETTERS, k=length))


def _copy(rng: random.Random, length: int) -> tuple[str, str]:
    s = _letters(rng, length)
    return s, s


def _reverse(rng: random.Random, length: int) -> tuple[str, str]:
    s = _letters(rng, length)
    return s, s[::-1]


def _sort(rng: random.Random, length: int) -> tuple[str, str]:
    s = _letters(rng, length)
    return s, "".join(sorted(s))


def _number(rng: random.Random, digits: int) -> int:
    """A number with exactly `digits` digits (0-9 when digits is 1)."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def _addition(rng: random.Random, digits: int) -> tuple[str, str]:
    a = _number(rng, digits)
    b = _number(rng, rng.randint(1, digits))
    if rng.random() < 0.5:
        a, b = b, a
    return f"{a}+{b}", str(a + b)


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Human ways of writing a date d. Two-digit years follow the POSIX rule (69-99 -> 19xx,
# 00-68 -> 20xx), so dates are drawn from 1969-2068 and every string has one reading.
DATE_FORMATS: tuple[Callable[[datetime.date], str], ...] = (
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",                   # March 5, 2019
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year % 100:02d}",      # 5 Mar 19
    lambda d: f"{d.year}/{d.month}/{d.day}",                                # 2019/3/5
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",                        # 05.03.2019
    lambda d: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",  # Tuesday, March 5, 2019
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",                    # 5 March 2019
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",               # Mar 5, 2019
    lambda d: f"{d.month}/{d.day}/{d.year}",                                # 3/5/2019 (US order)
    lambda d: f"{d.day}-{MONTHS[d.month - 1][:3]}-{d.year}",                # 5-Mar-2019
    lambda d: f"{WEEKDAYS[d.weekday()][:3]} {d.day} {MONTHS[d.month - 1][:3]} {d.year}",  # Tue 5 Mar 2019
    lambda d: f"{d.year}{d.month:02d}{d.day:02d}",                          # 20190305
)
FIRST_DATE, LAST_DATE = datetime.date(1969, 1, 1), datetime.date(2068, 12, 31)


def _dates(rng: random.Random, length: int) -> tuple[str, str]:
    day = FIRST_DATE + datetime.timedelta(days=rng.randint(0, (LAST_DATE - FIRST_DATE).days))
    return rng.choice(DATE_FORMATS)(day), day.isoformat()


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("copy", "repeat the letters", LETTERS, _copy, min_len=1, max_len=10),
        Task("reverse", "write the letters backwards", LETTERS, _reverse, min_len=1, max_len=10),
        Task("sort", "sort the letters alphabetically", LETTERS, _sort, min_len=1, max_len=10),
        Task("addition", "add two whole numbers", DIGITS + "+", _addition, min_len=1, max_len=3,
             length_unit="digits per number"),
        Task("dates", "rewrite a date as YYYY-MM-DD",
             "".join(sorted(set("".join(MONTHS + WEEKDAYS) + DIGITS + " ,./-"))), _dates,
             length_unit=None),
    )
}


# --- making data sets ------------------------------------------------------------------------


def get_task(name: str) -> Task:
    """The task called `name`, or a ConfigError listing the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def split_of(src: str) -> str:
    """Which split an input belongs to: fixed by a hash of the text, the same on every machine."""
    bucket = int.from_bytes(hashlib.blake2b(src.encode("utf-8"), digest_size=8).digest(), "big") % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    return "valid" if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["valid"] else "test"


def make_task(
    name: str,
    n: int,
    seed: int = 0,
    split: str = "train",
    min_len: int | None = None,
    max_len: int | None = None,
) -> list[tuple[str, str]]:
    """`n` distinct (src, tgt) pairs of task `name` belonging to `split`.

    Lengths are drawn uniformly from [min_len, max_len] (the task's defaults when None).
    Raises DataError when the split holds fewer than `n` distinct inputs of those lengths.
    """
    task = get_task(name)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    min_len, max_len = _length_range(task, min_len, max_len)
    if n < 0:
        raise ConfigError(f"the number of examples must be >= 0, got {n}")
    rng = random.Random(f"{name}/{split}/{seed}")  # str seeds are stable across runs and machines
    pairs: dict[str, str] = {}
    budget = 100 * n + 10_000  # draws before concluding the space of inputs is too small
    for _ in range(budget):
        if len(pairs) == n:
            break
        src, tgt = task.sample(rng, rng.randint(min_len, max_len))
        if src not in pairs and split_of(src) == split:
            pairs[src] = tgt
    if len(pairs) < n:
        raise DataError(
            f"task {name!r} found only {len(pairs)} distinct {split} inputs of length "
            f"{min_len}-{max_len} (asked for {n}); widen the length range or ask for fewer"
        )
    return list(pairs.items())


def _length_range(task: Task, min_len: int | None, max_len: int | None) -> tuple[int, int]:
    if task.length_unit is None:
        if min_len is not None or max_len is not None:
            raise ConfigError(f"task {task.name!r} has no length to set; leave min_len/max_len unset")
        return task.min_len, task.max_len
    low = task.min_len if min_len is None else min_len
    high = task.max_len if max_len is None else max_len
    if not 1 <= low <= high:
        raise ConfigError(
            f"task {task.name!r} needs 1 <= min_len <= max_len ({task.length_unit}), got {low} and {high}"
        )
    return low, high


# ---------------------------------------------------------------------------------------------
# Built-in task defaults, tuned to reach >= 99% exact match in a few CPU minutes
# ---------------------------------------------------------------------------------------------

# Pre-LN without dropout learns these exact, noise-free mappings fastest; small batches mean
# many cheap updates, which is what a 2-core CPU does best. A task has one character vocabulary
# for both sides, so source and target share one embedding: what a pre-LN model needs to export
# to Hugging Face (as Pegasus; qkv.run.targets).
_SMALL_MODEL = dict(d_model=128, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=512,
                    dropout=0.0, norm_first=True, share_embeddings=True, max_len=128)
_SMALL_TRAIN = dict(batch_tokens=1200, schedule="cosine", lr=3e-3, warmup_steps=100, eval_every=200,
                    checkpoint_every=200, metric="exact_match", target_metric=0.995)
_TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "reverse": {"model": _SMALL_MODEL, "train": dict(_SMALL_TRAIN, steps=1000)},
    "dates": {"model": _SMALL_MODEL, "train": dict(_SMALL_TRAIN, steps=1000)},
}
_GENERIC_TASK = _TASK_DEFAULTS["reverse"]


def task_config(task: str = "reverse") -> dict[str, Any]:
    """The tuned default config (a dict of sections) for built-in task `task`."""
    if task not in TASKS:
        close = difflib.get_close_matches(task, list(TASKS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; choose one of {', '.join(TASKS)}"
        raise ConfigError(f"unknown task {task!r}{hint}")
    base = copy.deepcopy(_TASK_DEFAULTS.get(task, _GENERIC_TASK))
    base["data"] = {"kind": "task", "task": task}
    return base
