"""Decoding speed on CTranslate2 (float32 and int8) next to qkv, in the setting of decode_speed.py.

The same small config with random weights, the same sources, every output forced to exactly N new
tokens (CTranslate2: min_decoding_length = max_decoding_length = N), batch 1 and 32, greedy and
beam 4. Prints JSON rows and saves benchmarks/results/decode_speed_ct2.json, with the load average
before and after (on a shared machine other processes distort the timings: compare within one run).

    python benchmarks/decode_speed_ct2.py            # a few minutes on 2 CPU cores
    python benchmarks/decode_speed_ct2.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from decode_speed import SMALL, SRC_LEN, make_sources, qkv_runner, timed
from qkv import ModelConfig, build_model
from qkv.interop.ct2 import require_ctranslate2, write_ct2
from qkv.fast.malloc import keep_freed_memory


def ct2_translator(model, quantize: str | None, out: Path):
    """Export `model` with fake token strings t0..tN and load it in a CTranslate2 Translator."""
    ctranslate2 = require_ctranslate2()
    tokens = [f"t{i}" for i in range(model.cfg.tgt_vocab_size)]
    write_ct2(model, tokens, tokens, out, quantize)
    return ctranslate2.Translator(str(out), device="cpu", compute_type=quantize or "float32"), tokens


def ct2_runner(translator, tokens: list[str], new_tokens: int, beam: int):
    def run(src: torch.Tensor):
        batch = [[tokens[i] for i in row] for row in src.tolist()]
        return translator.translate_batch(batch, beam_size=beam, max_decoding_length=new_tokens,
                                          min_decoding_length=new_tokens, length_penalty=0.0)
    return run


def main() -> None:
    keep_freed_memory()          # as the qkv command does (glibc keeps freed memory: no page faults)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sentences and settings")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decode_speed_ct2.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL)).eval()
    tmp = Path(tempfile.mkdtemp(prefix="qkv-ct2-bench-"))
    engines = {name: ct2_translator(model, q, tmp / name) for name, q in (("ct2-float32", None), ("ct2-int8", "int8"))}
    lengths = (30,) if args.quick else (30, 50)
    n_sent = {1: 4 if args.quick else 10, 32: 32 if args.quick else 64}
    repeats = 1 if args.quick else 2
    rows = []
    load_before = round(os.getloadavg()[0], 1)
    for new_tokens in lengths:
        for batch_size, n in n_sent.items():
            batches = list(make_sources(n).split(batch_size))
            for beam in (1, 4):
                systems = {"qkv": qkv_runner(model, new_tokens, beam, True)}
                for name, (translator, tokens) in engines.items():
                    systems[name] = ct2_runner(translator, tokens, new_tokens, beam)
                for name, fn in systems.items():
                    seconds = timed(fn, batches, repeats)
                    rows.append(dict(system=name, search="greedy" if beam == 1 else f"beam{beam}",
                                     batch_size=batch_size, new_tokens=new_tokens, sentences=n,
                                     seconds=round(seconds, 3), sentences_per_s=round(n / seconds, 1),
                                     tokens_per_s=round(n * new_tokens / seconds, 1)))
                    print(json.dumps(rows[-1]), flush=True)
    result = dict(benchmark="decode_speed_ct2", config=SMALL, source_length=SRC_LEN, quick=args.quick,
                  torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                  load_average_1m=[load_before, round(os.getloadavg()[0], 1)],   # other work slows timings
                  results=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
