"""Data pipeline numbers on Multi30k (de-en): BPE training time, vocabulary, batching padding.

    python benchmarks/data_stats.py [--data ../shared/data/multi30k] > benchmarks/results/data_stats.json

For each BPE vocabulary size: the time to train one joint de+en tokenizer on the 29,000 training
pairs, the vocabulary it ends with, the time to encode both sides, and the batches of one epoch
at a 4096-token budget (padding fraction = padding positions / all positions of src + tgt_out).
Timings are the best of `--repeat` runs, since a shared machine disturbs single runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import tokenizers
import torch

from qkv.data import Batch, ParallelText, Seq2SeqBatches, load_split
from qkv.entry import run_main
from qkv.tokenizers import train_tokenizer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def timed(fn, repeat: int):
    """fn()'s result and its best wall time over `repeat` runs (the least disturbed one)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def padding_stats(batches: list[Batch]) -> dict[str, float]:
    real_src = sum(b.n_src_tokens for b in batches)
    real_tgt = sum(b.n_tgt_tokens for b in batches)
    all_src = sum(b.src.numel() for b in batches)
    all_tgt = sum(b.tgt_out.numel() for b in batches)
    return {
        "padding_fraction": round(1 - (real_src + real_tgt) / (all_src + all_tgt), 4),
        "padding_fraction_src": round(1 - real_src / all_src, 4),
        "padding_fraction_tgt": round(1 - real_tgt / all_tgt, 4),
    }


def measure(pairs: ParallelText, vocab_size: int, max_tokens: int, repeat: int) -> dict:
    texts = pairs.src + pairs.tgt
    tok, train_s = timed(lambda: train_tokenizer("bpe", texts, vocab_size=vocab_size), repeat)
    (src, tgt), encode_s = timed(lambda: (tok.encode_batch(pairs.src), tok.encode_batch(pairs.tgt)), repeat)
    data = Seq2SeqBatches(src, tgt, max_tokens=max_tokens, seed=0)
    plan, plan_s = timed(lambda: data.batches_for_epoch(0), repeat)
    batches, collate_s = timed(lambda: [data.collate(i) for i in plan], repeat)
    return {
        "requested_vocab_size": vocab_size,
        "vocab_size": tok.vocab_size,
        "train_seconds": round(train_s, 3),
        "encode_seconds": round(encode_s, 3),
        "mean_tokens_src": round(float(np.mean([len(s) for s in src])), 2),
        "mean_tokens_tgt": round(float(np.mean([len(t) for t in tgt])), 2),
        "max_tokens": max_tokens,
        "batches_per_epoch": len(batches),
        "mean_sentences_per_batch": round(len(src) / len(batches), 1),
        "plan_seconds_per_epoch": round(plan_s, 4),
        "collate_seconds_per_epoch": round(collate_s, 4),
        **padding_stats(batches),
        "eval_padding_fraction": padding_stats(list(data.eval_batches()))["padding_fraction"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with train.de/train.en")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[8000, 10000])
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    args = parser.parse_args()

    pairs = load_split(args.data, "train", "de", "en")
    results = {
        "data": f"multi30k train de-en ({len(pairs)} pairs), joint byte-level BPE",
        "timing": f"best of {args.repeat} runs",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "tokenizers": tokenizers.__version__,
                    "load_average_1m": round(os.getloadavg()[0], 1)},  # other work slows timings
        "runs": [measure(pairs, v, args.max_tokens, args.repeat) for v in args.vocab_sizes],
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(run_main(main))
