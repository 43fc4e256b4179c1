"""The history lab's report: results.json, report.md and one PNG per question.

    write_report(results, "history-out")     # results from lab.run_lab (or json.load of results.json)

Each plot answers one question:
    accuracy_by_length.png   does the fixed context vector fail on long inputs? (the bottleneck)
    training_curves.png      who learns fastest for the same training time / number of steps?
    step_time.png            how does one training step scale with sequence length?
    gradient_flow.png        does the loss at the last output reach the first input? (vanishing)
    attention.png            where does the attention model look while it writes?
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure      # figures without pyplot: a notebook's own plots keep its backend
from matplotlib.ticker import MaxNLocator

from qkv.files import atomic_write_bytes, save_figure


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


COLORS = {"rnn": "tab:red", "lstm": "tab:orange", "gru": "tab:olive", "gru-attn": "tab:blue",
          "transformer": "tab:purple"}


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write results.json, the PNGs and report.md into `out_dir`; return the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode("utf-8"))
    models = results["models"]
    plot_accuracy(results, out / "accuracy_by_length.png")
    plot_training(models, out / "training_curves.png")
    plot_step_time(models, out / "step_time.png")
    plot_gradient_flow(results, out / "gradient_flow.png")
    attention = next((m["attention_example"] for m in models.values() if "attention_example" in m), None)
    if attention is not None:
        plot_attention(attention, out / "attention.png")
    atomic_write_bytes(out / "report.md", markdown(results, attention is not None).encode("utf-8"))
    return out / "report.md"


def _points(by_key: dict) -> tuple[list[int], list[float]]:
    """A {length: value} dict (int keys, or str keys after a JSON round trip) as sorted x, y lists."""
    pairs = sorted((int(k), v) for k, v in by_key.items())
    return [k for k, _ in pairs], [v for _, v in pairs]


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def plot_accuracy(results: dict[str, Any], path: Path) -> None:
    low, high = results["train_lengths"]
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    lengths: list[int] = []
    for name, m in results["models"].items():
        x, y = _points(m["accuracy_by_length"])
        lengths += x
        ax.plot(x, [100 * v for v in y], "o-", ms=3.5, color=COLORS[name], label=f"{m['label']} ({m['parameters'] / 1e3:.0f}k)")
    if lengths and max(lengths) > high:
        ax.axvspan(high + 0.5, max(lengths) + 0.5, color="0.92", zorder=0)
        ax.text(high + 0.8, 50, "longer than\nany training input", fontsize=8, color="0.35", va="center")
    ax.set(xlabel=f"input length ({results['length_unit']}); trained on {low}-{high}", ylabel="exact match (%)",
           ylim=(-3, 103), title=f"Task '{results['task']}': greedy exact match by input length")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right" if lengths and max(lengths) <= high else "center right")
    _save(fig, path)


def plot_training(models: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(10, 3.8))
    (by_time, by_step) = fig.subplots(1, 2, sharey=True)
    for name, m in models.items():
        seconds = [p["seconds"] for p in m["curve"]]
        steps = [p["step"] for p in m["curve"]]
        loss = [p["valid_loss"] for p in m["curve"]]
        by_time.plot(seconds, loss, "o-", ms=3, color=COLORS[name], label=m["label"])
        by_step.plot(steps, loss, "o-", ms=3, color=COLORS[name], label=m["label"])
    by_time.set(xlabel="training time (s)", ylabel="validation loss (nats/token)", yscale="log",
                title="Same training time")
    by_step.set(xlabel="optimizer steps", title="Per step")
    for ax in (by_time, by_step):
        ax.grid(alpha=0.3, which="both")
    by_step.legend(fontsize=8)
    _save(fig, path)


def plot_step_time(models: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for name, m in models.items():
        x, y = _points(m["step_seconds_by_length"])
        ax.plot(x, [1000 * v for v in y], "o-", ms=3.5, color=COLORS[name], label=m["label"])
    ax.set(xscale="log", yscale="log", xlabel="source and target length (tokens)",
           ylabel="forward + backward (ms)", title="Time of one training step as sequences grow")
    ax.set_xticks(x, [str(v) for v in x])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_gradient_flow(results: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, title in zip(axes, ("gradient_flow_init", "gradient_flow_trained"), ("at initialization", "after training")):
        for name, m in results["models"].items():
            g = m[key]
            ax.plot(range(1, len(g) + 1), g, "o-", ms=3, color=COLORS[name], label=m["label"])
        ax.set(yscale="log", xlabel="source position j", title=f"|d loss(last output) / d x_j|, {title}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gradient norm")
    axes[1].legend(fontsize=8)
    _save(fig, path)


def plot_attention(example: dict[str, Any], path: Path) -> None:
    src, tgt = example["src"], example["tgt"]
    fig = Figure(figsize=(0.45 * len(src) + 2, 0.45 * len(tgt) + 1.5))
    ax = fig.subplots()
    im = ax.imshow(example["weights"], cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(src)), list(src))
    ax.set_yticks(range(len(tgt)), list(tgt))
    ax.set(xlabel="source (attended to)", ylabel="output being written", title="GRU + attention: weights a_tj")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _ratio(g: list[float]) -> str:
    """How much of the gradient reaching the last source position reaches the first one."""
    return f"{g[0] / g[-1]:.2g}" if g and g[-1] > 0 else "n/a"


def _long_inputs_sentence(results: dict[str, Any]) -> str:
    """Measured: the exact-match range of fixed-vector vs attention models on the longer half of training lengths."""
    low, high = results["train_lengths"]
    groups: dict[bool, list[float]] = {False: [], True: []}
    for name, m in results["models"].items():
        acc = [a for n, a in zip(*_points(m["accuracy_by_length"])) if (low + high) / 2 < n <= high]
        if acc:
            groups[name in ("gru-attn", "transformer")].append(sum(acc) / len(acc))
    if not groups[False] or not groups[True]:
        return ""
    def span(v: list[float]) -> str:
        return f"{percent(min(v))}-{percent(max(v))}" if len(v) > 1 else percent(v[0])

    lo = int((low + high) // 2 + 1)
    return (f" Measured here, on inputs of length {lo}-{high} (the longer half of training): fixed-vector models "
            f"{span(groups[False])} exact match, attention models {span(groups[True])}.")


# When a run is too short to rank (documented in docs/history.md, "Too short to rank"):
MIN_STEPS = 400               # every model must take at least this many optimizer steps (4x the warm-up)
MIN_BEST_ACCURACY = 0.5       # and the best model must get at least half the training-length tests right
TIE_POINTS = 0.05             # accuracies closer than 5 points (or 2 standard errors, if more) are level
ATTENTION_MODELS = ("gru-attn", "transformer")


def _test_count(results: dict[str, Any]) -> int:
    """Test examples behind one model's exact match on the training lengths."""
    low, high = results["train_lengths"]
    lengths = {int(k) for m in results["models"].values() for k in m["accuracy_by_length"] if int(k) <= high}
    return max(1, len(lengths) * int(results["config"].get("test_per_length", 1)))


