"""Decoding speed: qkv with and without the key/value cache, and Hugging Face MarianMTModel.generate.

The small config (d_model 256, 3+3 layers, 4 heads, d_ff 1024, vocab 8000) with random weights.
Every output is forced to exactly N new tokens (<eos> suppressed until N, stopped at N), so every
system does the same number of steps. Systems are timed in turn, best of the repeats, in wall-clock
and in CPU time (steadier on a machine shared with other jobs; with --threads 1 it is the work done). Prints JSON and saves benchmarks/results/decode_speed.json.

    python benchmarks/decode_speed.py --threads 1            # about 6 minutes on 2 CPU cores
    python benchmarks/decode_speed.py --threads 1 --quick    # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from qkv import ModelConfig, build_model
from qkv.entry import prepare_process, run_main
from qkv.files import atomic_write_bytes
from qkv.search import DecodeConfig, translate_ids

SMALL = dict(d_model=256, n_heads=4, n_encoder_layers=3, n_decoder_layers=3, d_ff=1024,
             src_vocab_size=8000, tgt_vocab_size=8000, dropout=0.0, max_len=512)
SRC_LEN = 25


def make_sources(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, SMALL["src_vocab_size"], (n, SRC_LEN), generator=g)


def timed(fn, batches: list[torch.Tensor], repeats: int, warmup: bool = True) -> float:
    """Best-of-`repeats` seconds to run fn over every batch (after one warm-up batch)."""
    if warmup:
        fn(batches[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        best = min(best, time.perf_counter() - start)
    return best


def qkv_runner(model, new_tokens: int, beam: int, use_cache: bool):
    dcfg = DecodeConfig(beam_size=beam, length_penalty=0.0, max_len_a=0.0, max_len_b=new_tokens,
                        min_len=new_tokens, use_cache=use_cache)
    return lambda src: translate_ids(model, src, dcfg)


def hf_model(model):
    """A MarianMTModel with the same architecture (random weights: only the speed matters)."""
    from transformers import MarianConfig, MarianMTModel

    cfg = model.cfg
    hf_cfg = MarianConfig(
        vocab_size=cfg.tgt_vocab_size, d_model=cfg.d_model, encoder_layers=cfg.n_encoder_layers,
        decoder_layers=cfg.n_decoder_layers, encoder_attention_heads=cfg.n_heads,
        decoder_attention_heads=cfg.n_heads, encoder_ffn_dim=cfg.d_ff, decoder_ffn_dim=cfg.d_ff,
        activation_function="relu", max_position_embeddings=cfg.max_len, scale_embedding=True,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=cfg.pad_id, eos_token_id=cfg.eos_id, decoder_start_token_id=cfg.bos_id,
        bos_token_id=cfg.bos_id, forced_eos_token_id=None,
    )
    return MarianMTModel(hf_cfg).eval()


def hf_runner(model, new_tokens: int, beam: int):
    def run(src):
        with torch.inference_mode():
            return model.generate(src, attention_mask=torch.ones_like(src), num_beams=beam, do_sample=False,
                                  max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    return run


def main() -> None:
    kept = prepare_process()     # done by run_main, as for the qkv command (glibc keeps freed memory)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sentences and settings (under a minute)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decode_speed.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL)).eval()
    try:
        hf = hf_model(model)
    except ImportError:
        hf = None
    lengths = (50,) if args.quick else (30, 50)
    n_sent = {1: 3 if args.quick else 6, 32: 32}
    repeats = 1 if args.quick else 3
    rows = []
    for new_tokens in lengths:
        for batch_size, n in n_sent.items():
            batches = list(make_sources(n).split(batch_size))
            for beam in (1, 4):
                systems = {"qkv": qkv_runner(model, new_tokens, beam, True),
                           "qkv-no-cache": qkv_runner(model, new_tokens, beam, False)}
                if hf is not None:
                    systems["hf-generate"] = hf_runner(hf, new_tokens, beam)
                for fn in systems.values():
                    fn(batches[0][:2])                              # warm up
                best = {name: (float("inf"), float("inf")) for name in systems}
                for _ in range(repeats):                            # interleaved: a busy machine hits all alike
                    for name, fn in systems.items():
                        cpu = time.process_time()
                        wall = timed(fn, batches, 1, warmup=False)
                        cpu = time.process_time() - cpu
                        best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
                for name, (seconds, cpu) in best.items():
                    rows.append(dict(system=name, search="greedy" if beam == 1 else f"beam{beam}",
                                     batch_size=batch_size, new_tokens=new_tokens, sentences=n,
                                     seconds=round(seconds, 3), sentences_per_s=round(n / seconds, 1),
                                     tokens_per_s=round(n * new_tokens / seconds, 1), cpu_seconds=round(cpu, 3),
                                     sentences_per_cpu_s=round(n / cpu, 1)))
                    print(json.dumps(rows[-1]), flush=True)
    result = dict(
        benchmark="decode_speed", config=SMALL, source_length=SRC_LEN, quick=args.quick,
        torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(), keep_freed_memory=kept,
        load_average_at_end=[round(x, 1) for x in os.getloadavg()],
        hf_note=None if hf is not None else "transformers is not installed (pip install 'qkv[bench]'); HF skipped",
        results=rows, speedups=speedups(rows), speedups_cpu_time=speedups(rows, "sentences_per_cpu_s"),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    print(json.dumps({"wall clock": result["speedups"], "CPU time": result["speedups_cpu_time"]}, indent=2))


def speedups(rows: list[dict], key: str = "sentences_per_s") -> dict[str, float]:
    """qkv (cached) speed divided by qkv without the cache and by HF generate, per setting."""
    by_key = {(r["system"], r["search"], r["batch_size"], r["new_tokens"]): r[key] for r in rows}
    out = {}
    for (system, search, bs, n), speed in by_key.items():
        if system != "qkv":
            continue
        for other in ("qkv-no-cache", "hf-generate"):
            if (other, search, bs, n) in by_key:
                out[f"vs {other}, {search}, batch {bs}, {n} tokens"] = round(speed / by_key[(other, search, bs, n)], 2)
    return out


if __name__ == "__main__":
    sys.exit(run_main(main))
