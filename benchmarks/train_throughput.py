"""Training throughput: qkv against Hugging Face MarianMTModel and torch.nn.Transformer.

One training step = forward, label-smoothed cross-entropy (fp32), backward, gradient clipping
and an AdamW update, on the same token-budget batches (about 4096 source + target tokens of
random sentences 10-20 tokens long, like Multi30k) for every system. Steps of the systems are
interleaved round by round, so a change in machine load hits all of them alike; the median
step time is reported, with tokens per CPU-second (process time), which a busy shared machine
distorts far less than wall time. Dropout 0.1 sits where qkv has it (embeddings, sublayer outputs and
inside the feed-forward network: Marian's `activation_dropout`), and every system uses the same
fused AdamW, so the systems do the same work. Tokens/s counts real source + target tokens (no padding).
Every system gets qkv's loss (one autograd function, closed-form gradient) and computes every
padded position (a quarter of them at these lengths). A last setting, `small_fp32_equal_lengths`,
gives every sentence of a batch the same lengths (qkv's own length-bucketed batches of Multi30k hold
~4% padding). qkv's model gets what qkv's trainer applies from the fast layer: dropout masks drawn
with NumPy's PCG64 (`qkv.fast.dropout`; torch's CPU bernoulli_ is a serial Mersenne Twister); the
others use torch's dropout.

Model FLOP utilisation (MFU) = useful model FLOPs per second / measured matmul peak of the same
precision (a large square matmul measured in this run); both in CPU time, so that other programs
on a shared machine do not distort them. Useful FLOPs: 6 per parameter per token
for the encoder (source tokens) and the decoder + output layer (target tokens), plus attention
scores and mixing, on real lengths.

    python benchmarks/train_throughput.py           # small and base configs, fp32 and bf16
    python benchmarks/train_throughput.py --quick   # the small config only, fewer steps

Prints JSON and saves benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from qkv import DecoderOnly, EncoderDecoder, ModelConfig, build_model
from qkv.model.layers import Embeddings
from qkv.fast.dropout import use_fast_dropout
from qkv.entry import prepare_process, run_main
from qkv.files import atomic_write_bytes
from qkv.machine import cpu_has_fast_bf16, cpu_name
from qkv.training.loss import label_smoothed_nll

CONFIGS = {
    "small": dict(d_model=256, n_heads=4, n_encoder_layers=3, n_decoder_layers=3, d_ff=1024),
    "base": dict(d_model=512, n_heads=8, n_encoder_layers=6, n_decoder_layers=6, d_ff=2048),
}
VOCAB, BATCH_TOKENS, MIN_LEN, MAX_LEN = 8000, 4096, 10, 20


# --- data ------------------------------------------------------------------------------------


def make_batches(n: int, seed: int = 0, equal_lengths: bool = False) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(src, tgt_in, tgt_out) batches of ~BATCH_TOKENS real tokens, padded with 0. With `equal_lengths`
    every sentence pair of a batch has the same lengths (drawn once per batch): no padding at all."""
    g = torch.Generator().manual_seed(seed)

    def length() -> int:
        return int(torch.randint(MIN_LEN, MAX_LEN + 1, (1,), generator=g))

    batches = []
    for _ in range(n):
        srcs, tgts, tokens = [], [], 0
        lengths = (length(), length())
        while tokens < BATCH_TOKENS:
            s, t = lengths if equal_lengths else (length(), length())
            srcs.append(torch.randint(4, VOCAB, (s,), generator=g))
            tgts.append(torch.randint(4, VOCAB, (t,), generator=g))
            tokens += s + t + 1
        pad = nn.utils.rnn.pad_sequence
        src = pad(srcs, batch_first=True)
        tgt_in = pad([torch.cat([torch.tensor([1]), t]) for t in tgts], batch_first=True)
        tgt_out = pad([torch.cat([t, torch.tensor([2])]) for t in tgts], batch_first=True)
        batches.append((src, tgt_in, tgt_out))
    return batches


def real_tokens(batch) -> int:
    src, _, tgt_out = batch
    return int((src != 0).sum() + (tgt_out != 0).sum())


