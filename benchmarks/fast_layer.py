"""A/B of each speed-up of the fast layer (qkv.fast) against the paper path, on qkv's own workloads.

Each speed-up lives outside `qkv.model` and must pay on the work qkv really does; this script
measures each one against the paper path in one process (or two, for the allocator), interleaved
round by round, in CPU time of one thread (what other programs on a shared machine change least):

- decoding: `StepDecoder` steps through `qkv.fast.decoding.CachedSteps` vs the paper path's cached
  `model.decode` (fast=False). The small translation config (d_model 256, 3+3 layers, vocabulary
  8000), 25-token sources, 30 forced steps, batch 1 and 32 (unpadded sources, as one sentence or a
  length-sorted batch has), and batch 32 with padded sources.
- dropout: a training step (forward, qkv's loss, backward, AdamW) of the same model on
  length-bucketed batches like qkv's trainer makes (~4% padding, ~4,000 tokens), with torch's
  nn.Dropout vs `qkv.fast.dropout.FastDropout`.
- malloc: the same training steps in a child process with and without
  `qkv.fast.malloc.keep_freed_memory` (QKV_KEEP_FREED_MEMORY=0), alternating.
- muon: one Muon step (momentum, Newton-Schulz, update) over the hidden matrices of the recipes'
  models (Tiny Shakespeare: 28 matrices of 96x96/96x256; Multi30k: 64 of 128x128/128x256), with
  random gradients: `torch.optim.Muon` vs `qkv.fast.muon.FastMuon`, alternating.
- rmsnorm: a training step (forward, loss, backward; no optimizer) of two language models with
  RMSNorm, 16 blocks of 128 characters, bf16 autocast where the CPU runs it fast: the long Tiny
  Shakespeare recipe's model with QK-norm (an RMSNorm on every head's queries and keys) and the
  Llama-style recipe's model (RMSNorm in every sublayer), qkv's RMSNorm vs
  `qkv.fast.rmsnorm.FastRMSNorm`, alternating.

    python benchmarks/fast_layer.py                 # all five, about 4 minutes on 2 cores
    python benchmarks/fast_layer.py --only decoding

Prints JSON and saves benchmarks/results/fast_layer.json (with the machine it ran on); `--only`
replaces its own entry and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from qkv import ModelConfig, build_model
from qkv.entry import run_main
from qkv.files import atomic_write_bytes
from qkv.search import StepDecoder
from qkv.fast.dropout import use_fast_dropout
from qkv.fast.muon import FastMuon
from qkv.fast.rmsnorm import use_fast_rmsnorm
from qkv.machine import cpu_has_fast_bf16, cpu_name
from qkv.run import RunConfig
from qkv.training.loss import label_smoothed_nll
from qkv.training.optim import hidden_matrices

SMALL = dict(src_vocab_size=8000, tgt_vocab_size=8000, d_model=256, n_heads=4, n_encoder_layers=3,
             n_decoder_layers=3, d_ff=1024, max_len=256)


def small_model(dropout: float = 0.0):
    torch.manual_seed(0)
    return build_model(ModelConfig(**SMALL, dropout=dropout))


# --- decoding --------------------------------------------------------------------------------


def decode_steps(model, src: torch.Tensor, steps: int, fast: bool) -> float:
    """Seconds for `steps` forced decoding steps (the encoder excluded)."""
    with torch.inference_mode():
        memory, src_mask = model.encode(src)
        stepper = StepDecoder(model, memory, src_mask, fast=fast)
        ids = torch.full((src.size(0), 1), model.cfg.bos_id)
        start = time.process_time()
        for t in range(steps):
            stepper.step(ids)
            ids = torch.full_like(ids, 4 + t)
        return time.process_time() - start


def bench_decoding(repeats: int) -> dict:
    model = small_model().eval()
    g = torch.Generator().manual_seed(0)
    settings = {"b1": torch.randint(4, 8000, (1, 25), generator=g),
                "b32": torch.randint(4, 8000, (32, 25), generator=g)}
    padded = torch.randint(4, 8000, (32, 25), generator=g)
    padded[::2, 18:] = 0                                       # half the sentences 18 tokens long
    settings["b32_padded_sources"] = padded
    rows = {}
    for name, src in settings.items():
        times = {"paper": [], "fast": []}
        decode_steps(model, src, 5, True)                      # warm-up
        for _ in range(repeats):                               # interleaved
            for side in ("paper", "fast"):
                times[side].append(decode_steps(model, src, 30, side == "fast"))
        paper, fast = min(times["paper"]), min(times["fast"])
        rows[name] = {"paper_s": round(paper, 4), "fast_s": round(fast, 4), "speedup": round(paper / fast, 3)}
    return rows


# --- training steps --------------------------------------------------------------------------


def bucketed_batches(n: int, seed: int = 0, tokens: int = 4000) -> list[tuple[torch.Tensor, ...]]:
    """Batches like qkv's Seq2SeqBatches makes: sentences of nearly equal length (~4% padding)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        length = int(torch.randint(8, 24, (1,), generator=g))
        rows = tokens // (2 * (length + 1))
        lengths = length - torch.randint(0, 2, (rows,), generator=g)               # L or L - 1
        src = torch.randint(4, 8000, (rows, length), generator=g)
        tgt = torch.randint(4, 8000, (rows, length + 1), generator=g)
        for i, n_real in enumerate(lengths.tolist()):
            src[i, n_real:] = 0
            tgt[i, n_real + 1:] = 0
        tgt[:, 0] = 1
        batches.append((src, tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous()))
    return batches


