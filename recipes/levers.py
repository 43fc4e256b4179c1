"""The levers since 2017, each measured against a recipe (Tiny Shakespeare or Multi30k): what each one buys.

    python recipes/levers.py                                   # every lever, seeds 1337 and 2, 4100 steps each
    python recipes/levers.py --variants base,muon --seeds 1337 --jobs 2
    python recipes/levers.py --budget                          # each run fills the recipe's 5 minutes (quiet machine)
    python recipes/levers.py --collect                         # only gather the runs already in --runs
    python recipes/levers.py --base muon --variants muon,muon-wsd,muon-qk-norm --steps 3417 --jobs 2   # on top of Muon
    python recipes/levers.py --base muon-wd0.02 --variants muon-wd0.02,muon-wd0.02-value-embed --steps 3417 --jobs 2
    python recipes/levers.py --recipe shakespeare-long --base muon-wd0.02 --variants muon-wd0.02,muon-wd0.02-dropout0.2 --jobs 2
    python recipes/levers.py --recipe multi30k --variants base,muon --seeds 1 --jobs 2   # de->en, 2700 steps each
    python recipes/levers.py --recipe multi30k-en-de --variants base,muon --seeds 1 --jobs 2

Every run is `recipes/shakespeare.py` (recipes/shakespeare_char.toml with AdamW: the baseline the
levers were first measured against) with one change (`--set`), one process on one thread (two jobs use two cores), no samples. By default
each run trains a fixed 4100 steps: what the 5-minute budget holds on the 2-core AVX2 machine the
targets name (~13.7 steps/s there), so the comparison is the same whatever the load of the machine
that runs it. A lever that makes a step slower (Muon's Newton-Schulz iterations) does not get those
steps in the same minutes: the table gives each variant's median step time relative to the baseline,
measured in the same runs (meaningful when the runs shared the machine alike: started together,
same jobs), and the `muon-equal-time` variant trains the steps that ratio leaves in the budget.
`--budget` instead runs the recipe as it is (its processes and threads: two DDP processes on 2
cores), one run at a time, and lets each run's speed probe fit its steps to the 5 minutes
(qkv.training.probe): the honest quality per minute, but only on a machine doing nothing else.

The `muon-*` variants add one change to the recipe as it trains now (Muon): `--base muon` compares
them with it (`muon-lr0.01`..`muon-lr0.04` sweep Muon's learning rate, 0.02 in the recipes).
`muon-wd0.02` is the recipe since 2026-12-04 (Muon with weight decay 0.02 on its matrices);
`--base muon-wd0.02` measures `muon-wd0.02-value-embed` (value embeddings) against it. Every
Tiny Shakespeare run reads blocks of 64 characters, the recipe's context until 2026-12-05;
`muon-wd0.02-block128` (and `-block256`) reads 128 (256), the same characters a step: the recipe
since then.

`--recipe shakespeare-long` is the long recipe (recipes/shakespeare_char_long.toml, already on Muon with
weight decay 0.02: compare with `--base muon-wd0.02`), 4909 steps a run (its AVX2 hour at Muon's step
cost), seeds 1337 and 1.

`--recipe multi30k` does the same with recipes/multi30k.py (de->en): 2700 steps a run (the AVX2
machine's count for the hour), the recipe's own protocol at the end (greedy BLEU on the whole
validation set picks the best or the averaged weights, test2016 decoded once with beam 5). A lever is
judged on the validation BLEU only; the test BLEU is reported beside it, never used to choose.
`--recipe multi30k-en-de` is the same in the other direction (recipes/multi30k_en_de.toml).

Runs already finished in --runs (OUT/results.json) are collected, not trained again; an interrupted
Tiny Shakespeare run continues (--resume; a Multi30k run starts again). Writes
recipes/results/shakespeare_levers.json (or multi30k_levers.json) and prints a Markdown table: per
variant the score of each seed (validation loss, or validation and test BLEU), their mean, the
difference from the baseline's mean and the step-time ratio. The noise between seeds is about 0.01
in loss and 0.3 BLEU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from qkv.entry import entry_point
from qkv.files import atomic_write_bytes
from qkv.run import RunDir

ROOT = Path(__file__).resolve().parent


def _shakespeare_scores(r: dict[str, Any]) -> dict[str, Any]:
    return {"valid_loss": r["valid_loss"], "steps": r["steps"], "seconds": r["seconds"],
            "median_step_tokens_per_s": r.get("median_step_tokens_per_s"), "parameters": r.get("parameters")}


def _multi30k_scores(r: dict[str, Any]) -> dict[str, Any]:
    chosen = "best" if r["weights"] == "best" else "averaged"   # the weights val chose; test was scored with them
    return {"valid_bleu": r["val_greedy"][chosen]["bleu"], "valid_chrf": r["val_greedy"][chosen]["chrf"],
            "weights": chosen, "test_bleu": r["test"]["bleu"], "test_chrf": r["test"]["chrf"],
            "steps": r["training"]["steps"], "seconds": r["training"]["wall_clock_s"],
            "median_step_tokens_per_s": r["training"]["median_tokens_per_s"], "parameters": r.get("parameters")}


class Recipe(NamedTuple):
    """A recipe the levers are measured against: its script, fixed step count, how a run goes and what it scores."""
    script: str
    steps: int               # the budget of the AVX2 reference machine, in steps
    muon_step_cost: float    # Muon's step / AdamW's step, median, measured side by side (the results JSON)
    results: str             # recipes/results/<this>
    score: str               # the key judged: lower is better for a loss, higher for BLEU
    lower_is_better: bool
    scores: Callable[[dict[str, Any]], dict[str, Any]]   # one run's results.json -> its scores, steps, time, speed
    seeds: tuple[int, ...]   # default seeds
    runs: str                # default --runs
    extra: tuple[str, ...]   # arguments every run of the script gets
    halfway: bool            # a fixed run validates (and checkpoints) halfway as well as at the end
    resumable: bool          # an interrupted run continues with --resume (otherwise it starts again)
    experiment: str          # what one run measures, for the results JSON


RECIPES = {
    # 4100 steps: the measurement, 4100 steps in 300.5 s; 1.20 from two runs side by side
    "shakespeare": Recipe(
        "shakespeare.py", 4100, 1.20, "shakespeare_levers.json", "valid_loss", True, _shakespeare_scores,
        seeds=(1337, 2), runs="runs/levers", extra=("--samples", "0", "--set", "data.block_size=64"), halfway=True,
        resumable=True,
        experiment="recipes/shakespeare_char.toml with one change each; validation loss (nats/char) of the best "
                   "weights over every character of the validation split"),
    # 2700 steps: the config's count, what the hour holds on the AVX2 machine (40.6 min quiet); 1.04: results JSON
    "multi30k": Recipe(
        "multi30k.py", 2700, 1.04, "multi30k_levers.json", "valid_bleu", False, _multi30k_scores,
        seeds=(1, 2), runs="runs/levers-multi30k", extra=(), halfway=False, resumable=False,
        experiment="recipes/multi30k_de_en.toml with one change each; cased sacreBLEU, greedy, on the whole "
                   "validation set for the weights it chose (best or the average of the last 5), and test2016 "
                   "with beam 5 scored once with them (reported, never used to choose)"),
}
# the 5-minute recipe reads 128 characters since 2026-12-05: its runs keep the 64 the levers were measured
# with (the variant muon-wd0.02-block128 is the recipe as it trains now); the long recipe has always read 128
# 4909 steps: the long recipe's AVX2 hour (5000 AdamW steps at Muon's measured 0.98x step cost); the
# recipe already trains with Muon and its weight decay (variant muon-wd0.02: compare with --base muon-wd0.02)
RECIPES["shakespeare-long"] = RECIPES["shakespeare"]._replace(
    steps=4909, muon_step_cost=0.98, results="shakespeare_long_levers.json", seeds=(1337, 1), runs="runs/levers-long",
    extra=("--config", "long", "--samples", "0"),
    experiment=RECIPES["shakespeare"].experiment.replace("shakespeare_char.toml", "shakespeare_char_long.toml"))
RECIPES["multi30k-en-de"] = RECIPES["multi30k"]._replace(   # the other direction: same model, steps and protocol
    results="multi30k_en_de_levers.json", runs="runs/levers-multi30k-en-de", extra=("--direction", "en-de"),
    experiment=RECIPES["multi30k"].experiment.replace("multi30k_de_en.toml", "multi30k_en_de.toml"))
STEPS = RECIPES["shakespeare"].steps
RESULTS = ROOT / "results" / RECIPES["shakespeare"].results

# every variant starts from the recipe as the levers were first measured against it: AdamW (and, for
# the muon-* variants, Muon without weight decay on its matrices, whatever the recipe's TOML says now)
BASE = ["train.optimizer=adamw", "train.muon_weight_decay=0"]
# name -> (what it changes, --set overrides after BASE); sources in docs/paper-map.md "After 2017"
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("the recipe with AdamW, cosine, tied embeddings", []),
    "muon": ("Muon on the hidden matrices (lr 0.02), AdamW on the rest", ["train.optimizer=muon"]),
    "muon-equal-time": ("Muon with the steps AdamW's budget leaves it (steps / Muon's step cost)",
                        ["train.optimizer=muon", "train.steps=equal-time"]),
    "qk-norm": ("RMSNorm on each head's queries and keys", ["model.qk_norm=true"]),
    "softcap": ("logits soft-capped at 15", ["model.logit_softcap=15.0"]),
    "untied": ("an output layer of its own (not the embedding matrix)", ["model.tie_embeddings=false"]),
    "wsd": ("warmup-stable-decay (1-sqrt decay over the last 20%) instead of cosine", ["train.schedule=wsd"]),
    # the recipe as it trains now (Muon) with one more change: compare them with --base muon
    "muon-lr0.01": ("Muon with half its learning rate (0.01)", ["train.optimizer=muon", "train.muon_lr=0.01"]),
    "muon-lr0.015": ("Muon with 3/4 of its learning rate (0.015)", ["train.optimizer=muon", "train.muon_lr=0.015"]),
    "muon-lr0.03": ("Muon with 1.5x its learning rate (0.03)", ["train.optimizer=muon", "train.muon_lr=0.03"]),
    "muon-lr0.04": ("Muon with twice its learning rate (0.04)", ["train.optimizer=muon", "train.muon_lr=0.04"]),
    "muon-wd0.02": ("Muon with decoupled weight decay 0.02 on its matrices (the 5-minute recipe's since 2026-12-04)",
                    ["train.optimizer=muon", "train.muon_weight_decay=0.02"]),
    "muon-wd0.05": ("Muon with decoupled weight decay 0.05 on its matrices",
                    ["train.optimizer=muon", "train.muon_weight_decay=0.05"]),
    "muon-wd0.1": ("Muon with decoupled weight decay 0.1 on its matrices", ["train.optimizer=muon", "train.muon_weight_decay=0.1"]),
    "muon-wd0.2": ("Muon with decoupled weight decay 0.2 on its matrices", ["train.optimizer=muon", "train.muon_weight_decay=0.2"]),
    "muon-wd0.3": ("Muon with decoupled weight decay 0.3 on its matrices", ["train.optimizer=muon", "train.muon_weight_decay=0.3"]),
    "muon-wsd": ("Muon and warmup-stable-decay", ["train.optimizer=muon", "train.schedule=wsd"]),
    "muon-qk-norm": ("Muon and QK-norm", ["train.optimizer=muon", "model.qk_norm=true"]),
    "muon-untied": ("Muon and an untied output layer", ["train.optimizer=muon", "model.tie_embeddings=false"]),
    "muon-wd0.02-value-embed": ("Muon, weight decay 0.02 (the recipe) and value embeddings",
                                ["train.optimizer=muon", "train.muon_weight_decay=0.02", "model.value_embeddings=true"]),
    # the long recipe as it trains now (weight decay 0.05 on Muon's matrices) with one more change: --base muon-wd0.05
    "muon-wd0.05-qk-norm": ("Muon, weight decay 0.05 (the long recipe) and QK-norm",
                            ["train.optimizer=muon", "train.muon_weight_decay=0.05", "model.qk_norm=true"]),
    "muon-wd0.05-value-embed": ("Muon, weight decay 0.05 (the long recipe) and value embeddings",
                                ["train.optimizer=muon", "train.muon_weight_decay=0.05", "model.value_embeddings=true"]),
    "muon-wd0.05-linear0": ("Muon, weight decay 0.05 (the long recipe) and a straight line down to zero instead of the cosine to min_lr",
                            ["train.optimizer=muon", "train.muon_weight_decay=0.05", "train.schedule=linear", "train.min_lr=0"]),
    "muon-wd0.02-qk-norm": ("Muon, weight decay 0.02 (the 5-minute recipe) and QK-norm",
                            ["train.optimizer=muon", "train.muon_weight_decay=0.02", "model.qk_norm=true"]),
    "muon-wd0.02-linear0": ("Muon, weight decay 0.02 (the recipe) and a straight line down to zero instead of the cosine to min_lr",
                            ["train.optimizer=muon", "train.muon_weight_decay=0.02", "train.schedule=linear", "train.min_lr=0"]),
    "muon-wd0.02-lr7e-3": ("Muon, weight decay 0.02 (the recipe) and twice AdamW's rate (7e-3) on the embeddings and norms",
                           ["train.optimizer=muon", "train.muon_weight_decay=0.02", "train.lr=7e-3"]),
    "muon-wd0.02-heads6": ("Muon, weight decay 0.02 (the recipe) and 6 heads of 16 instead of 4 of 24",
                           ["train.optimizer=muon", "train.muon_weight_decay=0.02", "model.n_heads=6"]),
    "muon-wd0.02-block128": ("Muon, weight decay 0.02 (the recipe) and a context of 128 characters (8 blocks a step, the same characters)",
                             ["train.optimizer=muon", "train.muon_weight_decay=0.02", "data.block_size=128"]),
    "muon-wd0.02-block256": ("Muon, weight decay 0.02 (the recipe) and a context of 256 characters (4 blocks a step, the same characters)",
                             ["train.optimizer=muon", "train.muon_weight_decay=0.02", "data.block_size=256"]),
    "muon-wd0.02-dropout0": ("Muon, weight decay 0.02 (the recipe) and no dropout",
                             ["train.optimizer=muon", "train.muon_weight_decay=0.02", "model.dropout=0.0"]),
    "muon-wd0.02-dropout0.05": ("Muon, weight decay 0.02 (the recipe) and dropout 0.05",
                                ["train.optimizer=muon", "train.muon_weight_decay=0.02", "model.dropout=0.05"]),
    "muon-wd0.02-dropout0.15": ("Muon, weight decay 0.02 (the recipe) and dropout 0.15",
                                ["train.optimizer=muon", "train.muon_weight_decay=0.02", "model.dropout=0.15"]),
    "muon-wd0.02-dropout0.2": ("Muon, weight decay 0.02 (the recipe) and dropout 0.2",
                               ["train.optimizer=muon", "train.muon_weight_decay=0.02", "model.dropout=0.2"]),
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
    parser.add_argument("--recipe", choices=list(RECIPES), default="shakespeare",
                        help="the recipe the levers change (default shakespeare; shakespeare-long; multi30k: de->en; multi30k-en-de)")
    parser.add_argument("--variants", type=_variants, default=list(VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--seeds", type=_seeds, default=None, help="comma-separated seeds (default: 1337,2; multi30k 1,2)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"steps of every run (default: the recipe's, {STEPS} for shakespeare, "
                             f"{RECIPES['shakespeare-long'].steps} for shakespeare-long, {RECIPES['multi30k'].steps} for multi30k)")
    parser.add_argument("--budget", action="store_true", help="let each run's speed probe fill the recipe's budget")
    parser.add_argument("--jobs", type=int, default=1, choices=(1, 2, 3, 4), help="runs at once, one core each")
    parser.add_argument("--runs", type=Path, default=None, help="where the runs go (default runs/levers, runs/levers-multi30k)")
    parser.add_argument("--data", type=Path, default=None, help="the recipe's --data (see recipes/shakespeare.py, multi30k.py)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"results JSON (default {RESULTS.relative_to(ROOT.parent)}, or multi30k_levers.json beside it)")
    parser.add_argument("--collect", action="store_true", help="train nothing; gather the runs in --runs")
    parser.add_argument("--base", choices=list(VARIANTS), default="base",
                        help="the variant the others are compared with (default base: the recipe with AdamW; "
                             "muon: the recipe as it trains now)")
    args = parser.parse_args(argv)
    if args.budget and args.jobs > 1:
        parser.error("--budget measures quality per minute: one run at a time, alone on the machine (no --jobs)")
    recipe = RECIPES[args.recipe]
    args.seeds = args.seeds or list(recipe.seeds)
    args.steps = args.steps or recipe.steps
    args.runs = args.runs or Path(recipe.runs)
    args.output = args.output or ROOT / "results" / recipe.results
    return args


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
    recipe = RECIPES[args.recipe]
    overrides = VARIANTS[variant][1]
    fixed = [o.split("=")[1] for o in overrides if o.startswith("train.steps=")]
    if fixed and fixed[0] == "equal-time":
        fixed = [str(round(args.steps / recipe.muon_step_cost))]
    steps = [] if args.budget and not fixed else ["--steps", fixed[0] if fixed else str(args.steps)]
    out = run_dir(args.runs, variant, seed)
    alone = [] if args.budget else ["--processes", "1"]      # --budget: the recipe's own processes
    cmd = [sys.executable, str(ROOT / recipe.script), *alone, "--out", str(out), *steps, "--set", f"train.seed={seed}",
           *([] if args.budget else ["--set", "train.threads=1"])]
    cmd += recipe.extra
    if not args.budget:         # a fixed run: no time cap
        cmd += ["--set", "train.max_minutes=0"]
        if recipe.halfway:      # validation halfway and at the end
            every = int(steps[1]) // 2
            cmd += ["--set", f"train.eval_every={every}", "--set", f"train.checkpoint_every={every}"]
    for o in BASE + overrides:          # a later --set of the same key wins
        if not o.startswith("train.steps="):
            cmd += ["--set", o]
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    if recipe.resumable and RunDir(out).state.is_file():          # interrupted: continue it
        cmd.append("--resume")
    return cmd


def train(args: argparse.Namespace, variant: str, seed: int) -> None:
    cmd = command(args, variant, seed)
    print(f"{variant} seed {seed}: {' '.join(cmd[1:])}", flush=True)
    out = run_dir(args.runs, variant, seed)
    log = out.with_name(out.name + ".log")          # not with_suffix: "muon-lr0.01-s1" has a dot of its own
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "ab") as sink:
        code = subprocess.call(cmd, stdout=sink, stderr=subprocess.STDOUT)
    print(f"{variant} seed {seed}: {'done' if code == 0 else f'failed ({code}), see {log}'} "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)


def collect(args: argparse.Namespace, runs: list[tuple[str, int]]) -> dict[str, Any]:
    recipe = RECIPES[args.recipe]
    key = recipe.score
    found: dict[str, list[dict[str, Any]]] = {}
    machine: dict[str, Any] = {}
    for variant, seed in runs:
        path = RunDir(run_dir(args.runs, variant, seed)).results
        if not path.is_file():
            continue
        r = json.loads(path.read_text(encoding="utf-8"))
        machine = machine or r.get("machine", {})
        found.setdefault(variant, []).append({"seed": seed, **recipe.scores(r), "machine": r.get("machine", {})})
    base = found.get(args.base, [])
    base_mean = statistics.mean(x[key] for x in base) if base else None
    base_speed = statistics.median(x["median_step_tokens_per_s"] for x in base) if base else None
    summary = {}
    for variant, xs in found.items():
        mean = statistics.mean(x[key] for x in xs)
        speed = statistics.median(x["median_step_tokens_per_s"] for x in xs)
        summary[variant] = {
            "change": VARIANTS[variant][0], "overrides": VARIANTS[variant][1], "seeds": [x["seed"] for x in xs],
            key: [x[key] for x in xs], "mean": round(mean, 4),
            "vs_base": None if base_mean is None else round(mean - base_mean, 4),
            "step_time_vs_base": None if not base_speed else round(base_speed / speed, 2),
            "steps": sorted({x["steps"] for x in xs}), "parameters": xs[0]["parameters"]}
        if "test_bleu" in xs[0]:
            summary[variant]["test_bleu"] = [x["test_bleu"] for x in xs]
    experiment = recipe.experiment + ("; the recipe's processes, steps set by its speed probe to fill the budget, "
                                      "one run at a time" if args.budget else "; one process, one thread")
    return {"recipe": args.recipe, "experiment": experiment, "score": key, "lower_is_better": recipe.lower_is_better,
            "fixed_steps": None if args.budget else args.steps, "budget": args.budget, "base": args.base,
            "machine": machine, "summary": summary, "runs": found}


def table(results: dict[str, Any]) -> str:
    key = results.get("score", "valid_loss")
    bleu = key == "valid_bleu"
    head = "valid BLEU per seed | mean | vs base | test BLEU per seed" if bleu else "valid loss per seed | mean | vs base"
    lines = [f"| variant | change | steps | {head} | step time vs base |",
             "|---|---|---:|---|---:|---:|" + ("---|" if bleu else "") + "---:|"]
    for variant, s in results["summary"].items():
        fmt = ".2f" if bleu else ".4f"
        per_seed = ", ".join(f"{v:{fmt}} ({seed})" for v, seed in zip(s[key], s["seeds"]))
        vs = "" if s["vs_base"] is None or variant == results.get("base", "base") else f"{s['vs_base']:+{fmt}}"
        ratio = "" if s["step_time_vs_base"] is None else f"{s['step_time_vs_base']:.2f}x"
        test = f" {', '.join(f'{v:.2f}' for v in s['test_bleu'])} |" if bleu else ""
        lines.append(f"| {variant} | {s['change']} | {', '.join(map(str, s['steps']))} | {per_seed} | "
                     f"{s['mean']:{fmt}} | {vs} |{test} {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