# --- the three systems ---------------------------------------------------------------------------


def qkv_model(shape: dict) -> nn.Module:
    cfg = ModelConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, dropout=0.1, **shape)
    return build_model(cfg)


def marian_model(shape: dict) -> nn.Module | None:
    try:
        from transformers import MarianConfig, MarianMTModel
    except ImportError:
        return None
    cfg = MarianConfig(
        vocab_size=VOCAB, d_model=shape["d_model"], encoder_layers=shape["n_encoder_layers"],
        decoder_layers=shape["n_decoder_layers"], encoder_attention_heads=shape["n_heads"],
        decoder_attention_heads=shape["n_heads"], encoder_ffn_dim=shape["d_ff"], decoder_ffn_dim=shape["d_ff"],
        activation_function="relu", max_position_embeddings=512, scale_embedding=True, dropout=0.1,
        attention_dropout=0.0, activation_dropout=0.1, pad_token_id=0, eos_token_id=2,
        decoder_start_token_id=1, bos_token_id=1,
    )
    model = MarianMTModel(cfg)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, src, tgt_in):
            return self.inner(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt_in,
                              decoder_attention_mask=tgt_in != 0).logits

    return Wrapped()


class TorchTransformer(nn.Module):
    """torch.nn.Transformer between qkv's embeddings and a tied output layer."""

    def __init__(self, shape: dict):
        super().__init__()
        cfg = ModelConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, dropout=0.1, **shape)
        self.src_embed, self.tgt_embed = Embeddings(VOCAB, cfg), Embeddings(VOCAB, cfg)
        self.core = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.n_encoder_layers, cfg.n_decoder_layers,
                                   cfg.d_ff, dropout=0.1, batch_first=True)
        self.lm_head = nn.Linear(cfg.d_model, VOCAB, bias=False)
        self.lm_head.weight = self.tgt_embed.token.weight

    def forward(self, src, tgt_in):
        t = tgt_in.size(1)
        causal = nn.Transformer.generate_square_subsequent_mask(t, dtype=torch.bool)
        h = self.core(self.src_embed(src), self.tgt_embed(tgt_in), tgt_mask=causal,
                      src_key_padding_mask=src == 0, tgt_key_padding_mask=tgt_in == 0,
                      memory_key_padding_mask=src == 0, tgt_is_causal=True)
        return self.lm_head(h)


# --- one training step -----------------------------------------------------------------------------


