"""From the 2017 Transformer to today's decoder-only models, one change at a time, measured.

    qkv history --modern --quick                      # 600 steps a variant: a few minutes
    qkv history --modern --budget-seconds 75          # the comparison quoted in docs/language_model.md

Every variant is the same character-level GPT on Tiny Shakespeare (the first 90% of the text
trains, the last 10% validates), built from the same seed, fed the same random blocks in the same
order, with the same schedule and budget of CPU time on one thread, and AdamW but for the last:

    2017        the paper's decoder as a language model: sinusoidal positions added to the
                embedding, LayerNorm, ReLU FFN, multi-head attention, biases (pre-LN, as GPT-2,
                for all variants: post-LN needs a warm-up this budget cannot afford)
    +rope       rotary positions in attention instead of added sinusoids (Su et al. 2021)
    +rmsnorm    RMSNorm instead of LayerNorm (Zhang & Sennrich 2019)
    +swiglu     the SwiGLU feed-forward at 2/3 of d_ff: the same parameters (Shazeer 2020)
    +gqa        grouped-query attention, 2 key/value heads for 4 query heads (Ainslie et al. 2023)
    all         all of them, no biases and no sqrt(d_model) embedding scale: a Llama
    muon        the same Llama trained with Muon (Jordan et al. 2024) on its hidden matrices and
                AdamW on the rest: the optimizer as one more step (qkv.training.optim, the
                trainer's own split and schedule shape)

Measured per variant: validation loss (nats/character over every block of the validation split)
after the budget, the curve on the way, optimizer steps, training tokens/s, parameters and the
KV cache's bytes per generated token (read off a real cache). The learning-rate schedule is
warm-up then cosine over the *time* budget, so each variant gets a whole schedule (Muon's peaks at
`muon_lr`, AdamW's at `lr`). Muon's extra work per step (a few Newton-Schulz iterations per
matrix) is inside the budget: it is judged on quality per CPU-second, as the others are.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from qkv.config import ModelConfig
from qkv.errors import ConfigError, DataError
from qkv.model import DecoderOnly
from qkv.run import TrainConfig
from qkv.tokenizers import CharTokenizer
from qkv.training.optim import Optimizers

CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
LLAMA = dict(positional="rope", norm="rmsnorm", activation="swiglu", n_kv_heads=2, bias=False, scale_embeddings=False)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "2017": ("2017 (sinusoidal, LayerNorm, ReLU, MHA)", {}),
    "rope": ("+ RoPE", dict(positional="rope")),
    "rmsnorm": ("+ RMSNorm", dict(norm="rmsnorm")),
    "swiglu": ("+ SwiGLU (2/3 d_ff)", dict(activation="swiglu")),
    "gqa": ("+ GQA (2 KV heads of 4)", dict(n_kv_heads=2)),
    "all": ("all (a Llama: + no biases, no emb. scale)", LLAMA),
    "muon": ("all + Muon (AdamW on the rest)", LLAMA),
}
OPTIMIZERS = {"muon": "muon"}          # the variants not trained with AdamW (train.optimizer's names)
# Tiny Shakespeare beside the repository (../shared/data/... from the repository root), found from the
# package's own location so that the command works from any directory.
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
# When a comparison is too short to rank (docs/language_model.md, "Too short to rank"):
MIN_STEPS = 300               # every variant takes at least this many optimizer steps
MAX_BEST_LOSS = 2.2           # and the best gets under 2.2 nats/char (past "which letters are common")
NOISE = 0.04                  # run-to-run spread of the validation loss (seeds): smaller differences are level


@dataclass
class ModernConfig:
    """One comparison; `quick()` gives the settings of `qkv history --modern --quick`."""

    data: str = str(DEFAULT_DATA)
    variants: tuple[str, ...] = tuple(VARIANTS)
    budget_seconds: float = 75.0           # training CPU time per variant (validation not counted)
    max_steps: int | None = None
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 512
    block_size: int = 64
    batch_blocks: int = 16                 # 1024 characters per step
    lr: float = 2.5e-3
    min_lr: float = 1e-4
    muon_lr: float = 0.02                  # Muon's peak rate (the trainer's default train.muon_lr)
    warmup: int = 50
    evals: int = 6
    valid_blocks: int | None = None        # None: every block of the validation split
    clock: str = "cpu"
    seed: int = 1337

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ConfigError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}" if unknown
                              else f"choose at least one variant from {', '.join(VARIANTS)}")
        if not self.budget_seconds > 0:
            raise ConfigError(f"the budget must be a positive number of seconds, got {self.budget_seconds}")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock must be one of {', '.join(CLOCKS)}; got {self.clock!r}")

    @classmethod
    def quick(cls, **kwargs: Any) -> ModernConfig:
        # Sized in steps: 600 steps of 512 characters for every variant (fewer than 300 are too short
        # to rank), 60 CPU seconds as a ceiling; a model small enough for about 10 s a variant.
        settings = dict(budget_seconds=60.0, max_steps=600, d_model=64, n_heads=4, n_layers=2, d_ff=256,
                        block_size=64, batch_blocks=8, lr=5e-3, warmup=20, evals=3, valid_blocks=128)
        return cls(**{**settings, **kwargs})


def model_config(variant: str, vocab_size: int, mc: ModernConfig) -> ModelConfig:
    """The variant's ModelConfig: the 2017 decoder plus the variant's changes."""
    base = dict(arch="decoder-only", tgt_vocab_size=vocab_size, d_model=mc.d_model, n_heads=mc.n_heads,
                n_decoder_layers=mc.n_layers, d_ff=mc.d_ff, dropout=0.0, norm_first=True,
                max_len=mc.block_size, tie_embeddings=True)
    return ModelConfig(**{**base, **VARIANTS[variant][1]})


def read_text(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        path = path / "input.txt"
    if not path.is_file():
        raise DataError(f"Tiny Shakespeare not found at {path}; pass --data FILE (its input.txt)")
    return path.read_text(encoding="utf-8")


def kv_cache_bytes_per_token(model: DecoderOnly, tokens: int = 16) -> float:
    """Bytes that the KV cache of `model` holds per token, read off a real cache after `tokens` tokens."""
    cache = model.new_cache()
    with torch.inference_mode():
        model(torch.full((1, tokens), 4), cache)
    held = sum(c.k.numel() * c.k.element_size() + c.v.numel() * c.v.element_size() for c in cache.self_attn)
    return held / tokens


@torch.no_grad()
def valid_loss(model: DecoderOnly, valid: torch.Tensor) -> float:
    """Mean NLL per character over the validation blocks (B, block_size + 1)."""
    model.eval()
    total = 0.0
    for chunk in valid.split(64):
        logits = model(chunk[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum"))
    model.train()
    return total / valid[:, 1:].numel()


def optimizers(model: DecoderOnly, mc: ModernConfig, optimizer: str = "adamw") -> Optimizers:
    """The trainer's optimizers (qkv.training.optim): AdamW (0.9, 0.99), weight decay 0.1, on every
    tensor, or with "muon" Muon on the layers' matrices and that AdamW on the rest. The rate is set
    by hand every step (`set_lr`): this comparison schedules by time."""
    tc = TrainConfig(optimizer=optimizer, schedule="constant", lr=mc.lr, warmup_steps=0, beta1=0.9, beta2=0.99,
                     eps=1e-8, weight_decay=0.1, muon_lr=mc.muon_lr)
    return Optimizers(model, tc, mc.d_model)


def train_variant(model: DecoderOnly, train: torch.Tensor, valid: torch.Tensor, mc: ModernConfig,
                  optimizer: str = "adamw") -> dict[str, Any]:
    """AdamW (or Muon + AdamW), warm-up then cosine over the time budget, clipping at 1, same
    batches for every variant."""
    clock = CLOCKS[mc.clock]
    opt = optimizers(model, mc, optimizer)
    gen = torch.Generator().manual_seed(mc.seed)
    curve = [{"step": 0, "seconds": 0.0, "valid_loss": valid_loss(model, valid)}]
    seconds, step, next_eval = 0.0, 0, mc.budget_seconds / mc.evals
    offsets = torch.arange(mc.block_size + 1)
    model.train()
    while True:
        starts = torch.randint(0, train.numel() - mc.block_size - 1, (mc.batch_blocks,), generator=gen)
        batch = train[starts[:, None] + offsets]                                   # (B, block + 1)
        start = clock()
        progress = min(1.0, max(seconds / mc.budget_seconds, step / mc.max_steps if mc.max_steps else 0.0))
        lr = mc.min_lr + (mc.lr - mc.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        opt.set_lr(lr * min(1.0, (step + 1) / mc.warmup))     # Muon: the same share of muon_lr
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seconds += clock() - start
        step += 1
        done = seconds >= mc.budget_seconds or (mc.max_steps is not None and step >= mc.max_steps)
        if seconds >= next_eval or done:
            curve.append({"step": step, "seconds": seconds, "valid_loss": valid_loss(model, valid)})
            next_eval += mc.budget_seconds / mc.evals
        if done:
            model.eval()
            return {"steps": step, "train_seconds": seconds, "optimizer": opt.describe().removeprefix("optimizer: "),
                    "tokens_per_second": step * mc.batch_blocks * mc.block_size / seconds,
                    "valid_loss": curve[-1]["valid_loss"], "curve": curve}


def run_modern(mc: ModernConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every variant of `mc` on one thread; return the measurements as a JSON-ready dict."""
    from qkv.machine import cpu_name

    text = read_text(mc.data)
    tok = CharTokenizer.train([text])
    ids = torch.tensor(tok.encode(text))
    cut = int(0.9 * ids.numel())
    train, held = ids[:cut], ids[cut:]
    n_valid = (held.numel() - 1) // mc.block_size
    if mc.valid_blocks is not None:
        n_valid = min(n_valid, mc.valid_blocks)
    valid = torch.stack([held[i * mc.block_size : (i + 1) * mc.block_size + 1] for i in range(n_valid)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "experiment": "qkv history --modern: Tiny Shakespeare (char), one change since 2017 at a time",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(mc).items()},
        "machine": {"cpu": cpu_name(), "torch": torch.__version__, "threads": 1, "python": platform.python_version(),
                    "cores": os.cpu_count(), "load_average_before": list(os.getloadavg()),
                    "clock": mc.clock, "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")},
        "validation_characters": int(valid[:, 1:].numel()), "variants": {},
    }
    try:
        for name in mc.variants:
            torch.manual_seed(mc.seed)
            model = DecoderOnly(model_config(name, tok.vocab_size, mc))
            params = model.num_parameters()
            log(f"{VARIANTS[name][0]}: {params:,} parameters, training for {mc.budget_seconds:g} s")
            trained = train_variant(model, train, valid, mc, OPTIMIZERS.get(name, "adamw"))
            entry = {"label": VARIANTS[name][0], "options": VARIANTS[name][1], "parameters": params, **trained,
                     "kv_cache_bytes_per_token": kv_cache_bytes_per_token(model)}
            results["variants"][name] = entry
            log(f"  {trained['steps']} steps, {trained['tokens_per_second']:,.0f} tokens/s, valid loss "
                f"{trained['valid_loss']:.3f}, KV cache {entry['kv_cache_bytes_per_token']:,.0f} bytes/token")
    finally:
        torch.set_num_threads(threads)
    return results


