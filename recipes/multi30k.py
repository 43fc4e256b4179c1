"""Multi30k German<->English (WMT16 multimodal task 1, text only): train on a CPU, measure on test2016.

    python recipes/multi30k.py --direction de-en               # recipes/multi30k_de_en.toml -> runs/multi30k-de-en
    python recipes/multi30k.py --direction en-de --minutes 30  # a 30-minute budget instead of the config's 59
    python recipes/multi30k.py --data DIR                      # DIR/train.de ... instead of ../shared/data/multi30k
    python recipes/multi30k.py --evaluate-only                 # measure the run already in --out
    python recipes/multi30k.py --set model.dropout=0.2         # any config override
    python recipes/multi30k.py --processes 1                   # one process (default: 2 DDP processes on 2+ CPU cores)
    python recipes/multi30k.py --no-probe                      # the config's train.steps (2700), not the probe's
    python recipes/multi30k.py --steps 500                     # exactly 500 steps, no probe

The budget is `train.max_minutes` (59 in the configs, or --minutes). Before training, a speed probe
of under 20 s times this run's own steps on this machine (after untimed warm-up steps), a greedy
validation on a sample of val and a checkpoint, and sets `train.steps` so that training ends near
95% of the budget, with the cosine schedule built for that count: a faster machine trains more
steps, a busy one fewer but with its whole schedule (qkv.training.probe). The budget stays as a
safety net. `--no-probe` trains the config's `train.steps` instead, to reproduce a fixed run.

The text is the raw, cased release (train 29,000 pairs, val 1,014, test_2016_flickr 1,000); one
joint BPE vocabulary is learned on the training text of both languages. Training keeps the weights
with the best greedy BLEU on val (`model.safetensors`) and the last `train.keep_checkpoints` step
checkpoints. Evaluation then:

1. averages the last `--average` step checkpoints (`averaged.safetensors`),
2. decodes val greedily for both candidates (cheap on a busy CPU) and keeps the one with the
   higher val BLEU (the test set plays no part in any choice); the winner becomes `model.safetensors`, so
   `qkv translate/explain --model OUT` use it (the greedy-best weights stay as `best.safetensors`),
3. decodes test_2016_flickr once and scores the detokenized, cased output with sacreBLEU (BLEU,
   default 13a tokenizer, and chrF) against the raw references.

Writes OUT/results.json (and prints it): scores with their signatures, wall-clock training time,
steps, the speed probe (its seconds, steps/s, the chosen steps, the budget, the CPU), the machine
(CPU, cores, torch version, load average) and a few test translations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "multi30k"
DIRECTIONS = ("de-en", "en-de")
SPLITS = ("train", "val", "test_2016_flickr")
TEST = "test_2016_flickr"
EXAMPLES = 5

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shakespeare import machine  # noqa: E402  (the same machine description for every recipe)

from qkv.entry import entry_point, run_distributed  # noqa: E402
from qkv.files import atomic_write_bytes  # noqa: E402
from qkv.run import RunDir  # noqa: E402


@entry_point
def main(argv: list[str] | None = None) -> int:
    from qkv.training.distributed import default_processes

    args = parse_args(argv)
    processes = 1 if args.evaluate_only else args.processes if args.processes is not None else default_processes()
    argv = sys.argv[1:] if argv is None else argv
    return run_distributed(processes, lambda: launch_command(processes, args, argv), lambda: run_recipe(args))  # bad input: one line, before any rank


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train and measure a Multi30k German<->English Transformer.")
    p.add_argument("--direction", choices=DIRECTIONS, default="de-en", help="de-en (default) or en-de")
    p.add_argument("--config", type=Path, help="TOML config (default: recipes/multi30k_<src>_<tgt>.toml)")
    p.add_argument("--data", type=Path, help=f"directory with train/val/{TEST}.<lang> (default: {DATA})")
    p.add_argument("--out", type=Path, help="run directory (default: runs/multi30k-<direction>)")
    p.add_argument("--minutes", type=float, help="the training budget in minutes (train.max_minutes; the probe fills "
                                                   "95%% of it, and training stops there in any case)")
    p.add_argument("--no-probe", action="store_true",
                   help="train the config's train.steps (e.g. to reproduce a fixed run) instead of the steps a "
                        "speed probe (under 20 s) fits to 95%% of the budget on this machine")
    p.add_argument("--steps", type=int, metavar="N", help="train exactly this many steps, no probe (--no-probe --set train.steps=N)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override, repeatable, e.g. --set train.steps=200")
    p.add_argument("--processes", type=int, default=None,
                   help="training processes (DDP over gloo, the CPU cores shared out as threads); the config's "
                        "batch_tokens stays the global batch. Default: 2 on a CPU with 2 or more cores, else 1")
    p.add_argument("--evaluate-only", action="store_true", help="skip training; measure the run in --out")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--length-penalty", type=float, default=0.6, help="GNMT alpha (default 0.6)")
    p.add_argument("--average", type=int, default=5, help="step checkpoints to average (default 5, 0: none)")
    return p.parse_args(argv)


def launch_command(processes: int, args: argparse.Namespace, argv: list[str]) -> list[str]:
    """This script again under torchrun, each rank with its share of the global batch; the data,
    the config and the budget the speed probe fills are checked first, so a mistake is one line,
    not one per rank."""
    from qkv.run import RunConfig
    from qkv.training.distributed import local_launch_command
    from qkv.training.probe import checked_fill, recipe_fill

    src, tgt = args.direction.split("-")
    check_data(args.data or DATA, src, tgt)
    overrides = recipe_overrides(args)
    train = RunConfig.parse(config_file(args.config, src, tgt), overrides).train
    if not args.evaluate_only:
        checked_fill(recipe_fill(overrides, args.no_probe), train.max_minutes)
    return local_launch_command(str(Path(__file__).resolve()), argv, processes, train.batch_tokens)


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """--set overrides, with --minutes as train.max_minutes and --steps as train.steps."""
    return (list(args.overrides) + ([f"train.max_minutes={args.minutes}"] if args.minutes else [])
            + ([f"train.steps={args.steps}"] if args.steps is not None else []))


def config_file(path: Path | None, src: str, tgt: str) -> Path:
    from qkv.errors import ConfigError

    path = path or ROOT / "recipes" / f"multi30k_{src}_{tgt}.toml"
    if not path.is_file():
        raise ConfigError(f"recipe config not found: {path}")
    return path


def run_recipe(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train (unless --evaluate-only), pick weights on val, score test; write OUT/results.json.
    Returns the results (None on DDP ranks other than 0)."""
    import torch

    from qkv.run import RunConfig
    from qkv.training import train
    from qkv.training.probe import recipe_fill

    src, tgt = args.direction.split("-")
    data = check_data(args.data or DATA, src, tgt)
    config_path = config_file(args.config, src, tgt)
    out = args.out or ROOT / "runs" / f"multi30k-{args.direction}"
    overrides = recipe_overrides(args)
    load_before = os.getloadavg()
    if not args.evaluate_only:
        config = RunConfig.parse(config_path)
        config.data.dir, config.data.src_lang, config.data.tgt_lang = str(data), src, tgt
        train(config, out, overrides=overrides, fill_budget=recipe_fill(overrides, args.no_probe))
    if int(os.environ.get("RANK", "0")) != 0:   # a DDP rank other than 0: rank 0 measures and reports
        return None
    from qkv.machine import usable_cores

    torch.set_num_threads(usable_cores())       # the ranks ran 1 thread each; rank 0 now has the machine
    training = training_summary(out)
    results = {"recipe": f"multi30k-{args.direction}", "direction": args.direction, "data": str(data),
               **evaluate_run(out, data, src, tgt, args), "training": training,
               "machine": machine(load_before, out), "run_dir": str(out)}
    atomic_write_bytes(RunDir(out).results, (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return results


def check_data(data: Path, src: str, tgt: str) -> Path:
    """The data directory, or a one-line DataError naming the first missing file."""
    from qkv.errors import DataError

    for split in SPLITS:
        for lang in (src, tgt):
            path = data / f"{split}.{lang}"
            if not path.is_file():
                raise DataError(f"Multi30k not found: expected {path.resolve()} (and train/val/{TEST}.{{de,en}} "
                                f"beside it, raw text from github.com/multi30k/dataset data/task1/raw); pass --data DIR")
    return data.resolve()


def training_summary(out: Path) -> dict[str, Any]:
    """Steps, wall-clock time, speed and the speed probe of the run, from its metrics.jsonl and config.toml."""
    from qkv.errors import CheckpointError
    from qkv.run import load_run_config
    from qkv.training.metrics import read_metrics
    from qkv.training.probe import summary

    records = read_metrics(out)
    train_records = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    if not valid:
        raise CheckpointError(f"{out} has no validation record; the run stopped before its first validation")
    speeds = sorted(r["tokens_per_s"] for r in train_records if r.get("tokens_per_s"))
    config = load_run_config(out)
    start, end = _times(out)
    return {
        "steps": max(r["step"] for r in records),
        "epochs": max((r.get("epoch", 0) for r in train_records), default=0),
        "wall_clock_s": round(end - start, 1) if start else None,
        "median_tokens_per_s": round(speeds[len(speeds) // 2]) if speeds else None,
        "speed_probe": summary(records),
        "valid_curve": [{"step": r["step"], "greedy_bleu": round(r.get("bleu", 0.0), 2),
                         "loss": round(r["loss"], 3)} for r in valid],
        "config": config,
    }


def _times(out: Path) -> tuple[float | None, float]:
    """When the run started (config.toml written) and last wrote its metrics."""
    run_dir = RunDir(out)
    tokenizers = run_dir.tokenizer_files()
    start = tokenizers[0].stat().st_mtime if tokenizers else None
    return start, run_dir.metrics.stat().st_mtime


def evaluate_run(out: Path, data: Path, src: str, tgt: str, args: argparse.Namespace) -> dict[str, Any]:
    """Choose between the greedy-best and the averaged weights on val (beam), then score test once."""
    from qkv.search import DecodeConfig
    from qkv.text import evaluate
    from qkv.training.average import average_checkpoints
    from qkv.run import load_run

    out = Path(out)
    run_dir = RunDir(out)
    dcfg = DecodeConfig(beam_size=args.beam, length_penalty=args.length_penalty)
    best = run_dir.weights("best")
    if not best.exists():
        atomic_write_bytes(best, run_dir.weights().read_bytes())
    candidates = {"best": "best"}
    n_average = min(args.average, len(run_dir.step_checkpoints()))   # a short run keeps fewer
    if n_average >= 2:
        average_checkpoints(out, n_average)
        candidates["averaged"] = "averaged"
    val_src, val_ref = read(data, "val", src), read(data, "val", tgt)
    val_scores, timing = {}, {}
    for name, weights in candidates.items():
        t0 = time.perf_counter()
        scored = evaluate(load_run(out, weights=weights), val_src, val_ref, DecodeConfig(beam_size=1))
        timing[f"val_{name}_s"] = round(time.perf_counter() - t0, 1)
        val_scores[name] = {"bleu": scored["bleu"], "chrf": scored["chrf"]}
    chosen = max(val_scores, key=lambda n: val_scores[n]["bleu"])
    atomic_write_bytes(run_dir.weights(), run_dir.weights(candidates[chosen]).read_bytes())
    run = load_run(out)
    sources, refs = read(data, TEST, src), read(data, TEST, tgt)
    t0 = time.perf_counter()
    test = evaluate(run, sources, refs, dcfg)
    timing["test_s"] = round(time.perf_counter() - t0, 1)
    hyps = test.pop("hypotheses")
    return {
        "test": {"set": TEST, **test, **lowercased_bleu(hyps, refs)},
        "val_greedy": val_scores,
        "weights": chosen if chosen == "best" else f"average of the last {n_average} step checkpoints",
        "decoding": {"beam_size": args.beam, "length_penalty": args.length_penalty, "seconds": timing},
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "examples": [{"source": s, "reference": r, "translation": h}
                     for s, r, h in list(zip(sources, refs, hyps))[:EXAMPLES]],
    }


def lowercased_bleu(hyps: list[str], refs: list[str]) -> dict[str, Any]:
    """BLEU of lowercased text: most published Multi30k results score lowercased, tokenized text
    (the 13a tokenizer splits punctuation as Moses does), so this is the number to set beside them."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(lowercase=True)
    return {"bleu_lowercased": round(bleu.corpus_score(hyps, [refs]).score, 2),
            "bleu_lowercased_signature": str(bleu.get_signature())}


def read(data: Path, split: str, lang: str) -> list[str]:
    from qkv.data.corpus import iter_lines

    return [line for _, line in iter_lines(data / f"{split}.{lang}")]


if __name__ == "__main__":
    sys.exit(main())