def _margin(a: float, b: float, n: int) -> float:
    """The smallest difference between two exact-match rates that this run can tell from noise."""
    se = (a * (1 - a) / n + b * (1 - b) / n) ** 0.5
    return max(TIE_POINTS, 2 * se)


def short_runs(entries: Iterable[dict[str, Any]], min_steps: int, noun: str) -> list[str]:
    """The reason (one, or none) that the entries which took fewer than `min_steps` optimizer steps
    cannot be ranked; shared by the lab's report and `--modern`'s."""
    short = {e["label"]: e["steps"] for e in entries if e["steps"] < min_steps}
    if not short:
        return []
    listed = ", ".join(f"{label} {steps:,}" for label, steps in short.items())
    return [f"some {noun} took fewer than {min_steps} optimizer steps ({listed})"]


def too_short_paragraph(reasons: list[str], noun: str, rerun: str) -> list[str]:
    """The "Too short to rank" paragraph (and a blank line) that opens a report's conclusions when
    `reasons` is not empty; shared by the lab's report and `--modern`'s."""
    if not reasons:
        return []
    return [f"**Too short to rank.** This run cannot say which {noun} is better: {'; '.join(reasons)}. "
            f"The numbers below are what it measured, not a ranking; rerun with more steps (e.g. `{rerun}`).", ""]


