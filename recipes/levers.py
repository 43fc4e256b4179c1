"""The levers since 2017, each measured against the Tiny Shakespeare recipe: what each one buys.

    python recipes/levers.py                                   # every lever, seeds 1337 and 2, 4100 steps each
    python recipes/levers.py --variants base,muon --seeds 1337 --jobs 2
    python recipes/levers.py --budget                          # each run fills the recipe's 5 minutes (quiet machine)
    python recipes/levers.py --collect                         # only gather the runs already in --runs

Every run is `recipes/shakespeare.py` (recipes/shakespeare_char.toml, the AdamW + cosine baseline)
with one change (`--set`), one process on one thread (two jobs use two cores), no samples. By default
each run trains a fixed 4100 steps: what the 5-minute budget holds on the 2-core AVX2 machine the
targets name (~13.7 steps/s there), so the comparison is the same whatever the load of the machine
that runs it. A lever that makes a step slower (Muon's Newton-Schulz iterations) does not get those
steps in the same minutes: the table gives each variant's median step time relative to the baseline,
measured in the same runs (meaningful when the runs shared the machine alike: started together,
same jobs), and the `muon-equal-time` variant trains the steps that ratio leaves in the budget.
`--budget` instead lets each run's speed probe fit its steps to the 5 minutes (qkv.training.probe):
the honest quality per minute, but only on a machine doing nothing else.

Runs already finished in --runs (OUT/results.json) are collected, not trained again; an interrupted
one continues (--resume). Writes recipes/results/shakespeare_levers.json and prints a Markdown table:
per variant the validation loss of each seed, their mean, the difference from the baseline's mean
and the step-time ratio. The noise between seeds is about 0.01 in loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from qkv.entry import entry_point
from qkv.files import atomic_write_bytes
from qkv.run import RunDir

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "shakespeare_levers.json"
STEPS = 4100          # the 5-minute budget of the AVX2 reference machine (issue's measurement: 4100 steps in 300.5 s)
MUON_STEP_COST = 1.20  # Muon's step / AdamW's step, median, measured in two runs side by side (this file's results)

# name -> (what it changes, --set overrides); sources in docs/paper-map.md "After 2017"
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("the recipe: AdamW, cosine, tied embeddings", []),
    "muon": ("Muon on the hidden matrices (lr 0.02), AdamW on the rest", ["train.optimizer=muon"]),
    "muon-equal-time": (f"Muon with the steps AdamW's budget leaves it ({STEPS} / {MUON_STEP_COST})",
                        ["train.optimizer=muon", f"train.steps={round(STEPS / MUON_STEP_COST)}"]),
    "qk-norm": ("RMSNorm on each head's queries and keys", ["model.qk_norm=true"]),
    "softcap": ("logits soft-capped at 15", ["model.logit_softcap=15.0"]),
    "untied": ("an output layer of its own (not the embedding matrix)", ["model.tie_embeddings=false"]),
    "wsd": ("warmup-stable-decay (1-sqrt decay over the last 20%) instead of cosine", ["train.schedule=wsd"]),
}


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [(variant, seed) for variant in args.variants for seed in args.seeds]
    if not args.collect:
        todo = [(v, s) for v, s in runs if not RunDir(run_dir(args.runs, v, s)).results.is_file()]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda vs: train(args, *vs), todo))
    results = collect(args, runs)
    atomic_write_bytes(args.output, (json.dumps(results, indent=1) + "\n").encode("utf-8"))
    print(table(results))
    print(f"\nwrote {args.output}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=_variants, default=list(VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--seeds", type=_seeds, default=[1337, 2], help="comma-separated seeds (default: 1337,2)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"steps of every run (default {STEPS})")
    parser.add_argument("--budget", action="store_true", help="let each run's speed probe fill the recipe's budget")
    parser.add_argument("--jobs", type=int, default=1, choices=(1, 2, 3, 4), help="runs at once, one core each")
    parser.add_argument("--runs", type=Path, default=Path("runs/levers"), help="where the runs go (default runs/levers)")
    parser.add_argument("--data", type=Path, default=None, help="directory holding input.txt (see recipes/shakespeare.py)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS.relative_to(ROOT.parent)})")
    parser.add_argument("--collect", action="store_true", help="train nothing; gather the runs in --runs")
    return parser.parse_args(argv)


def _variants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are whole numbers separated by commas, got {text!r}") from None


def run_dir(runs: Path, variant: str, seed: int) -> Path:
    return runs / f"{variant}-s{seed}"


def command(args: argparse.Namespace, variant: str, seed: int) -> list[str]:
    overrides = VARIANTS[variant][1]
    fixed = [o for o in overrides if o.startswith("train.steps=")]
    steps = [] if args.budget and not fixed else ["--steps", fixed[0].split("=")[1] if fixed else str(args.steps)]
    out = run_dir(args.runs, variant, seed)
    cmd = [sys.executable, str(ROOT / "shakespeare.py"), "--processes", "1", "--samples", "0", "--out", str(out),
           *steps, "--set", f"train.seed={seed}", "--set", "train.threads=1"]
    if not args.budget:         # a fixed run: no time cap, validation halfway and at the end
        every = int(steps[1]) // 2
        cmd += ["--set", "train.max_minutes=0", "--set", f"train.eval_every={every}",
                "--set", f"train.checkpoint_every={every}"]
    for o in overrides:
        if not o.startswith("train.steps="):
            cmd += ["--set", o]
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    if RunDir(out).state.is_file():          # interrupted: continue it
        cmd.append("--resume")
    return cmd


def train(args: argparse.Namespace, variant: str, seed: int) -> None:
    cmd = command(args, variant, seed)
    print(f"{variant} seed {seed}: {' '.join(cmd[1:])}", flush=True)
    log = run_dir(args.runs, variant, seed).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "ab") as sink:
        code = subprocess.call(cmd, stdout=sink, stderr=subprocess.STDOUT)
    print(f"{variant} seed {seed}: {'done' if code == 0 else f'failed ({code}), see {log}'} "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)


def collect(args: argparse.Namespace, runs: list[tuple[str, int]]) -> dict[str, Any]:
    found: dict[str, list[dict[str, Any]]] = {}
    machine: dict[str, Any] = {}
    for variant, seed in runs:
        path = RunDir(run_dir(args.runs, variant, seed)).results
        if not path.is_file():
            continue
        r = json.loads(path.read_text(encoding="utf-8"))
        machine = machine or r.get("machine", {})
        found.setdefault(variant, []).append({
            "seed": seed, "valid_loss": r["valid_loss"], "steps": r["steps"], "seconds": r["seconds"],
            "median_step_tokens_per_s": r.get("median_step_tokens_per_s"), "parameters": r.get("parameters"),
            "machine": r.get("machine", {})})
    base = found.get("base", [])
    base_mean = statistics.mean(x["valid_loss"] for x in base) if base else None
    base_speed = statistics.median(x["median_step_tokens_per_s"] for x in base) if base else None
    summary = {}
    for variant, xs in found.items():
        mean = statistics.mean(x["valid_loss"] for x in xs)
        speed = statistics.median(x["median_step_tokens_per_s"] for x in xs)
        summary[variant] = {
            "change": VARIANTS[variant][0], "overrides": VARIANTS[variant][1], "seeds": [x["seed"] for x in xs],
            "valid_loss": [x["valid_loss"] for x in xs], "mean": round(mean, 4),
            "vs_base": None if base_mean is None else round(mean - base_mean, 4),
            "step_time_vs_base": None if not base_speed else round(base_speed / speed, 2),
            "steps": sorted({x["steps"] for x in xs}), "parameters": xs[0]["parameters"]}
    return {"experiment": "recipes/shakespeare_char.toml with one change each; validation loss (nats/char) of the "
                          "best weights over every character of the validation split; one process, one thread",
            "fixed_steps": None if args.budget else args.steps, "budget": args.budget,
            "machine": machine, "summary": summary, "runs": found}


def table(results: dict[str, Any]) -> str:
    lines = ["| variant | change | steps | valid loss per seed | mean | vs base | step time vs base |",
             "|---|---|---:|---|---:|---:|---:|"]
    for variant, s in results["summary"].items():
        per_seed = ", ".join(f"{v:.4f} ({seed})" for v, seed in zip(s["valid_loss"], s["seeds"]))
        vs = "" if s["vs_base"] is None or variant == "base" else f"{s['vs_base']:+.4f}"
        ratio = "" if s["step_time_vs_base"] is None else f"{s['step_time_vs_base']:.2f}x"
        lines.append(f"| {variant} | {s['change']} | {', '.join(map(str, s['steps']))} | {per_seed} | "
                     f"{s['mean']:.4f} | {vs} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
