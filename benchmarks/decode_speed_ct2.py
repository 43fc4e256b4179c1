"""Decoding speed side by side: qkv, HF generate, CTranslate2 float32 and int8 on qkv's export, and
CTranslate2 on the Hugging Face Marian conversion of the same weights (so an export problem shows).

The small config of decode_speed.py (d_model 256, 3+3 layers, 4 heads, d_ff 1024, vocab 8000) with
random weights; the HF model is qkv's own Marian export of them (`qkv.interop.hf.to_hf`), and
"ct2-marian" is that Marian model converted by CTranslate2's own Transformers loader (what
`ct2-transformers-converter` writes; it drops Marian's last vocabulary row, so sources use ids
below 7999). Every output is forced to exactly N new tokens (CTranslate2: min = max decoding
length; qkv and HF: <eos> suppressed until N), batch 1 and 32, greedy and beam 4, 30 and 50 tokens.

On CPUs with native bf16 (qkv.machine.cpu_has_fast_bf16) "qkv-bf16" is qkv's own decoding of a bf16
copy of the model (qkv.fast.bf16), the same search code. On x86 CPUs that are not Intel's
"qkv-onednn" is qkv's decoding with the linears multiplied by oneDNN instead of MKL (qkv.fast.onednn;
same fp32 arithmetic, same tokens).

Each system runs at every thread setting in THREADS (torch threads for qkv and HF, intra_threads
for CTranslate2), all interleaved within each repeat so a busy machine hits every system alike;
a row keeps the best of the repeats, and `best` keeps each system's best thread setting (stated).
Prints JSON rows and a summary with the goals of issue 21; saves benchmarks/results/decode_speed_ct2.json
with the machine (`qkv.machine.describe`) and the load average before and after.

    python benchmarks/decode_speed_ct2.py            # about 2-4 minutes on 2 CPU cores
    python benchmarks/decode_speed_ct2.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from decode_speed import SMALL, SRC_LEN, make_sources, qkv_runner
from qkv import ModelConfig, build_model
from qkv.entry import run_main
from qkv.files import atomic_write_bytes
from qkv.interop.ct2 import write_ct2
from qkv.search.ct2 import require_ctranslate2
from qkv.machine import cpu_has_fast_bf16, describe

THREADS = (1, 2)
CT2_SYSTEMS = ("ct2-float32", "ct2-int8", "ct2-marian-float32", "ct2-marian-int8")


def marian_ct2(hf, tokens: list[str], out: Path, quantize: str | None) -> None:
    """The HF Marian model converted by CTranslate2's own loader (as ct2-transformers-converter does)."""
    from ctranslate2.converters.transformers import MarianMTLoader

    spec = MarianMTLoader().get_model_spec(hf)      # drops the last vocabulary row (Marian's <pad>)
    rows = spec.decoder.projection.weight.shape[0]
    spec.register_source_vocabulary(tokens[:rows])
    spec.register_target_vocabulary(tokens[:rows])
    config = spec.config
    config.bos_token, config.eos_token, config.unk_token = tokens[1], tokens[2], tokens[3]
    config.decoder_start_token = tokens[2]           # Marian starts from a zero embedding (any token)
    spec.validate()
    spec.optimize(quantization=quantize)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))


def ct2_models(model, hf, tmp: Path) -> dict[str, Path]:
    tokens = [f"t{i}" for i in range(model.cfg.tgt_vocab_size)]
    dirs = {name: tmp / name for name in CT2_SYSTEMS}
    write_ct2(model, tokens, tokens, dirs["ct2-float32"])
    write_ct2(model, tokens, tokens, dirs["ct2-int8"], "int8")
    marian_ct2(hf, tokens, dirs["ct2-marian-float32"], None)
    marian_ct2(hf, tokens, dirs["ct2-marian-int8"], "int8")
    return dirs


def ct2_runner(translator, new_tokens: int, beam: int):
    def run(src: torch.Tensor):
        batch = [[f"t{i}" for i in row] for row in src.tolist()]
        return translator.translate_batch(batch, beam_size=beam, max_decoding_length=new_tokens,
                                          min_decoding_length=new_tokens, length_penalty=0.0)
    return run