class Steps:
    def __init__(self, fast_dropout: bool):
        self.model = small_model(dropout=0.1).train()
        if fast_dropout:
            use_fast_dropout(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)

    def __call__(self, batch) -> float:
        src, tgt_in, tgt_out = batch
        start = time.process_time()
        loss, _, n = label_smoothed_nll(self.model(src, tgt_in), tgt_out, 0.1, 0)
        (loss / n).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.process_time() - start


def bench_dropout(steps: int) -> dict:
    sides = {"paper": Steps(False), "fast": Steps(True)}
    batches = bucketed_batches(steps + 1)
    times = {k: [] for k in sides}
    for batch in batches:
        for k, run in sides.items():
            times[k].append(run(batch))
    paper, fast = statistics.median(times["paper"][1:]), statistics.median(times["fast"][1:])
    tokens = statistics.mean(int((b[0] != 0).sum() + (b[2] != 0).sum()) for b in batches)
    padding = 1 - tokens / statistics.mean(b[0].numel() + b[2].numel() for b in batches)
    return {"paper_step_s": round(paper, 4), "fast_step_s": round(fast, 4), "speedup": round(paper / fast, 3),
            "tokens_per_batch": round(tokens), "padding_fraction": round(padding, 3)}


def child_steps(steps: int) -> None:
    """In a child process (run_main kept freed memory unless QKV_KEEP_FREED_MEMORY=0): time steps."""
    run = Steps(True)
    times = [run(b) for b in bucketed_batches(steps + 1)]
    print(json.dumps(statistics.median(times[1:])))


