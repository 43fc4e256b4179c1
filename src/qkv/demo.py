"""`qkv demo`: train a small Transformer on a built-in task, then show what it learned.

The whole Transformer story in one command: a character tokenizer, an encoder-decoder trained
with teacher forcing and label smoothing, greedy decoding with the key/value cache, and exact
match on held-out examples the model never saw.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qkv.data.tasks import make_task
from qkv.search import DecodeConfig
from qkv.text import evaluate
from qkv.errors import OutputError
from qkv.files import atomic_write_bytes
from qkv.data.tasks import task_config
from qkv.run import load_run
from qkv.training import train

# A budget that learns `reverse` well in well under a minute on 2 CPU cores.
DEMO_OVERRIDES = (
    "model.d_model=64", "model.n_heads=4", "model.d_ff=256", "model.dropout=0.0",
    "model.n_encoder_layers=2", "model.n_decoder_layers=2",
    "train.steps=500", "train.lr=3e-3", "train.warmup_steps=50", "train.batch_tokens=2400",
    "train.eval_every=250", "train.checkpoint_every=250", "train.eval_examples=200",
    "data.train_size=8000", "data.min_len=3", "data.max_len=10",
)


@dataclass
class DemoResult:
    run_dir: Path
    seconds: float
    steps: int
    exact_match: float              # on held-out test examples
    examples: list[tuple[str, str, str]]   # (input, expected, model output)


def run_demo(out_dir: str | Path = "runs/demo", task: str = "reverse", n_show: int = 8,
             n_test: int = 200, quiet: bool = False, extra_overrides: tuple[str, ...] = ()) -> DemoResult:
    """Train on `task`, decode `n_test` held-out inputs greedily, return the exact-match rate."""
    start = time.perf_counter()
    _clear_previous_demo(Path(out_dir))
    result = train(task_config(task), out_dir, overrides=DEMO_OVERRIDES + tuple(extra_overrides), quiet=quiet)
    seconds = time.perf_counter() - start
    run = load_run(out_dir)
    test = make_task(task, n_test, seed=1, split="test", min_len=3, max_len=10)
    dcfg = DecodeConfig(max_len_a=1.0, max_len_b=4)
    scored = evaluate(run, [src for src, _ in test], [tgt for _, tgt in test], dcfg)
    hyps = scored["hypotheses"]
    examples = [(src, tgt, h) for (src, tgt), h in zip(test[:n_show], hyps[:n_show])]
    atomic_write_bytes(Path(out_dir) / DEMO_MARK, b"written by `qkv demo`; the next `qkv demo` replaces this directory\n")
    return DemoResult(Path(out_dir), seconds, result.steps, scored["exact_match"], examples)


DEMO_MARK = ".qkv-demo"


def _clear_previous_demo(out: Path) -> None:
    """`qkv demo` can run again: it replaces a directory that an earlier demo wrote (marked by
    DEMO_MARK), and refuses any other non-empty one rather than delete someone's work."""
    if out.is_symlink():
        raise OutputError(f"{out} is a symbolic link; give the directory itself as --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / DEMO_MARK).is_file():
        raise OutputError(f"{out} is not empty and was not written by `qkv demo`; choose another --out "
                          f"(or delete it)")
    shutil.rmtree(out)


def print_demo(result: DemoResult, task: str, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{task}: held-out examples the model never saw")
    for col in ("input", "expected", "model output", ""):
        table.add_column(col)
    for src, tgt, hyp in result.examples:
        table.add_row(src, tgt, hyp, "✓" if hyp == tgt else "✗")
    console.print(table)
    console.print(
        f"trained {result.steps} steps in {result.seconds:.0f} s; exact match on held-out test "
        f"examples: {100 * result.exact_match:.1f}%; model saved in {result.run_dir}/"
    )
    console.print(
        f"next: qkv translate --model {result.run_dir} \"{result.examples[0][0]}\"   "
        f"qkv explain --model {result.run_dir} \"{result.examples[0][0]}\" --out explain.html"
    )