def hf_runner(hf, new_tokens: int, beam: int):
    def run(src: torch.Tensor):
        with torch.inference_mode():
            return hf.generate(src, attention_mask=torch.ones_like(src), num_beams=beam, do_sample=False,
                               max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    return run


def with_torch_threads(fn, threads: int):
    def run(src: torch.Tensor):
        torch.set_num_threads(threads)
        return fn(src)
    return run


def time_once(fn, batches: list[torch.Tensor]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        fn(batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 tokens only, one repeat")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (best kept)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decode_speed_ct2.json"))
    args = parser.parse_args()
    ctranslate2 = require_ctranslate2()
    import transformers

    from qkv.interop.hf import to_hf

    transformers.logging.set_verbosity_error()      # generate() warns on every call that max_new_tokens wins

    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL)).eval()
    hf = to_hf(model).eval()
    from qkv.fast.onednn import onednn_model, onednn_pays

    model_onednn = onednn_model(model) if onednn_pays() else None
    model16 = None
    if cpu_has_fast_bf16():
        from qkv.fast.bf16 import bf16_model

        model16 = bf16_model(model)
    dirs = ct2_models(model, hf, Path(tempfile.mkdtemp(prefix="qkv-ct2-bench-")))
    translators = {(name, t): ctranslate2.Translator(str(d), device="cpu", compute_type="int8" if "int8" in name
                                                     else "float32", intra_threads=t)
                   for name, d in dirs.items() for t in THREADS}
    compute_types = {name: translators[(name, THREADS[0])].compute_type for name in CT2_SYSTEMS}
    lengths = (30,) if args.quick else (30, 50)
    repeats = 1 if args.quick else args.repeats
    n_sent = {1: 4, 32: 32}
    rows = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    for new_tokens in lengths:
        for batch_size, n in n_sent.items():
            batches = list(make_sources(n).clamp(max=SMALL["tgt_vocab_size"] - 2).split(batch_size))
            for beam in (1, 4):
                systems = {}
                for t in THREADS:
                    systems[("qkv", t)] = with_torch_threads(qkv_runner(model, new_tokens, beam, True), t)
                    if model_onednn is not None:
                        systems[("qkv-onednn", t)] = with_torch_threads(qkv_runner(model_onednn, new_tokens, beam, True), t)
                    if model16 is not None:
                        systems[("qkv-bf16", t)] = with_torch_threads(qkv_runner(model16, new_tokens, beam, True), t)
                    systems[("hf-generate", t)] = with_torch_threads(hf_runner(hf, new_tokens, beam), t)
                    for name in CT2_SYSTEMS:
                        systems[(name, t)] = ct2_runner(translators[(name, t)], new_tokens, beam)
                for fn in systems.values():
                    fn(batches[0][:2])                              # warm up
                best = {key: (float("inf"), float("inf")) for key in systems}
                for _ in range(repeats):                            # interleaved: a busy machine hits all alike
                    for key, fn in systems.items():
                        wall, cpu = time_once(fn, batches)
                        best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
                for (name, t), (wall, cpu) in best.items():
                    rows.append(dict(system=name, threads=t, search="greedy" if beam == 1 else f"beam{beam}",
                                     batch_size=batch_size, new_tokens=new_tokens, sentences=n,
                                     seconds=round(wall, 4), sentences_per_s=round(n / wall, 1),
                                     tokens_per_s=round(n * new_tokens / wall, 1), cpu_seconds=round(cpu, 4)))
                    print(json.dumps(rows[-1]), flush=True)
    torch.set_num_threads(max(THREADS))
    result = dict(
        benchmark="decode_speed_ct2", config=SMALL, source_length=SRC_LEN, quick=args.quick, repeats=repeats,
        machine=describe(), thread_settings=list(THREADS), ct2_compute_types=compute_types,
        load_average_before=load_before, load_average_after=[round(x, 2) for x in os.getloadavg()],
        seconds=round(time.perf_counter() - start, 1), results=rows,
    )
    result["best"] = best_rows(rows)
    result["goals"] = goals(result["best"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    print(json.dumps({"best": result["best"], "goals": result["goals"]}, indent=2))


def best_rows(rows: list[dict]) -> dict[str, dict[str, list]]:
    """Per setting, each system's best thread setting: {setting: {system: [sentences/s, threads]}}."""
    out: dict[str, dict[str, list]] = {}
    for r in rows:
        setting = f"b{r['batch_size']} {r['search']} {r['new_tokens']} tokens"
        cell = out.setdefault(setting, {}).get(r["system"])
        if cell is None or r["sentences_per_s"] > cell[0]:
            out[setting][r["system"]] = [r["sentences_per_s"], r["threads"]]
    return out


def goals(best: dict[str, dict[str, list]]) -> dict[str, dict[str, object]]:
    """Issue 21's goals per setting: qkv >= 1.5x HF generate; qkv >= 0.8x (batch 32) or 0.5x (batch 1)
    the best CTranslate2 float32; qkv's CT2 export as fast as the Marian conversion (>= 0.9x: noise)."""
    out = {}
    for setting, s in best.items():
        speed = {name: v[0] for name, v in s.items()}
        ct2_f32 = max(speed["ct2-float32"], speed["ct2-marian-float32"])
        need = 0.8 if setting.startswith("b32") else 0.5
        ratios = {
            "qkv / hf-generate": round(speed["qkv"] / speed["hf-generate"], 2),
            "qkv / best ct2 float32": round(speed["qkv"] / ct2_f32, 2),
            "export / marian, float32": round(speed["ct2-float32"] / speed["ct2-marian-float32"], 2),
            "export / marian, int8": round(speed["ct2-int8"] / speed["ct2-marian-int8"], 2),
        }
        if "qkv-onednn" in speed:
            ratios["qkv-onednn / hf-generate"] = round(speed["qkv-onednn"] / speed["hf-generate"], 2)
            ratios["qkv-onednn / best ct2 float32"] = round(speed["qkv-onednn"] / ct2_f32, 2)
        if "qkv-bf16" in speed:
            ratios["qkv-bf16 / hf-generate"] = round(speed["qkv-bf16"] / speed["hf-generate"], 2)
            ratios["qkv-bf16 / best ct2 float32"] = round(speed["qkv-bf16"] / ct2_f32, 2)
        out[setting] = dict(ratios, met={
            "qkv >= 1.5x hf": ratios["qkv / hf-generate"] >= 1.5,
            f"qkv >= {need}x ct2 float32": ratios["qkv / best ct2 float32"] >= need,
            "export as fast as marian": min(ratios["export / marian, float32"], ratios["export / marian, int8"]) >= 0.9,
        })
    return out


if __name__ == "__main__":
    sys.exit(run_main(main))