def run_modern_history(out_dir: str | Path, quick: bool = False, budget_seconds: float | None = None,
                       max_steps: int | None = None, clock: str = "cpu", seed: int = 1337,
                       data: str | Path | None = None, log: Callable[[str], None] = print) -> Path:
    """`qkv history --modern`: run the comparison and write results.json, report.md and a plot."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror}; choose another --out") from None
    settings: dict[str, Any] = dict(clock=clock, seed=seed)
    if max_steps is not None:
        settings["max_steps"] = max_steps
    if budget_seconds is not None:
        settings["budget_seconds"] = budget_seconds
    if data is not None:
        settings["data"] = str(data)
    mc = ModernConfig.quick(**settings) if quick else ModernConfig(**settings)
    read_text(mc.data)                                     # fail now, not after minutes of training
    return write_modern_report(run_modern(mc, log), out)


def markdown_table(results: dict[str, Any]) -> str:
    base = results["variants"].get("2017")
    rows = ["| variant | parameters | validation loss | vs 2017 | steps | tokens/s | KV cache bytes/token |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for v in results["variants"].values():
        delta = f"{v['valid_loss'] - base['valid_loss']:+.3f}" if base is not None else "n/a"
        rows.append(f"| {v['label']} | {v['parameters']:,} | {v['valid_loss']:.3f} | {delta} | {v['steps']:,} | "
                    f"{v['tokens_per_second']:,.0f} | {v['kv_cache_bytes_per_token']:,.0f} |")
    return "\n".join(rows)


def too_short_reasons(results: dict[str, Any]) -> list[str]:
    """Why this comparison cannot rank the variants (empty when it can)."""
    from qkv.history.report import short_runs       # the lab's rule (its module imports matplotlib)

    variants = results["variants"]
    reasons = short_runs(variants.values(), MIN_STEPS, "variants")
    best = min(v["valid_loss"] for v in variants.values())
    if best > MAX_BEST_LOSS:
        reasons.append(f"no variant got past the letter frequencies: the best validation loss is {best:.3f}, "
                       f"above {MAX_BEST_LOSS} nats/char")
    return reasons


def conclusions(results: dict[str, Any]) -> list[str]:
    """What this comparison measured, as markdown paragraphs computed from its numbers."""
    variants = results["variants"]
    ranked = sorted(variants.items(), key=lambda kv: kv[1]["valid_loss"])
    from qkv.history.report import too_short_paragraph

    lines = too_short_paragraph(too_short_reasons(results), "variant", "qkv history --modern --budget-seconds 75")
    order = ", ".join(f"{i}. {v['label']} {v['valid_loss']:.3f}" for i, (_, v) in enumerate(ranked, 1))
    lines.append(f"Validation loss, best first: {order}.")
    if len(ranked) > 1:
        (_, first), (_, second) = ranked[0], ranked[1]
        gap = second["valid_loss"] - first["valid_loss"]
        if gap < NOISE:
            lines.append(f"{first['label']} and {second['label']} are level: {gap:.3f} apart, within the "
                         f"run-to-run spread of about {NOISE} nats/char.")
        else:
            lines.append(f"{first['label']} is best, {gap:.3f} nats/char ahead of {second['label']}.")
    base = variants.get("2017")
    if base is not None:
        better = [v["label"] for n, v in variants.items() if n != "2017" and base["valid_loss"] - v["valid_loss"] >= NOISE]
        worse = [v["label"] for n, v in variants.items() if n != "2017" and v["valid_loss"] - base["valid_loss"] >= NOISE]
        level = [v["label"] for n, v in variants.items() if n != "2017" and v["label"] not in better + worse]
        parts = [f"better than the 2017 model: {', '.join(better)}" if better else "no change beat the 2017 model",
                 *([f"worse: {', '.join(worse)}"] if worse else []),
                 *([f"level with it (within {NOISE}): {', '.join(level)}"] if level else [])]
        sentence = "; ".join(parts)
        lines.append(sentence[0].upper() + sentence[1:] + ".")
    lines += optimizer_step(variants)
    return lines


def optimizer_step(variants: dict[str, Any]) -> list[str]:
    """The last step of the ladder, from its numbers: the same Llama with Muon against AdamW."""
    muon, adamw = variants.get("muon"), variants.get("all")
    if muon is None or adamw is None:
        return []
    gap = adamw["valid_loss"] - muon["valid_loss"]
    said = (f"level with AdamW: {abs(gap):.3f} apart, within the run-to-run spread of about {NOISE} nats/char"
            if abs(gap) < NOISE else
            f"{'better' if gap > 0 else 'worse'} than AdamW by {abs(gap):.3f} nats/char")
    steps = f"{muon['steps']:,} steps against {adamw['steps']:,}"
    if muon.get("tokens_per_second") and adamw.get("tokens_per_second"):
        steps += f"; a Muon step took {adamw['tokens_per_second'] / muon['tokens_per_second']:.2f}x the time of an AdamW step"
    return [f"The optimizer, on the same Llama: Muon on its matrices ({muon['valid_loss']:.3f}) is {said} "
            f"({adamw['valid_loss']:.3f}), in {steps}."]


def write_modern_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """results.json, modern.png (validation loss against time and steps) and report.md."""
    import json

    from matplotlib.figure import Figure      # without pyplot: a notebook's own plots keep its backend

    from qkv.files import atomic_write_bytes, save_figure

    out = Path(out_dir)
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode("utf-8"))
    fig = Figure(figsize=(11, 4))
    by_time, kv = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for v in results["variants"].values():
        curve = v["curve"][1:]
        by_time.plot([p["seconds"] for p in curve], [p["valid_loss"] for p in curve], "o-", ms=3, label=v["label"])
    by_time.set(xlabel="training CPU seconds (one thread)", ylabel="validation loss (nats/char)",
                title="Tiny Shakespeare, same budget and seed")
    by_time.grid(alpha=0.3)
    by_time.legend(fontsize=7)
    labels = [v["label"].split(" (")[0] for v in results["variants"].values()]
    kv.barh(labels, [v["kv_cache_bytes_per_token"] for v in results["variants"].values()], color="tab:gray")
    kv.invert_yaxis()
    kv.set(xlabel="KV cache bytes per token (fp32)", title="Memory of generation")
    fig.tight_layout()
    save_figure(fig, out / "modern.png", dpi=110)
    m = results["machine"]
    text = (f"# From 2017 to today's decoder-only models\n\n{results['experiment']}.\n\n{markdown_table(results)}\n\n"
            f"Budget {results['config']['budget_seconds']:g} CPU seconds per variant on one thread, seed "
            f"{results['config']['seed']}; validation over {results['validation_characters']:,} characters. "
            f"Machine: {m['cpu']}, torch {m['torch']}, {m['date']}.\n\n## What this run measured\n\n"
            + "\n".join(conclusions(results)) + "\n\n![validation loss](modern.png)\n")
    atomic_write_bytes(out / "report.md", text.encode("utf-8"))
    return out / "report.md"
