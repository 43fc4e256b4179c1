"""Training metrics: the metrics.jsonl log, validation scores and the training plots.

metrics.jsonl holds one JSON object per line:

    {"kind": "train", "step": 10, "loss": 2.31, "nll": 2.10, "lr": 0.0004, "tokens_per_s": 8100, ...}
    {"kind": "valid", "step": 200, "loss": 0.52, "ppl": 1.68, "exact_match": 0.97, ...}
    {"kind": "end", "step": 400, "stopped": "finished"}     # last, once training came to its end

Lines are appended as training goes (a reader skips a torn last line after a kill -9); on
resume the file is rewritten atomically without the lines past the resumed step.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from qkv.files import append_bytes, atomic_write_bytes, save_figure
from qkv.errors import CheckpointError
from qkv.run import RunDir, load_run_config

HIGHER_IS_BETTER = {"exact_match": True, "bleu": True, "chrf": True, "loss": False, "ppl": False, "bpc": False}


class MetricsLog:
    """Append-only JSON-lines log of a run."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = RunDir(run_dir).metrics

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(_finite(record), sort_keys=False) + "\n"
        append_bytes(self.path, line.encode("utf-8"))      # the run's own log: appended, never through a link

    def truncate_after(self, step: int) -> None:
        """Keep only the records up to `step` (resume continues from there)."""
        kept = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= step and r.get("kind") != "end"]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))


def run_ended(run_dir: str | os.PathLike) -> bool:
    """Whether the run's training came to its end (the last record is the trainer's "end": steps
    done, target reached, patience or time limit), rather than being interrupted or killed."""
    records = read_metrics(run_dir)
    return bool(records) and records[-1].get("kind") == "end"


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a run's metrics.jsonl (a torn last line is skipped)."""
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: write them as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def is_better(metric: str, new: float, best: float | None) -> bool:
    if new is None or math.isnan(new):           # a NaN score is never "best"
        return False
    if best is None:
        return True
    return new > best if HIGHER_IS_BETTER.get(metric, False) else new < best


def headline_metric(kind: str | None) -> str:
    """The score that says how good a run of data kind `kind` is (train.metric="auto" stops on it):
    exact match for the built-in tasks, BLEU for translation, the loss otherwise."""
    return {"task": "exact_match", "translation": "bleu"}.get(kind or "", "loss")


def run_kind(config: dict[str, Any]) -> str | None:
    """The data kind a run's config.toml records ("task", "translation", "lm"), None if it says none."""
    return config.get("data", {}).get("kind")


def bleu_applies(kind: str | None) -> bool:
    """False for the built-in tasks: their outputs are one "word" (a reversed string, a number, a
    date) detokenized without spaces, where BLEU's 4-grams are 0 by construction."""
    return kind != "task"


def exact_matches(hypotheses: list[str], references: list[str]) -> int:
    """How many hypotheses equal their reference exactly, character for character."""
    return sum(h == r for h, r in zip(hypotheses, references))


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Exact match (fraction), sacreBLEU BLEU and chrF (0-100) of decoded text against references."""
    import sacrebleu

    exact = exact_matches(hypotheses, references) / max(len(references), 1)
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    return {"exact_match": exact, "bleu": bleu, "chrf": chrf}


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------

_VALID_PANELS = ("exact_match", "bleu", "chrf", "bpc")


def plotted_scores(valid: list[dict[str, Any]], kind: str | None) -> list[str]:
    """The validation scores a plot shows: those recorded, less BLEU where it does not apply."""
    return [m for m in _VALID_PANELS
            if any(r.get(m) is not None for r in valid) and (m != "bleu" or bleu_applies(kind))]


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draw loss, learning rate and validation metrics of a run into one PNG; return its path.
    A built-in task's run shows exact match (and chrF), no BLEU (see `bleu_applies`)."""
    import matplotlib.ticker
    from matplotlib.figure import Figure      # not pyplot: a notebook's backend (inline figures) stays as it is

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    if not train and not valid:
        raise CheckpointError(f"{RunDir(run_dir).metrics} is missing or empty; train first with `qkv train --out {run_dir}`")
    kind = run_kind(load_run_config(run_dir)) if RunDir(run_dir).config.is_file() else None
    scores = plotted_scores(valid, kind)

    fig = Figure(figsize=(5 * (2 + bool(scores)), 3.8))
    axes = fig.subplots(1, 2 + bool(scores), squeeze=False, sharex=True)
    ax_loss, ax_lr = axes[0][0], axes[0][1]
    _line(ax_loss, train, "loss", "train (label-smoothed)", alpha=0.5)
    _line(ax_loss, train, "nll", "train NLL")
    _line(ax_loss, valid, "loss", "validation NLL", marker="o")
    ax_loss.set(title="Loss (nats/token)", xlabel="step", yscale="log" if _spread(train + valid, "loss") > 10 else "linear")
    ax_loss.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax_loss.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_loss.legend()
    _line(ax_lr, train, "lr", None)
    ax_lr.set(title="Learning rate", xlabel="step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if scores:
        ax = axes[0][2]
        for m in scores:
            scale = 100.0 if m == "exact_match" else 1.0
            pts = [(r["step"], r[m] * scale) for r in valid if r.get(m) is not None]
            ax.plot(*zip(*pts), marker="o", label=_LABELS[m])
        ax.set(title="Validation", xlabel="step")
        ax.legend()
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = Path(out) if out is not None else RunDir(run_dir).plot
    save_figure(fig, out, dpi=110)
    return out


_LABELS = {"exact_match": "exact match (%)", "bleu": "BLEU", "chrf": "chrF", "bpc": "bits per char"}


def _spread(records: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in records if r.get(key)]
    return max(values) / min(values) if values else 1.0


def _line(ax, records: list[dict[str, Any]], key: str, label: str | None, **kw) -> None:
    pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    if pts:
        ax.plot(*zip(*pts), label=label, **kw)
