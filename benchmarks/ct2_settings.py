"""Why qkv's CTranslate2 export once ran 10-20x slower than a CT2 conversion of a Marian model: the
settings, not the model. CTranslate2 float32 and int8 on qkv's export of the small config, with
CTranslate2's own default threads (intra_threads=0, i.e. 4) and with 1 and 2 threads, with and
without CT2_USE_MKL=1 (which qkv used to set on import). CT2_USE_MKL is read once when the library
loads, so every setting runs in its own child process. Prints JSON and saves
benchmarks/results/ct2_settings.json with the machine.

    python benchmarks/ct2_settings.py            # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = [(mkl, threads) for mkl in (None, "1") for threads in (0, 1, 2)]


def child(model_dir: str, compute_type: str, threads: int) -> dict:
    import ctranslate2
    import torch

    from decode_speed import make_sources

    translator = ctranslate2.Translator(model_dir, device="cpu", compute_type=compute_type, intra_threads=threads)
    src = [[f"t{i}" for i in row] for row in make_sources(32).tolist()]
    out = {}
    for name, batch_size, n, beam in (("b1 greedy", 1, 4, 1), ("b32 greedy", 32, 32, 1), ("b32 beam4", 32, 32, 4)):
        run = lambda: [translator.translate_batch(src[i:i + batch_size], beam_size=beam, max_decoding_length=30,  # noqa: E731, B023  (called at once, in this iteration)
                                                  min_decoding_length=30) for i in range(0, n, batch_size)]  # noqa: B023
        run()
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        out[name] = round(n / best, 1)
    del torch
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ct2_settings.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return

    import torch

    from decode_speed import SMALL
    from qkv import ModelConfig, build_model
    from qkv.files import atomic_write_bytes
    from qkv.interop.ct2 import write_ct2
    from qkv.machine import describe

    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL)).eval()
    tmp = Path(tempfile.mkdtemp(prefix="qkv-ct2-settings-"))
    tokens = [f"t{i}" for i in range(SMALL["tgt_vocab_size"])]
    dirs = {"float32": write_ct2(model, tokens, tokens, tmp / "f32"), "int8": write_ct2(model, tokens, tokens, tmp / "int8", "int8")}
    rows = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    for compute_type, model_dir in dirs.items():
        for mkl, threads in SETTINGS:
            env = {k: v for k, v in os.environ.items() if k != "CT2_USE_MKL"} | ({"CT2_USE_MKL": mkl} if mkl else {})
            out = subprocess.run([sys.executable, __file__, "--child", str(model_dir), compute_type, str(threads)],
                                 env=env, capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
            rows.append(dict(compute_type=compute_type, CT2_USE_MKL=mkl, intra_threads=threads or "0 (CT2 default: 4)",
                             sentences_per_s=json.loads(out.stdout.strip().splitlines()[-1])))
            print(json.dumps(rows[-1]), flush=True)
    result = dict(benchmark="ct2_settings", config=SMALL, new_tokens=30, machine=describe(),
                  load_average_before=load_before, load_average_after=[round(x, 2) for x in os.getloadavg()],
                  results=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode("utf-8"))


if __name__ == "__main__":
    from qkv.entry import run_main

    sys.exit(run_main(main))
