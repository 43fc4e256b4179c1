"""The history lab: train the models the Transformer replaced for the same time, then measure.

    results = run_lab(LabConfig(task="reverse"), "history-out")

For each model (plain RNN, LSTM and GRU with one fixed context vector, a GRU with additive
attention, a Transformer), all of about the same parameter count and trained on the same batches
with the same loss (label-smoothed cross-entropy) and optimizer for the same budget of training
time, the lab measures:

- exact-match accuracy of greedy decoding against input length, past the training lengths;
- validation loss against training time and against steps, and training tokens/s;
- the time of one forward+backward step as the sequence grows (a recurrence is sequential);
- gradient flow: |d loss(last output) / d embedding(source position j)| for every j;
- parameter counts.

report.py turns the returned dictionary into report.md and PNG plots.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qkv.config import ModelConfig
from qkv.data import Seq2SeqBatches, get_task, make_task, restore_order
from qkv.search import DecodeConfig, translate_ids
from qkv.errors import ConfigError, DataError
from qkv.history.attention_rnn import AttentionSeq2Seq
from qkv.history.rnn import RecurrentConfig, Seq2Seq
from qkv.model import EncoderDecoder
from qkv.tokenizers import CharTokenizer
from qkv.training.loss import label_smoothed_nll

MODELS = ("rnn", "lstm", "gru", "gru-attn", "transformer")
# Time is measured on one thread. "cpu" counts only the CPU time that thread got, so other
# programs on a busy machine do not make one model look slower than another; "wall" is the clock
# on the wall (honest on an idle machine, noisy on a shared one).
CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
LABELS = {
    "rnn": "RNN (fixed vector)",
    "lstm": "LSTM (fixed vector)",
    "gru": "GRU (fixed vector)",
    "gru-attn": "GRU + attention",
    "transformer": "Transformer",
}


@dataclass
class LabConfig:
    """One experiment. `quick()` gives the settings of `qkv history --quick`."""

    task: str = "reverse"
    models: tuple[str, ...] = MODELS
    budget_seconds: float = 100.0          # training time per model (evaluation not counted)
    max_steps: int | None = None           # also stop after this many steps (a step budget)
    train_examples: int = 50_000
    valid_examples: int = 500
    test_per_length: int = 100             # examples per input length for accuracy
    max_tokens: int = 1536                 # padded tokens per batch
    lr: float = 2e-3
    warmup: int = 100
    label_smoothing: float = 0.1
    d_model: int = 64                      # the Transformer; recurrent models match its parameters
    n_layers: int = 2
    timing_lengths: tuple[int, ...] = (8, 16, 32, 64, 128)
    timing_batch: int = 16
    evals: int = 12                        # validation points on each training curve
    clock: str = "cpu"                     # "cpu": CPU seconds of the one training thread; "wall"
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}" if unknown
                              else f"choose at least one model from {', '.join(MODELS)}")
        if not self.budget_seconds > 0:
            raise ConfigError(f"the budget must be a positive number of seconds, got {self.budget_seconds}")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock must be one of {', '.join(CLOCKS)}; got {self.clock!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"the step budget must be >= 1, got {self.max_steps}")
        get_task(self.task)

    @classmethod
    def quick(cls, **kwargs: Any) -> LabConfig:
        # Sized in steps: every model takes 500 optimizer steps (the report calls fewer than 400 too
        # short to rank), with 60 CPU seconds as a ceiling for a slow machine.
        settings = dict(budget_seconds=60.0, max_steps=500, train_examples=10_000, valid_examples=200,
                        test_per_length=40, timing_lengths=(8, 32, 128), evals=6)
        return cls(**{**settings, **kwargs})


# ---------------------------------------------------------------------------------------------
# Models of comparable size
# ---------------------------------------------------------------------------------------------


def transformer_config(vocab_size: int, lab: LabConfig) -> ModelConfig:
    return ModelConfig(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, d_model=lab.d_model, n_heads=4,
                       n_encoder_layers=lab.n_layers, n_decoder_layers=lab.n_layers, d_ff=4 * lab.d_model,
                       dropout=0.0, norm_first=True, max_len=512)


def build_model(name: str, vocab_size: int, lab: LabConfig) -> nn.Module:
    """Model `name`; recurrent ones get the hidden size that brings them closest to the
    Transformer's parameter count, so no model wins by being bigger."""
    transformer = EncoderDecoder(transformer_config(vocab_size, lab))
    if name == "transformer":
        return transformer
    target = transformer.num_parameters()
    cls = AttentionSeq2Seq if name.endswith("-attn") else Seq2Seq
    cell = name.removesuffix("-attn")

    def make(d_hidden: int) -> nn.Module:
        return cls(RecurrentConfig(vocab_size, vocab_size, cell=cell, d_embed=lab.d_model, d_hidden=d_hidden))

    low, high = 8, 2048                         # parameters grow with d_hidden: bisect on multiples of 8
    while high - low > 8:
        mid = (low + high) // 16 * 8
        low, high = (mid, high) if _n_params(make(mid)) < target else (low, mid)
    return min((make(low), make(high)), key=lambda m: abs(_n_params(m) - target))


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class LabData:
    tokenizer: CharTokenizer
    train: Seq2SeqBatches
    valid: Seq2SeqBatches
    test: dict[int, list[tuple[str, str]]]      # input length -> pairs
    train_lengths: tuple[int, int]
    length_unit: str


