"""Corpora bigger than memory: `qkv prepare` and training from memory-mapped token files.

What it measures (every training run is a fresh process, as `qkv train` would be):

1. Generates, under --work (default /tmp/qkv-big-corpus, deleted at the end unless --keep):
   - a parallel corpus of --pairs (default 5M) German-English pairs, each one or two real
     Multi30k training pairs joined (sources joined, targets joined), drawn at random;
   - a monolingual text of --text-mb (default 1024) MB: random lines of Tiny Shakespeare.
2. `prepare` of both (BPE 8000 for the pairs, characters for the text): wall time, peak RSS.
3. Training from the prepared 5M pairs and the 1 GB text, in 1 process (2 threads) and in 2 DDP
   ranks (1 thread each): time from process start to the end of the first step, tokens/s, each
   rank's peak RSS (VmHWM) and, at the end, its private (RssAnon) and file-backed (RssFile)
   resident memory. File-backed pages are the page cache of the token files: shared by the ranks,
   dropped by the kernel under pressure.
4. For scale, the in-memory path on the first --memory-pairs (default 500k) of the same pairs,
   1 process and 2 ranks, and on the first --memory-text-mb (default 64) MB of the text.
5. Tokens/s of the in-memory path against the prepared path on Multi30k, the recipe's model,
   interleaved A, B, A, B so machine load hits both alike (and the training losses, which must
   be equal: one window gives the in-memory batches).

    python benchmarks/big_corpus.py                  # the full measurement (over an hour on 2 heavily loaded cores)
    python benchmarks/big_corpus.py --pairs 200000 --text-mb 32 --memory-pairs 50000 --memory-text-mb 8
                                                     # a quick look

Prints JSON and saves benchmarks/results/big_corpus.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TRANSLATION_MODEL = dict(d_model=128, n_heads=4, n_encoder_layers=4, n_decoder_layers=4, d_ff=256, dropout=0.3,
                         attention_dropout=0.1, norm_first=True, share_embeddings=True, tie_embeddings=True,
                         max_len=128)
LM_MODEL = dict(d_model=128, n_heads=4, n_decoder_layers=4, d_ff=512, dropout=0.0, norm_first=True,
                activation="gelu", bias=False, tie_embeddings=True)
TRAIN = dict(schedule="cosine", lr=4e-3, warmup_steps=10, log_every=1, eval_every=0, eval_examples=16,
             checkpoint_every=0, precision="auto", seed=1)


# --- generated corpora -----------------------------------------------------------------------


def generate_pairs(out: Path, n: int, seed: int = 0) -> None:
    """`n` pairs, each one or two Multi30k training pairs joined; val.* is Multi30k's own."""
    src = (DATA / "multi30k" / "train.de").read_text(encoding="utf-8").splitlines()
    tgt = (DATA / "multi30k" / "train.en").read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.de", "w", encoding="utf-8") as fs, open(out / "train.en", "w", encoding="utf-8") as ft:
        for start in range(0, n, 100_000):
            s_lines, t_lines = [], []
            for _ in range(min(100_000, n - start)):
                a = rng.randrange(len(src))
                if rng.random() < 0.5:
                    s_lines.append(src[a])
                    t_lines.append(tgt[a])
                else:
                    b = rng.randrange(len(src))
                    s_lines.append(f"{src[a]} {src[b]}")
                    t_lines.append(f"{tgt[a]} {tgt[b]}")
            fs.write("\n".join(s_lines) + "\n")
            ft.write("\n".join(t_lines) + "\n")
    for lang in ("de", "en"):
        shutil.copy(DATA / "multi30k" / f"val.{lang}", out / f"val.{lang}")


def generate_text(path: Path, megabytes: int, seed: int = 0) -> None:
    lines = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    target, written = megabytes * 2**20, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            block = "\n".join(rng.choices(lines, k=100_000)) + "\n"
            f.write(block)
            written += len(block.encode("utf-8"))


def head(src: Path, dst: Path, lines: int | None = None, megabytes: int | None = None) -> None:
    with open(src, "rb") as f, open(dst, "wb") as g:
        size = 0
        for n, line in enumerate(f):
            if (lines is not None and n >= lines) or (megabytes is not None and size >= megabytes * 2**20):
                break
            g.write(line)
            size += len(line)


# --- measured processes ----------------------------------------------------------------------