def too_short_reasons(results: dict[str, Any]) -> list[str]:
    """Why this run cannot rank the models (empty when it can)."""
    models = results["models"]
    reasons = short_runs(models.values(), MIN_STEPS, "models")
    best = max((m["accuracy_in_training_lengths"] or 0.0) for m in models.values())
    if best < MIN_BEST_ACCURACY:
        reasons.append(f"no model learned the task: the best exact match on the training lengths is "
                       f"{percent(best)}, under {percent(MIN_BEST_ACCURACY)}")
    return reasons


def conclusions(results: dict[str, Any]) -> list[str]:
    """What this run measured, as markdown paragraphs computed from its numbers (no fixed verdict)."""
    models = results["models"]
    low, high = results["train_lengths"]
    n = _test_count(results)
    ranked = sorted(models.items(), key=lambda kv: (-(kv[1]["accuracy_in_training_lengths"] or 0.0),
                                                     kv[1]["curve"][-1]["valid_loss"]))
    lines = too_short_paragraph(too_short_reasons(results), "architecture", "--steps 1000 --budget-seconds 300")
    order = ", ".join(f"{i}. {m['label']} {percent(m['accuracy_in_training_lengths'])}"
                      for i, (_, m) in enumerate(ranked, 1))
    lines.append(f"Exact match on the training lengths {low}-{high}, best first: {order}.")
    if len(ranked) > 1:
        (_, first), (_, second) = ranked[0], ranked[1]
        a, b = first["accuracy_in_training_lengths"] or 0.0, second["accuracy_in_training_lengths"] or 0.0
        if a - b < _margin(a, b, n):
            lines.append(f"{first['label']} and {second['label']} are level: {(a - b) * 100:.1f} points apart, "
                         f"within this run's noise ({_margin(a, b, n) * 100:.0f} points on {n:,} test inputs each).")
        else:
            lines.append(f"{first['label']} is best, {(a - b) * 100:.1f} points ahead of {second['label']}.")
        attention = [kv for kv in ranked if kv[0] in ATTENTION_MODELS]
        fixed = [kv for kv in ranked if kv[0] not in ATTENTION_MODELS]
        if attention and fixed:
            lines.append(_attention_against_fixed(results, attention[0][0], fixed[0][0]))
    lowest = min(models.values(), key=lambda m: m["curve"][-1]["valid_loss"])
    lines.append(f"Lowest validation loss: {lowest['label']} ({lowest['curve'][-1]['valid_loss']:.3f}).")
    return lines