def make_data(lab: LabConfig) -> LabData:
    """Train and valid pairs at the task's lengths; test pairs per length up to twice as long."""
    task = get_task(lab.task)
    tok = CharTokenizer.from_alphabet(task.alphabet)

    def batches(pairs: list[tuple[str, str]]) -> Seq2SeqBatches:
        return Seq2SeqBatches(tok.encode_batch([s for s, _ in pairs]), tok.encode_batch([t for _, t in pairs]),
                              max_tokens=lab.max_tokens, seed=lab.seed)

    train = make_task(lab.task, lab.train_examples, lab.seed, "train")
    valid = make_task(lab.task, lab.valid_examples, lab.seed, "valid")
    if task.length_unit is None:   # e.g. dates: no length to set; group test inputs by characters
        test = _group_by_length(make_task(lab.task, 20 * lab.test_per_length, lab.seed, "test"), lab.test_per_length)
        lengths = [len(s) for s, _ in train]
        return LabData(tok, batches(train), batches(valid), test, (min(lengths), max(lengths)), "characters")
    test = {}
    for length in range(task.min_len, 2 * task.max_len + 1):
        try:
            test[length] = make_task(lab.task, lab.test_per_length, lab.seed, "test", length, length)
        except DataError:          # too few distinct short inputs for a full test set: skip that length
            continue
    return LabData(tok, batches(train), batches(valid), test, (task.min_len, task.max_len), task.length_unit)


def _group_by_length(pairs: list[tuple[str, str]], per_length: int) -> dict[int, list[tuple[str, str]]]:
    groups: dict[int, list[tuple[str, str]]] = {}
    for src, tgt in pairs:
        groups.setdefault(len(src), []).append((src, tgt))
    return {n: g[:per_length] for n, g in sorted(groups.items()) if len(g) >= 10}


# ---------------------------------------------------------------------------------------------
# Training for a time budget
# ---------------------------------------------------------------------------------------------


def batch_loss(model: nn.Module, batch, smoothing: float) -> tuple[torch.Tensor, float, int]:
    """(mean smoothed loss to backpropagate, NLL sum, target tokens) of one batch."""
    logits = model(batch.src, batch.tgt_in)                                 # (B, T, V)
    loss, nll, n = label_smoothed_nll(logits, batch.tgt_out, smoothing)
    return loss / max(n, 1), float(nll), n


@torch.no_grad()
def valid_loss(model: nn.Module, data: Seq2SeqBatches) -> float:
    """Teacher-forced NLL per target token."""
    model.eval()
    total, count = 0.0, 0
    for batch in data.eval_batches():
        _, nll, n = batch_loss(model, batch, 0.0)
        total, count = total + nll, count + n
    model.train()
    return total / max(count, 1)