def memory() -> dict[str, float]:
    """Peak and current resident memory of this process, MB (Linux /proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def worker(args: argparse.Namespace) -> None:
    """Runs in a child process (its allocator set by qkv.entry.run_main, as for the qkv command):
    prepare, or train (one rank), then writes its stats JSON."""
    job = json.loads(args.worker)
    stats: dict = {}
    if job["what"] == "prepare":
        from qkv.data.shards import prepare_corpus
        from qkv.run import DataConfig

        report = prepare_corpus(DataConfig(**job["data"]), job["out"], sample=job["sample"])
        stats = {"seconds": round(report.seconds, 1), "counts": report.counts, "tokens": report.tokens,
                 "tokenizer_sample": report.sampled}
    else:
        from qkv.training import loop

        step = loop.Trainer.train_step

        def timed_step(self):
            result = step(self)
            stats.setdefault("first_step_s", round(time.time() - job["t0"], 2))
            return result

        loop.Trainer.train_step = timed_step
        loop.train(job["config"], job["out"], quiet=True)
    stats["memory_mb"] = memory()
    Path(job["stats"]).write_text(json.dumps(stats))


def run_job(job: dict, work: Path, ranks: int = 1) -> list[dict]:
    """Start `ranks` worker processes (a DDP group when > 1) and return their stats."""
    job = dict(job, t0=time.time())
    procs = []
    port = _free_port()
    for rank in range(ranks):
        env = dict(os.environ, OMP_NUM_THREADS="1") if ranks > 1 else dict(os.environ)
        if ranks > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(ranks),
                       LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(ranks))
        rank_job = dict(job, stats=str(work / f"stats.{rank}.json"))
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(rank_job)], env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    return [json.loads((work / f"stats.{rank}.json").read_text()) for rank in range(ranks)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_run(work: Path, name: str, model: dict, train: dict, data: dict, ranks: int) -> dict:
    """Train in `ranks` processes; first-step time, tokens/s (median after step 5), memory per rank."""
    from qkv.training.metrics import read_metrics

    out = work / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    config = {"model": model, "train": dict(TRAIN, **train, threads=2 if ranks == 1 else 1), "data": data}
    if ranks > 1:
        config["train"]["batch_tokens"] = train["batch_tokens"] // ranks     # the same global batch
    stats = run_job({"what": "train", "config": config, "out": str(out)}, work, ranks)
    records = [r for r in read_metrics(out) if r["kind"] == "train"]
    speeds = [r["tokens_per_s"] for r in records if r["step"] > 5]
    return {
        "processes": ranks,
        "steps": len(records),
        "first_step_s": max(s["first_step_s"] for s in stats),
        "tokens_per_s": round(statistics.median(speeds)) if speeds else None,
        "memory_mb_per_rank": [s["memory_mb"] for s in stats],
        "losses": [round(r["loss"], 6) for r in records],
    }


def save(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def machine() -> dict:
    import torch

    from qkv.machine import cpu_has_fast_bf16, cpu_name

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "fast_bf16": cpu_has_fast_bf16(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
            "load_average_1min": os.getloadavg()[0],
            "shared": "other programs ran on the machine during the measurement"}


# --- the measurement -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/qkv-big-corpus"))
    parser.add_argument("--pairs", type=int, default=5_000_000)
    parser.add_argument("--text-mb", type=int, default=1024)
    parser.add_argument("--memory-pairs", type=int, default=500_000)
    parser.add_argument("--memory-text-mb", type=int, default=64)
    parser.add_argument("--sample", type=int, default=200_000, help="sentences (lines) the tokenizer learns from")
    parser.add_argument("--steps", type=int, default=10, help="training steps per run")
    parser.add_argument("--ab-steps", type=int, default=20, help="steps per Multi30k A/B run")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--ab-only", action="store_true",
                        help="only the Multi30k A/B (step 5); updates multi30k_ab in the saved results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.ab_only:
        return ab_only(args, work)
    results: dict = {"machine": machine(), "setup": {
        "pairs": args.pairs, "text_mb": args.text_mb, "tokenizer_sample": args.sample, "steps": args.steps,
        "ab_steps": args.ab_steps, "memory_pairs": args.memory_pairs, "memory_text_mb": args.memory_text_mb,
        "translation_model": TRANSLATION_MODEL, "lm_model": LM_MODEL,
        "batch_tokens": {"translation": 4000, "lm": 2048}, "threads": "1 process: 2; 2 DDP ranks: 1 each"}}

    path = ROOT / "benchmarks" / "results" / "big_corpus.json"

    def say(key: str, value) -> None:
        """Print a result and save everything so far (a partial file says "complete": false)."""
        results[key] = value
        print(f"{key}: {json.dumps(value)}", flush=True)
        save(path, dict(results, complete=False))

    t = time.perf_counter()
    generate_pairs(work / "pairs", args.pairs)
    generate_text(work / "text.txt", args.text_mb)
    say("generate_s", round(time.perf_counter() - t, 1))
    sizes = {"pairs_mb": round(sum((work / "pairs" / f"train.{lang}").stat().st_size for lang in ("de", "en")) / 2**20),
             "text_mb": round((work / "text.txt").stat().st_size / 2**20)}
    say("corpus_sizes", sizes)

    pair_data = dict(PAIR_DATA, dir=str(work / "pairs"))
    text_data = {"kind": "lm", "train_text": str(work / "text.txt"), "tokenizer": "char", "valid_fraction": 0.01,
                 "block_size": 64}
    for name, data in (("pairs", pair_data), ("text", text_data)):
        shutil.rmtree(work / f"prepared-{name}", ignore_errors=True)
        stats = run_job({"what": "prepare", "data": data, "out": str(work / f"prepared-{name}"),
                         "sample": args.sample}, work)[0]
        stats["files_mb"] = round(sum(p.stat().st_size for p in (work / f"prepared-{name}").iterdir()) / 2**20)
        say(f"prepare_{name}", stats)

    steps = {"steps": args.steps}
    for ranks in (1, 2):
        say(f"train_prepared_pairs_{ranks}p", train_run(
            work, f"pairs-{ranks}", TRANSLATION_MODEL, dict(steps, batch_tokens=4000),
            dict(pair_data, prepared=str(work / "prepared-pairs")), ranks))
        say(f"train_prepared_text_{ranks}p", train_run(
            work, f"text-{ranks}", LM_MODEL, dict(steps, batch_tokens=2048),
            dict(text_data, prepared=str(work / "prepared-text")), ranks))

    (work / "small").mkdir(exist_ok=True)
    for lang in ("de", "en"):
        head(work / "pairs" / f"train.{lang}", work / "small" / f"train.{lang}", lines=args.memory_pairs)
        shutil.copy(work / "pairs" / f"val.{lang}", work / "small" / f"val.{lang}")
    head(work / "text.txt", work / "small.txt", megabytes=args.memory_text_mb)
    for ranks in (1, 2):
        say(f"train_in_memory_{args.memory_pairs}_pairs_{ranks}p", train_run(
            work, f"memory-pairs-{ranks}", TRANSLATION_MODEL, dict(steps, batch_tokens=4000),
            dict(pair_data, dir=str(work / "small")), ranks))
    say(f"train_in_memory_{args.memory_text_mb}mb_text_1p", train_run(
        work, "memory-text", LM_MODEL, dict(steps, batch_tokens=2048),
        dict(text_data, train_text=str(work / "small.txt")), 1))

    say("multi30k_ab", multi30k_ab(args, work, pair_data))
    results["load_average_1min_end"] = os.getloadavg()[0]
    save(path, dict(results, complete=True))
    print(f"wrote {path}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


PAIR_DATA = {"kind": "translation", "src_lang": "de", "tgt_lang": "en", "tokenizer": "bpe", "vocab_size": 8000,
             "min_freq": 2, "shared_vocab": True, "max_tokens": 100}


def ab_only(args: argparse.Namespace, work: Path) -> None:
    path = ROOT / "benchmarks" / "results" / "big_corpus.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["multi30k_ab"] = dict(multi30k_ab(args, work, PAIR_DATA), machine=machine())
    print(f"multi30k_ab: {json.dumps(results['multi30k_ab'])}", flush=True)
    save(path, results)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def multi30k_ab(args: argparse.Namespace, work: Path, pair_data: dict) -> dict:
    """Multi30k: the in-memory path against the prepared one, interleaved A, B, A, B."""
    m30k = dict(pair_data, dir=str(DATA / "multi30k"))
    shutil.rmtree(work / "prepared-m30k", ignore_errors=True)
    run_job({"what": "prepare", "data": m30k, "out": str(work / "prepared-m30k"), "sample": args.sample}, work)
    ab: dict = {"in_memory": [], "prepared": []}
    for round_ in range(2):
        for name, data in (("in_memory", m30k), ("prepared", dict(m30k, prepared=str(work / "prepared-m30k")))):
            run = train_run(work, f"m30k-{name}-{round_}", TRANSLATION_MODEL,
                            {"steps": args.ab_steps, "batch_tokens": 4000}, data, 1)
            ab[name].append(run)
    return {
        name: {"tokens_per_s": [r["tokens_per_s"] for r in runs], "first_step_s": [r["first_step_s"] for r in runs],
               "peak_rss_mb": [r["memory_mb_per_rank"][0]["VmHWM"] for r in runs]}
        for name, runs in ab.items()} | {
        "ratio_prepared_over_in_memory": round(
            sum(r["tokens_per_s"] for r in ab["prepared"]) / sum(r["tokens_per_s"] for r in ab["in_memory"]), 3),
        "same_losses": ab["in_memory"][0]["losses"] == ab["prepared"][0]["losses"],
        "steps": args.ab_steps, "load_average_1min_end": os.getloadavg()[0]}


if __name__ == "__main__":
    from qkv.entry import run_main

    sys.exit(run_main(main))
