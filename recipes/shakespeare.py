"""Tiny Shakespeare, character level: train a small GPT on the CPU, measure it, sample from it.

    python recipes/shakespeare.py                  # recipes/shakespeare_char.toml -> runs/shakespeare-char
    python recipes/shakespeare.py --config long    # recipes/shakespeare_char_long.toml -> runs/shakespeare-char-long
    python recipes/shakespeare.py --config llama   # recipes/llama_char.toml (a Llama) -> runs/llama-char
    python recipes/shakespeare.py --data DIR       # DIR/input.txt instead of ../shared/data/tinyshakespeare
    python recipes/shakespeare.py --set train.steps=100 --out /tmp/quick   # any config override (a fixed train.steps: no probe)
    python recipes/shakespeare.py --no-probe       # the config's train.steps (2950, the AVX2 machine's), not the probe's
    python recipes/shakespeare.py --steps 4100     # exactly 4100 steps, no probe
    python recipes/shakespeare.py --processes 1    # one process (default: 2 DDP processes on 2+ CPU cores)
    torchrun --nproc_per_node 2 recipes/shakespeare.py --set train.batch_tokens=2048   # the same as the default, by hand

The budget is the config's `train.max_minutes` (5 minutes; long: 60). Before training, a speed
probe of under 20 s times this run's own steps on this machine (after untimed warm-up steps), a
validation and a checkpoint, and sets `train.steps` so that training ends near 95% of the budget,
with the cosine schedule built for that count: a faster machine trains more steps, a busy one
fewer but with its whole schedule (qkv.training.probe). The budget stays as a safety net. The long
config plans at most ten passes over the text (`train.max_passes`): past them it overfits, so a
machine fast enough for more ends early.
`--no-probe` trains the config's `train.steps` instead, to reproduce a fixed run.

The first 90% of the characters train, the last 10% validate (nanoGPT's split). The validation
loss is the mean negative log-likelihood (nats per character) over *every* character of the
validation split, read in consecutive non-overlapping blocks of `block_size` characters (a
character at offset i of its block sees the i characters before it; the last partial block is
left out). nanoGPT averages 200 random blocks instead; both average over all offsets in a block
alike, so the two estimate the same number. Bits per character = loss / ln 2.

Writes OUT/results.json (and prints it): the validation loss and bits/char of the saved (best)
weights, training time (every session of a resumed run), steps, tokens/s, the speed probe (its seconds, steps/s, the chosen steps,
the budget, the CPU), the machine (CPU, cores, threads, load average, torch version) and a few
samples generated with the KV cache from a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from qkv.entry import entry_point, run_distributed
from qkv.files import atomic_write_bytes
from qkv.run import RunDir

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"short": "shakespeare_char.toml", "long": "shakespeare_char_long.toml", "llama": "llama_char.toml"}
PROMPTS = ("ROMEO:", "KING HENRY:\nMy lord,", "\n")
WORLD_RANK, WORLD_SIZE = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))   # torchrun's


@entry_point
def main(argv: list[str] | None = None) -> int:
    from qkv.training.distributed import default_processes

    args = parse_args(argv)
    processes = args.processes if args.processes is not None else default_processes()
    argv = sys.argv[1:] if argv is None else argv
    return run_distributed(processes, lambda: launch_command(processes, args, argv, check_data=True), lambda: run_recipe(args))  # bad input: one line, before any rank


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train and measure the Tiny Shakespeare character-level GPT.")
    p.add_argument("--config", default="short", help="short, long, llama, or a TOML file (default: short)")
    p.add_argument("--data", type=Path, help="directory holding input.txt (or the file itself)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/ and the config file name, e.g. runs/shakespeare-char)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override, repeatable, e.g. --set train.steps=200")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-probe", action="store_true",
                   help="train the config's train.steps (e.g. to reproduce a fixed run) instead of the steps a "
                        "speed probe (under 20 s) fits to 95%% of train.max_minutes on this machine")
    p.add_argument("--steps", type=_count(1, 10**9), metavar="N", help="train exactly this many steps, no probe "
                   "(--no-probe --set train.steps=N)")
    p.add_argument("--processes", type=int, default=None,
                   help="training processes (DDP over gloo, the CPU cores shared out as threads); the config's "
                        "batch_tokens stays the global batch. Default: 2 on a CPU with 2 or more cores, else 1")
    p.add_argument("--samples", type=_count(0, 100), default=3, help="samples to generate, 0-100 (default 3)")
    p.add_argument("--sample-tokens", type=_count(1, 100_000), default=300,
                   help="characters per sample, 1-100000 (default 300)")
    return p.parse_args(argv)


def _count(low: int, high: int):
    """An argparse type: an integer in [low, high] (argparse prints the one-line usage error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return parse


def launch_command(processes: int, args: argparse.Namespace, argv: list[str], check_data: bool = False) -> list[str]:
    """This script again under torchrun (--standalone: one machine). batch_tokens (the config's,
    or the user's --set) is the global batch: each rank is given its share. The config (and with
    `check_data` the data file, and the budget the speed probe fills) is checked first, so a mistake
    is one line, not one per rank."""
    from qkv.run import RunConfig
    from qkv.training.distributed import local_launch_command
    from qkv.training.probe import checked_fill, recipe_fill

    config = RunConfig.parse(config_file(args.config), recipe_overrides(args))
    if check_data:
        data_file(args.data, config.data.train_text)
    if not args.resume:
        checked_fill(recipe_fill(recipe_overrides(args), args.no_probe), config.train.max_minutes)
    return local_launch_command(str(Path(__file__).resolve()), argv, processes, config.train.batch_tokens)


def run_recipe(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train (or resume), then evaluate and sample; write OUT/results.json; return the results
    (None on DDP ranks other than 0)."""
    from qkv.run import RunConfig
    from qkv.training import train
    from qkv.training.probe import recipe_fill

    config_path = config_file(args.config)
    config = RunConfig.parse(config_path)                 # data paths: relative to the config file's folder
    config.data.train_text = str(data_file(args.data, config.data.train_text))
    name = config_path.stem.replace("_", "-")
    out = args.out or ROOT / "runs" / name
    overrides = recipe_overrides(args)
    load_before = os.getloadavg()
    result = train(None if args.resume else config, out, overrides=overrides, resume=args.resume,
                   fill_budget=None if args.resume else recipe_fill(overrides, args.no_probe))
    if WORLD_RANK != 0:
        return None
    results = summarize(out, result, name, load_before)
    results["overrides"] = overrides
    results["samples"] = samples(out, args.samples, args.sample_tokens)
    atomic_write_bytes(RunDir(out).results, (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return results


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """--set overrides, with --steps N as train.steps=N."""
    return list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps else [])


def config_file(name: str) -> Path:
    from qkv.errors import ConfigError

    path = ROOT / "recipes" / CONFIGS[name] if name in CONFIGS else Path(name)
    if not path.is_file():
        raise ConfigError(f"recipe config not found: {path}; use --config short, long, llama or a TOML file")
    return path


def data_file(data: Path | None, configured: str) -> Path:
    """input.txt from --data (a directory or the file), else the config's path (already resolved
    against the config file's folder)."""
    from qkv.errors import DataError

    if data is not None:
        path = data / "input.txt" if data.is_dir() or not data.suffix else data
    else:
        path = ROOT / configured
    if not path.is_file():
        raise DataError(f"Tiny Shakespeare not found: expected {path.resolve()}; download input.txt from "
                        f"github.com/karpathy/char-rnn (data/tinyshakespeare) and pass --data DIR")
    return path


def summarize(out: Path, result, name: str, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """The numbers of a finished run: best validation, time, speed, the speed probe, machine."""
    from qkv.training.metrics import read_metrics
    from qkv.training.probe import summary

    records = read_metrics(out)
    valid = [r for r in records if r.get("kind") == "valid"]
    speeds = sorted(r["tokens_per_s"] for r in records if r.get("kind") == "train" and r.get("tokens_per_s"))
    if not valid:
        from qkv.errors import CheckpointError

        raise CheckpointError(f"{out} has no validation record; the run stopped before its first validation")
    best = min(valid, key=lambda r: r["loss"])
    config = _run_config(out)
    rows = max(1, config["train"]["batch_tokens"] // config["data"]["block_size"])
    tokens = result.steps * rows * config["data"]["block_size"] * config["train"]["accumulate"] * WORLD_SIZE
    return {
        "recipe": name,
        "valid_loss": round(best["loss"], 4),
        "valid_bpc": round(best["bpc"], 4) if "bpc" in best else None,
        "valid_step": best["step"],
        "valid_curve": [{"step": r["step"], "loss": round(r["loss"], 4)} for r in valid],
        "evaluation": "mean NLL (nats/char) over every character of the last 10% of input.txt, in "
                      f"non-overlapping blocks of {config['data']['block_size']} (last partial block left out); "
                      "bpc = loss / ln 2; weights of the best validation (model.safetensors)",
        "steps": result.steps,
        "stopped": result.stopped,
        "train_tokens": tokens,
        "seconds": round(result.seconds, 1),
        "tokens_per_s": round(tokens / max(result.seconds, 1e-9)),
        "median_step_tokens_per_s": round(speeds[len(speeds) // 2]) if speeds else None,
        "processes": WORLD_SIZE,
        "speed_probe": summary(records),
        "parameters": _parameters(out),
        "machine": machine(load_before, out),
        "run_dir": str(out),
    }


def _run_config(out: Path) -> dict[str, Any]:
    from qkv.run import load_run_config

    return load_run_config(out)


def _parameters(out: Path) -> int:
    from qkv.run import load_run

    return sum(p.numel() for p in load_run(out).model.parameters())


def machine(load_before: tuple[float, float, float], out: Path) -> dict[str, Any]:
    """Where the numbers were measured: CPU model, cores, the threads of each training process of
    the run in `out` (its train.threads, or the cores shared between its processes, as the trainer
    sets them; not this process's count now, which training restores), load average, torch version."""
    import torch

    from qkv.machine import cpu_has_fast_bf16, cpu_name, usable_cores

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "torch_threads": _run_config(out)["train"].get("threads") or max(1, usable_cores() // processes),
        "processes": processes,
        "bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def samples(out: Path, n: int, length: int, seed: int = 1337) -> list[dict[str, Any]]:
    """`n` continuations of fixed prompts, `length` tokens each (temperature 0.8, top-k 40, seeded),
    with the KV cache."""
    from qkv.search import Sampler, generate_stream
    from qkv.run import load_run

    run = load_run(out)
    tok = run.tgt_tokenizer
    found = []
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        sampler = Sampler(sample=True, temperature=0.8, top_k=40, seed=seed + i)
        window = run.cfg.max_len * 3 // 4       # past max_len the context slides (see generate_stream)
        ids = list(generate_stream(run.model, tok.encode(prompt), length, sampler, min_new_tokens=length, window=window))
        found.append({"prompt": prompt, "seed": seed + i, "temperature": 0.8, "top_k": 40,
                      "text": prompt + tok.decode(ids)})
    return found


if __name__ == "__main__":
    sys.exit(main())