def _attention_against_fixed(results: dict[str, Any], att: str, fix: str) -> str:
    """The best attention model against the best fixed-vector model on the longer half of training lengths."""
    low, high = results["train_lengths"]
    lo = int((low + high) // 2 + 1)

    def longer_half(name: str) -> float | None:
        acc = [a for k, a in zip(*_points(results["models"][name]["accuracy_by_length"])) if lo <= k <= high]
        return sum(acc) / len(acc) if acc else None

    a, f = longer_half(att), longer_half(fix)
    if a is None or f is None:
        return ""
    la, lf = results["models"][att]["label"], results["models"][fix]["label"]
    n = max(1, (high - lo + 1) * int(results["config"].get("test_per_length", 1)))
    if abs(a - f) < _margin(a, f, n):
        verdict = "are level"
    elif a > f:
        verdict = f"favour attention by {(a - f) * 100:.1f} points"
    else:
        verdict = f"favour the fixed vector by {(f - a) * 100:.1f} points: attention did not win this run"
    return (f"On the longer inputs of training (lengths {lo}-{high}), the best attention model ({la}, {percent(a)}) "
            f"and the best fixed-vector model ({lf}, {percent(f)}) {verdict}.")


def _step_time_sentence(models: dict[str, Any], length: int) -> str:
    """Measured: the fastest and the slowest training step at the longest timed length."""
    ms = {m["label"]: 1000 * dict((int(k), v) for k, v in m["step_seconds_by_length"].items())[length]
          for m in models.values()}
    if len(ms) < 2:
        return ""
    fast, slow = min(ms, key=ms.__getitem__), max(ms, key=ms.__getitem__)
    return f" Measured here at length {length}: fastest {fast} ({ms[fast]:.1f} ms), slowest {slow} ({ms[slow]:.1f} ms)."


def markdown(results: dict[str, Any], with_attention: bool) -> str:
    cfg, models = results["config"], results["models"]
    low, high = results["train_lengths"]
    longest = max(int(k) for m in models.values() for k in m["step_seconds_by_length"])
    clock = "CPU seconds of the training thread" if cfg["clock"] == "cpu" else "wall-clock seconds"
    lines = [
        f"# History lab: task '{results['task']}'",
        "",
        f"Every model trained for **{cfg['budget_seconds']:g} s** ({clock}, one thread)"
        + (f" or {cfg['max_steps']} steps" if cfg.get("max_steps") else "")
        + f" on the same batches (about {cfg['max_tokens']} padded tokens each), with Adam (lr {cfg['lr']:g}, "
        f"{cfg['warmup']} warmup steps), gradient clipping at 1 and label smoothing {cfg['label_smoothing']:g}. "
        f"Training inputs have length {low}-{high} ({results['length_unit']}); the test goes further. "
        f"Recurrent models get the hidden size that matches the Transformer's parameter count. "
        f"The whole run took {results['total_seconds']:.0f} s.",
        "",
        f"| model | parameters | steps | tokens/s | valid loss | exact match, lengths {low}-{high} | "
        f"exact match, longer | step at length {longest} (ms) | gradient first/last position (init -> trained) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models.values():
        step_ms = 1000 * dict((int(k), v) for k, v in m["step_seconds_by_length"].items())[longest]
        lines.append(
            f"| {m['label']} | {m['parameters']:,} | {m['steps']:,} | {m['tokens_per_second']:,.0f} | "
            f"{m['curve'][-1]['valid_loss']:.3f} | {percent(m['accuracy_in_training_lengths'])} | "
            f"{percent(m['accuracy_beyond_training_lengths'])} | {step_ms:.1f} | "
            f"{_ratio(m['gradient_flow_init'])} -> {_ratio(m['gradient_flow_trained'])} |"
        )
    lines += ["", "## What this run measured", "", *conclusions(results)]
    lines += [
        "",
        "## Accuracy by input length: the fixed-vector bottleneck",
        "",
        "![accuracy by length](accuracy_by_length.png)",
        "",
        "The RNN, LSTM and GRU encoder-decoders hand the decoder one vector, the encoder's final state: "
        "the longer the input, the more it must hold. "
        "Attention (GRU + attention, Transformer) lets each output step read every source position. "
        "The grey region holds inputs longer than any seen in training." + _long_inputs_sentence(results),
        "",
        "## Training curves: same time, same data",
        "",
        "![training curves](training_curves.png)",
        "",
        "## Time per step: a recurrence is sequential",
        "",
        "![time per step](step_time.png)",
        "",
        "A recurrent layer cannot compute position t before position t-1, so a step costs one small "
        "matrix product per token, one after the other. A Transformer layer handles all positions in a few "
        "large matrix products; its cost grows with length too (attention is quadratic), but in parallel. "
        "Additive attention builds a (target x source x hidden) tensor." + _step_time_sentence(models, longest),
        "",
        "## Gradient flow: vanishing gradients",
        "",
        "![gradient flow](gradient_flow.png)",
        "",
        f"The gradient of the loss at the last output with respect to the embedding of each source "
        f"position (inputs of length {results['gradient_length']}, mean over examples). In a plain RNN the "
        "signal is multiplied by the recurrent Jacobian at every step it travels back, so it shrinks "
        "geometrically toward the first positions. LSTM and GRU gates add paths where it passes almost "
        "unchanged; attention connects every source position to every output directly.",
    ]
    if with_attention:
        lines += ["", "## Where attention looks", "", "![attention weights](attention.png)", "",
                  "Each row is one output character; each row sums to 1 over the source."]
    return "\n".join(lines) + "\n"