def train_model(model: nn.Module, data: LabData, lab: LabConfig) -> dict[str, Any]:
    """Adam with linear warmup, gradient clipping at 1, until the time (or step) budget is spent.

    Only forward, backward and the update are timed; validation pauses the clock.
    """
    torch.manual_seed(lab.seed)
    clock = CLOCKS[lab.clock]
    opt = torch.optim.Adam(model.parameters(), lr=lab.lr, betas=(0.9, 0.98))
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / lab.warmup))
    curve: list[dict[str, float]] = [{"step": 0, "seconds": 0.0, "valid_loss": valid_loss(model, data.valid)}]
    seconds, step, tokens, epoch = 0.0, 0, 0, 0
    next_eval = lab.budget_seconds / lab.evals
    model.train()
    while True:
        for batch in data.train.epoch(epoch):
            start = clock()
            loss, _, _ = batch_loss(model, batch, lab.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            warmup.step()
            seconds += clock() - start
            step += 1
            tokens += batch.n_src_tokens + batch.n_tgt_tokens
            done = seconds >= lab.budget_seconds or (lab.max_steps is not None and step >= lab.max_steps)
            if seconds >= next_eval or done:
                curve.append({"step": step, "seconds": seconds, "valid_loss": valid_loss(model, data.valid)})
                next_eval += lab.budget_seconds / lab.evals
            if done:
                model.eval()
                return {"steps": step, "train_seconds": seconds, "tokens_per_second": tokens / seconds,
                        "curve": curve}
        epoch += 1


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def accuracy_by_length(model: nn.Module, data: LabData) -> dict[int, float]:
    """Exact match of greedy decoding (qkv.search) for each input length of the test sets."""
    dcfg = DecodeConfig(max_len_a=1.0, max_len_b=12)
    out = {}
    for length, pairs in data.test.items():
        tgt_ids = data.tokenizer.encode_batch([t for _, t in pairs])
        batches = Seq2SeqBatches(data.tokenizer.encode_batch([s for s, _ in pairs]), max_tokens=4096)
        order, hyps = [], []
        for batch in batches.eval_batches():
            order += batch.indices.tolist()
            hyps += [h[0].tokens for h in translate_ids(model, batch.src, dcfg)]
        hyps = restore_order(order, hyps)
        out[length] = sum(h == t for h, t in zip(hyps, tgt_ids)) / len(pairs)
    return out


def step_time_by_length(model: nn.Module, vocab_size: int, lab: LabConfig) -> dict[int, float]:
    """Median seconds of one forward+backward pass on (timing_batch, L) random sources and targets."""
    gen = torch.Generator().manual_seed(lab.seed)
    clock = CLOCKS[lab.clock]
    model.train()
    out = {}
    for length in lab.timing_lengths:
        src = torch.randint(4, vocab_size, (lab.timing_batch, length), generator=gen)
        tgt = torch.randint(4, vocab_size, (lab.timing_batch, length), generator=gen)
        times = []
        for _ in range(4):                              # the first run warms up and is dropped
            start = clock()
            loss, _, _ = batch_loss(model, _Batch(src, tgt, tgt), 0.0)
            loss.backward()
            times.append(clock() - start)
        model.zero_grad(set_to_none=True)
        out[length] = float(np.median(times[1:]))
    model.eval()
    return out


@dataclass
class _Batch:
    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor


def gradient_flow(model: nn.Module, pairs: list[tuple[str, str]], tok: CharTokenizer) -> list[float]:
    """Mean over examples of |d loss_last / d x_j| for each source position j.

    loss_last is the NLL of the *last* target token (teacher forced) and x_j the source embedding
    fed at position j. A plain RNN's gradient shrinks by a factor at every step it travels back,
    so early positions get almost none (the vanishing gradient); gates and attention keep paths open.
    All pairs must have the same source length.
    """
    src = torch.tensor(tok.encode_batch([s for s, _ in pairs]))                 # (B, S)
    y = tok.encode_batch([t for _, t in pairs])
    width = max(len(t) for t in y)
    tgt_in = torch.tensor([[1] + t[:-1] + [0] * (width - len(t)) for t in y])  # (B, T) <bos> y without its end
    at = torch.tensor([len(t) - 1 for t in y])                                 # (B,) where the last token is predicted
    last = torch.tensor([t[-1] for t in y])                                    # (B,) the last target token
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    hook = model.src_embed.register_forward_hook(keep)
    try:
        model.eval()
        logits = model(src, tgt_in)                                            # (B, T, V)
        logits_last = logits[torch.arange(len(y)), at]                          # (B, V)
        nn.functional.cross_entropy(logits_last, last, reduction="sum").backward()
    finally:
        hook.remove()
    grad = captured[0].grad                                                    # (B, S, d_embed)
    model.zero_grad(set_to_none=True)
    return grad.norm(dim=-1).mean(dim=0).tolist()


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------


def run_lab(lab: LabConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every model of `lab` on one thread and return all measurements as a JSON-ready dict."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_lab(lab, log)
    finally:
        torch.set_num_threads(threads)


def _run_lab(lab: LabConfig, log: Callable[[str], None]) -> dict[str, Any]:
    from qkv.history.report import percent       # the report's number format (it imports matplotlib)

    torch.manual_seed(lab.seed)
    data = make_data(lab)
    vocab = data.tokenizer.vocab_size
    grad_pairs = _same_length(data.test[max(data.test)])[:32]   # the longest inputs: the longest path back
    grad_length = len(grad_pairs[0][0])
    results: dict[str, Any] = {
        "task": lab.task, "config": _jsonable(asdict(lab)), "train_lengths": list(data.train_lengths),
        "length_unit": data.length_unit, "gradient_length": grad_length, "models": {},
    }
    started = time.perf_counter()
    for name in lab.models:
        torch.manual_seed(lab.seed)
        model = build_model(name, vocab, lab)
        params = _n_params(model)
        log(f"{LABELS[name]}: {params:,} parameters, training for {lab.budget_seconds:g} s")
        grad_init = gradient_flow(model, grad_pairs, data.tokenizer)
        trained = train_model(model, data, lab)
        accuracy = accuracy_by_length(model, data)
        entry = {
            "label": LABELS[name], "parameters": params, **trained,
            "accuracy_by_length": accuracy,
            "accuracy_in_training_lengths": _mean(a for n, a in accuracy.items() if n <= data.train_lengths[1]),
            "accuracy_beyond_training_lengths": _mean(a for n, a in accuracy.items() if n > data.train_lengths[1]),
            "gradient_flow_init": grad_init,
            "gradient_flow_trained": gradient_flow(model, grad_pairs, data.tokenizer),
            "step_seconds_by_length": step_time_by_length(model, vocab, lab),
        }
        if isinstance(model, AttentionSeq2Seq):
            entry["attention_example"] = _attention_example(model, data)
        results["models"][name] = entry
        log(f"  {trained['steps']} steps, {trained['tokens_per_second']:,.0f} tokens/s, valid loss "
            f"{trained['curve'][-1]['valid_loss']:.3f}, exact match {percent(entry['accuracy_in_training_lengths'])} "
            f"(training lengths) / {percent(entry['accuracy_beyond_training_lengths'])} (longer)")
    results["total_seconds"] = time.perf_counter() - started
    return results


def run_history(
    out_dir: str | Path,
    task: str = "reverse",
    quick: bool = False,
    models: str = ",".join(MODELS),
    budget_seconds: float | None = None,
    max_steps: int | None = None,
    clock: str = "cpu",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """`qkv history`: run the lab with command-line settings and write the report; return report.md."""
    from qkv.history.report import write_report

    out_dir = Path(out_dir)
    try:                                   # fail now, not after minutes of training
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out_dir}: {exc.strerror}; choose another --out") from None
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    settings: dict[str, Any] = dict(task=task, models=names, clock=clock, seed=seed)
    if max_steps is not None:
        settings["max_steps"] = max_steps
    if budget_seconds is not None:
        settings["budget_seconds"] = budget_seconds
    lab = LabConfig.quick(**settings) if quick else LabConfig(**settings)
    return write_report(run_lab(lab, log), out_dir)


def _same_length(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose source has the most common length (gradients are compared by position)."""
    common = Counter(len(src) for src, _ in pairs).most_common(1)[0][0]
    return [p for p in pairs if len(p[0]) == common]


def _attention_example(model: AttentionSeq2Seq, data: LabData) -> dict[str, Any]:
    """Attention weights on one test input of the longest training length (teacher forced)."""
    src, tgt = data.test[max(n for n in data.test if n <= data.train_lengths[1])][0]
    tgt_ids = data.tokenizer.encode(tgt)
    with torch.no_grad():
        w = model.attention_weights(torch.tensor([data.tokenizer.encode(src)]), torch.tensor([[1] + tgt_ids]))
    return {"src": src, "tgt": tgt, "weights": w[0, : len(tgt_ids)].tolist()}   # row t: predicting y_t


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else (
        {k: _jsonable(v) for k, v in value.items()} if isinstance(value, dict) else value)
