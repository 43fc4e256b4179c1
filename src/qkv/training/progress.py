"""What a user sees while training: a live rich progress bar on a terminal, plain lines otherwise.

On a terminal (and in Jupyter, with ipywidgets) the bar shows step, loss, learning rate, tokens/s and the time left; every
validation prints one summary line above it. When stderr is not a terminal (CI, a log file)
there is no bar: a plain line every ~10% of the run and one per validation. `quiet` prints
nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


def _has_ipywidgets() -> bool:
    """rich draws a live bar in Jupyter through ipywidgets; without them, plain lines."""
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


class Progress:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        self.live = not quiet and (self.console.is_terminal or (self.console.is_jupyter and _has_ipywidgets()))
        self.bar: RichProgress | None = None
        self.task = None
        self.total = 0
        self.loss: float | None = None         # running average of the training loss
        self.speed: float | None = None        # running average of tokens/s

    def print(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False, soft_wrap=True)

    def start(self, description: str, total: int, done: int) -> None:
        self.total = total
        self.print(description)
        if not self.live:
            return
        self.bar = RichProgress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} tok/s"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, loss="-", lr="-", speed="-")

    def retotal(self, total: int) -> None:
        """The run's last step changed (the trainer fitted its steps to the budget again)."""
        self.total = total
        if self.bar is not None:
            self.bar.update(self.task, total=total)

    def advance(self, step: int, stats: dict[str, Any]) -> None:
        loss = stats["loss_sum"] / max(stats["tokens"], 1)
        speed = stats["all_tokens"] / max(stats["seconds"], 1e-9)
        self.loss = loss if self.loss is None else 0.9 * self.loss + 0.1 * loss
        self.speed = speed if self.speed is None else 0.9 * self.speed + 0.1 * speed
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{self.loss:.3f}", lr=f"{stats['lr']:.2e}",
                            speed=f"{self.speed:,.0f}")
        elif not self.quiet and (step % max(self.total // 10, 1) == 0):
            self.print(f"step {step}/{self.total}  loss {self.loss:.3f}  lr {stats['lr']:.2e}  "
                       f"{self.speed:,.0f} tok/s")

    def validation(self, record: dict[str, Any], total: int, show_bleu: bool = True) -> None:
        """One summary line; `show_bleu=False` for built-in tasks (qkv.training.metrics.bleu_applies)."""
        parts = [f"step {record['step']}/{total}", f"valid loss {record['loss']:.3f}", f"ppl {record['ppl']:.2f}"]
        if "bpc" in record:
            parts.append(f"bpc {record['bpc']:.3f}")
        if "exact_match" in record:
            parts.append(f"exact {100 * record['exact_match']:.1f}%")
            if show_bleu:
                parts.append(f"BLEU {record['bleu']:.1f}")
            parts.append(f"chrF {record['chrf']:.1f}")
        if record.get("best"):
            parts.append("(best, saved)")
        self.print("  ".join(parts))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def finish(self, stopped: str, steps: int, metric: str, best: float | None, run_dir: Path, seconds: float) -> None:
        best_text = "-" if best is None else (f"{100 * best:.1f}%" if metric == "exact_match" else f"{best:.4g}")
        self.print(f"{stopped} after {steps} steps in {seconds:.0f} s; best {metric} {best_text}; run in {run_dir}")
        if stopped == "interrupted":
            self.print(f"checkpoint saved; continue with: qkv train --resume {run_dir}")