class Stepper:
    """The training step of qkv's trainer for any model mapping (src, tgt_in) to logits."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None):
        self.model = model.train()
        self.dtype = dtype
        if isinstance(model, (EncoderDecoder, DecoderOnly)):
            use_fast_dropout(model)                                    # as qkv's trainer does
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def __call__(self, batch) -> None:
        src, tgt_in, tgt_out = batch
        start, cpu_start = time.perf_counter(), time.process_time()
        autocast = torch.autocast("cpu", dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with autocast:
            logits = self.model(src, tgt_in)
        loss, _, n = label_smoothed_nll(logits, tgt_out, 0.1, 0)
        (loss / n).backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)


def useful_flops(shape: dict, batch) -> float:
    """Training FLOPs (forward + backward = 3x forward) of one batch on its real lengths."""
    d, ff, le, ld = shape["d_model"], shape["d_ff"], shape["n_encoder_layers"], shape["n_decoder_layers"]
    src_len = (batch[0] != 0).sum(1).double()
    tgt_len = (batch[2] != 0).sum(1).double()
    enc_params = le * (4 * d * d + 2 * d * ff)
    dec_params = ld * (8 * d * d + 2 * d * ff) + d * VOCAB
    linear = 2 * (enc_params * src_len.sum() + dec_params * tgt_len.sum())
    attention = 4 * d * (le * (src_len**2).sum() + ld * ((tgt_len**2).sum() / 2 + (tgt_len * src_len).sum()))
    return 3 * float(linear + attention)


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP per CPU-second of an n x n matmul in `dtype` (best of `repeats`), times the thread
    count: the machine's matmul limit when every thread is busy (process time, so other
    programs on the machine do not lower it)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * n**3 / best / 1e9 * torch.get_num_threads()


# --- the benchmark -----------------------------------------------------------------------------------


def bench_config(name: str, dtype: torch.dtype | None, steps: int, peak: float, equal_lengths: bool = False) -> dict:
    shape = CONFIGS[name]
    torch.manual_seed(0)
    systems = {"qkv": qkv_model(shape), "marian": marian_model(shape), "torch_nn_transformer": TorchTransformer(shape)}
    steppers = {k: Stepper(m, dtype) for k, m in systems.items() if m is not None}
    batches = make_batches(steps + 1, equal_lengths=equal_lengths)
    for batch in batches:                   # round robin: step 0 warms up every system
        for stepper in steppers.values():
            stepper(batch)
    tokens = statistics.mean(real_tokens(b) for b in batches[1:])
    flops = statistics.mean(useful_flops(shape, b) for b in batches[1:])
    rows = {}
    for key, stepper in steppers.items():
        median = statistics.median(stepper.times[1:])
        cpu = statistics.median(stepper.cpu_times[1:])
        rows[key] = {
            "tokens_per_s": round(tokens / median),
            "step_s": round(median, 4),
            "tokens_per_cpu_s": round(tokens / cpu),   # robust on a shared machine (all threads' CPU time)
            "mfu": round(flops / (cpu / torch.get_num_threads()) / 1e9 / peak, 3),
            "parameters": sum(p.numel() for p in systems[key].parameters()),
        }
    if "marian" in rows:
        rows["qkv_vs_marian"] = round(rows["qkv"]["tokens_per_s"] / rows["marian"]["tokens_per_s"], 2)
        rows["qkv_vs_marian_cpu"] = round(rows["qkv"]["tokens_per_cpu_s"] / rows["marian"]["tokens_per_cpu_s"], 2)
    else:
        rows["marian"] = "skipped: transformers is not installed (pip install 'qkv[bench]')"
    rows["tokens_per_batch"] = round(tokens)
    rows["padding_fraction"] = round(1 - tokens / statistics.mean(b[0].numel() + b[2].numel() for b in batches[1:]), 3)
    return rows


def main() -> None:
    kept = prepare_process()     # done by run_main, as for the qkv command (glibc keeps freed memory)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small config only, fewer steps")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per system and setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precisions", default="auto",
                        help="fp32, bf16 or fp32,bf16; auto: fp32, and bf16 where the CPU runs it natively "
                             "(without AVX-512 BF16/AMX, PyTorch emulates bf16 at a few GFLOP/s)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = parser.parse_args()
    if args.precisions == "auto":
        precisions = ["fp32", "bf16"] if cpu_has_fast_bf16() else ["fp32"]
    else:
        precisions = [p.strip() for p in args.precisions.split(",")]
    steps = args.steps or (3 if args.quick else 6)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = ["small"] if args.quick else ["small", "base"]

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {p: matmul_peak(dtypes[p]) for p in precisions}
    results = {
        "machine": {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_average_1min": _load(),
                    "keep_freed_memory": kept},
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "setup": {"vocab": VOCAB, "batch_tokens": BATCH_TOKENS, "sentence_lengths": [MIN_LEN, MAX_LEN],
                  "measured_steps": steps},
    }
    for name in configs:
        for precision in precisions:
            dtype = None if precision == "fp32" else dtypes[precision]
            results[f"{name}_{precision}"] = bench_config(name, dtype, steps, peaks[precision])
            print(f"{name} {precision}: {json.dumps(results[f'{name}_{precision}'])}", flush=True)
    # the padded systems' best case: no padding to skip (qkv's own length-bucketed Multi30k batches hold ~4%)
    results["small_fp32_equal_lengths"] = bench_config("small", None, steps, peaks.get("fp32") or matmul_peak(torch.float32),
                                                       equal_lengths=True)
    print(f"small fp32 equal lengths: {json.dumps(results['small_fp32_equal_lengths'])}", flush=True)
    results["machine"]["load_average_end"] = _load()
    text = json.dumps(results, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.out), (text + "\n").encode("utf-8"))


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(run_main(main))