def bench_malloc(steps: int, rounds: int) -> dict:
    times = {"paper": [], "fast": []}
    for _ in range(rounds):
        for side in ("paper", "fast"):
            env = {**os.environ, "QKV_KEEP_FREED_MEMORY": "1" if side == "fast" else "0"}
            out = subprocess.run([sys.executable, __file__, "--child", str(steps), "--threads",
                                  str(torch.get_num_threads())], env=env, check=True, capture_output=True, text=True)
            times[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    paper, fast = min(times["paper"]), min(times["fast"])
    return {"paper_step_s": round(paper, 4), "fast_step_s": round(fast, 4), "speedup": round(paper / fast, 3),
            "applies": platform.libc_ver()[0] == "glibc"}


# --- muon ------------------------------------------------------------------------------------

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
RECIPE_CONFIGS = {name: RECIPES_DIR / f"{file}.toml"
                  for name, file in (("shakespeare", "shakespeare_char"), ("multi30k", "multi30k_de_en"))}
RMSNORM_CONFIGS = {"shakespeare-long-qk-norm": (RECIPES_DIR / "shakespeare_char_long.toml", {"qk_norm": True}),
                   "llama-char": (RECIPES_DIR / "llama_char.toml", {})}


def recipe_model(path: Path, **changes):
    """The recipe's model as its TOML builds it (vocabulary: 65 characters, or the 8,000 BPE tokens),
    with `changes` to its model section."""
    config = RunConfig.parse(path)
    if config.data.kind == "lm":
        sizes = {"arch": "decoder-only", "src_vocab_size": 0, "tgt_vocab_size": 65}
    else:
        sizes = {"src_vocab_size": config.data.vocab_size, "tgt_vocab_size": config.data.vocab_size}
    return build_model(ModelConfig.from_dict({**config.model, **sizes, **changes}))


def bench_muon(steps: int) -> dict:
    out = {}
    for name in RECIPE_CONFIGS:
        torch.manual_seed(0)
        model = recipe_model(RECIPE_CONFIGS[name])
        named = dict(model.named_parameters())
        sides = {}
        for side, kind in (("paper", torch.optim.Muon), ("fast", FastMuon)):
            params = [torch.nn.Parameter(named[n].detach().clone()) for n in hidden_matrices(model)]
            sides[side] = (params, kind(params, lr=0.02, momentum=0.95, weight_decay=0.0))
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(steps + 2):
            grads = [torch.randn_like(p) for p in sides["paper"][0]]
            for side, (params, optim) in sides.items():
                for p, g in zip(params, grads):
                    p.grad = g
                start = time.process_time()
                optim.step()
                times[side].append(time.process_time() - start)
        paper, fast = statistics.median(times["paper"][2:]), statistics.median(times["fast"][2:])
        shapes = sorted({tuple(p.shape) for p in sides["paper"][0]})
        out[name] = {"matrices": len(sides["paper"][0]), "shapes": [list(s) for s in shapes],
                     "paper_step_s": round(paper, 5), "fast_step_s": round(fast, 5), "speedup": round(paper / fast, 2)}
    return out


def bench_rmsnorm(steps: int) -> dict:
    out = {}
    autocast = cpu_has_fast_bf16()
    for name, (path, changes) in RMSNORM_CONFIGS.items():
        sides = {}
        for side in ("paper", "fast"):
            torch.manual_seed(0)
            model = recipe_model(path, dropout=0.0, **changes).train()   # no dropout: the norms alone differ
            swapped = use_fast_rmsnorm(model) if side == "fast" else 0
            sides[side] = (model, swapped)
        g = torch.Generator().manual_seed(0)
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(steps + 2):
            ids = torch.randint(0, 65, (16, 129), generator=g)
            for side, (model, _) in sides.items():
                start = time.process_time()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    logits = model(ids[:, :-1])
                torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()).backward()
                model.zero_grad(set_to_none=True)
                times[side].append(time.process_time() - start)
        paper, fast = statistics.median(times["paper"][2:]), statistics.median(times["fast"][2:])
        out[name] = {"rmsnorms": sides["fast"][1], "bf16_autocast": autocast, "paper_step_s": round(paper, 4),
                     "fast_step_s": round(fast, 4), "speedup": round(paper / fast, 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["decoding", "dropout", "malloc", "muon", "rmsnorm"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steady on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fast_layer.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child_steps(args.child)
        return
    steps, repeats = (4, 2) if args.quick else (8, 3)
    result = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "fast_bf16": cpu_has_fast_bf16(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")},
        "note": "speedup = paper path time / fast layer time, interleaved in one sitting",
    }
    if args.only in (None, "decoding"):
        result["decoding_30_steps"] = bench_decoding(repeats)
    if args.only in (None, "dropout"):
        result["train_step_dropout"] = bench_dropout(steps * 2)
    if args.only in (None, "malloc"):
        result["train_step_malloc"] = bench_malloc(steps, repeats - 1)
    if args.only in (None, "muon"):
        result["muon_step"] = bench_muon(steps * 10)
    if args.only in (None, "rmsnorm"):
        result["train_step_rmsnorm"] = bench_rmsnorm(steps * 2)
    print(json.dumps(result, indent=2))
    if args.only and Path(args.out).is_file():      # keep the other entries; this one says its machine and date
        kept = json.loads(Path(args.out).read_text(encoding="utf-8"))
        result = {**kept, **{k: {**v, "machine": result["machine"]} for k, v in result.items() if k not in ("machine", "note")}}
    text = json.dumps(result, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.out), (text + "\n").encode("utf-8"))


if __name__ == "__main__":
    sys.exit(run_main(main))
