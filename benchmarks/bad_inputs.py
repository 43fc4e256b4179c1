"""Try many bad inputs on the command line and count how each ends: a clean one-line error, a
traceback, or a silent wrong result (exit 0 where an error or a warning was due).

    python benchmarks/bad_inputs.py          # prints JSON, saves benchmarks/results/bad_inputs.json

Every case runs `qkv.cli.main` in this process (seconds in all; the tiny runs it needs are built
in a temporary directory). The [train] and [data] cases are generated from the declared ranges
(`TRAIN_RANGES`, `DATA_RANGES`, `MODEL_RANGES`): for every option a value below its interval, a value above it
where it has a finite bound, NaN or infinity for floats and 2**64 for integers. A case is clean when the exit
status is non-zero and stderr is exactly one line starting with "error:"; a case that expects a
warning must exit 0 with a "warning:" line. Some cases also check what was left on disk (no
weights after a failed start, no NaN checkpoint after a divergence).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any
from pathlib import Path
from collections.abc import Callable

import torch
from safetensors.torch import load_file, save_file

from qkv.cli import main as qkv_main
from qkv.config import MODEL_RANGES, ModelConfig
from qkv.entry import run_main
from qkv.machine import cpu_has_fast_bf16, cpu_name
from qkv.model import build_model
from qkv.interop.ct2 import export_ct2
from qkv.run import RunDir, load_run, save_weights
from qkv.tokenizers import CharTokenizer
from qkv.run import save_run
from qkv.run import DATA_RANGES, TRAIN_RANGES, DataConfig, TrainConfig

TINY = [
    "model.d_model=16", "model.n_heads=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
    "model.d_ff=32", "train.batch_tokens=120", "train.precision=fp32", "train.threads=1",
    "train.eval_examples=8", "train.steps=2", "train.eval_every=2", "data.train_size=60",
    "data.valid_size=8", "data.max_len=5",
]


@dataclass
class Case:
    name: str
    args: list[str]
    expect: str = "error"                          # or "warning", or "ok" (exit 0, the check passes)
    stdin: bytes | str | None = None               # bytes piped in, or "closed" (started with 0<&-)
    terminal: str = ""                             # "full": stdout on a full device; "ascii": an ASCII-only one
    check: Callable[[], str | None] | None = None  # after the run: a problem found on disk, or None
    outcome: str = ""
    detail: str = ""


def tiny_run(path: Path, arch: str = "encoder-decoder") -> Path:
    torch.manual_seed(0)
    tok = CharTokenizer.from_alphabet("abcdefghijklmnopqrstuvwxyz ")
    v = tok.vocab_size
    cfg = ModelConfig(arch=arch, src_vocab_size=v if arch == "encoder-decoder" else 0, tgt_vocab_size=v,
                      d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, max_len=32)
    return save_run(path, build_model(cfg), {"data": {"task": "test"}}, tok if arch == "encoder-decoder" else None, tok)


FILLED_IN = {"src_vocab_size"}       # training sets it from the tokenizer, whatever the config says


def train_cases(root: Path) -> list[Case]:
    """One case per bad value of every numeric [train] / [data] / ranged [model] option."""
    cases = []
    sections = (("train", TrainConfig, TRAIN_RANGES), ("data", DataConfig, DATA_RANGES), ("model", ModelConfig, MODEL_RANGES))
    for section, cls, ranges in sections:
        for name, rule in ranges.items():
            if name in FILLED_IN:
                continue
            low, high = (float(x) for x in rule[1:-1].split(","))
            is_float = cls.__dataclass_fields__[name].type == "float"
            if is_float:
                bad: list = [low if rule[0] == "(" else low - 0.5, "nan", "inf"]
                if math.isfinite(high):
                    bad.append(high if rule[-1] == ")" else high + 0.5)
            else:
                bad = [int(low) - 1, 2**64]
                if math.isfinite(high):
                    bad.append(int(high) + 1)
            for value in bad:
                out = root / f"t-{section}-{name}-{value}"
                cases.append(Case(f"--set {section}.{name}={value}",
                                  ["train", "-q", "--task", "reverse", "--out", str(out),
                                   *sum((["--set", kv] for kv in TINY), []), "--set", f"{section}.{name}={value}"],
                                  check=_no_weights(out)))
    return cases


def _no_weights(out: Path) -> Callable[[], str | None]:
    return lambda: f"{RunDir(out).weights()} was written" if RunDir(out).weights().exists() else None


def _unchanged(run: Path) -> Callable[[], str | None]:
    """The run's files as they are now must still be there, byte for byte, after the case (the
    hidden .qkv-lock, which an earlier case may create, is bookkeeping, not the run)."""
    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.startswith(".")}

    before = files()

    def check() -> str | None:
        after = files()
        return None if after == before else f"{run} was changed: {sorted(set(after.items()) ^ set(before.items()))[0][0]}"
    return check


def _finite_checkpoint(out: Path) -> Callable[[], str | None]:
    def check() -> str | None:
        for path in (RunDir(out).weights(), RunDir(out).weights("last")):
            if path.exists() and not all(bool(torch.isfinite(t).all()) for t in load_file(path).values()):
                return f"{path.name} holds NaN"
        return None
    return check


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 4
    path.write_bytes(bytes(data))


def llama_cases(root: Path) -> list[Case]:
    """`qkv import` of a Llama directory damaged in each way a copy or a hand edit can damage it."""
    import shutil

    try:
        import transformers  # noqa: F401
    except ImportError:
        return []
    from qkv.interop import export_run
    from safetensors.torch import save_file as save_st

    torch.manual_seed(0)
    cfg = ModelConfig(arch="decoder-only", src_vocab_size=0, tgt_vocab_size=30, d_model=16, n_heads=2, n_kv_heads=1,
                      n_decoder_layers=1, d_ff=48, max_len=32, norm_first=True, positional="rope", norm="rmsnorm",
                      activation="swiglu", bias=False, scale_embeddings=False, tie_embeddings=False)
    tok = CharTokenizer.from_alphabet("abcdefghijklmnopqrstuvwxyz")
    good = export_run(save_run(root / "llama-run", build_model(cfg), {}, None, tok), "hf", root / "llama-hf")

    def config(d: Path, **changes: Any) -> None:
        data = json.loads((d / "config.json").read_text())
        for key, value in changes.items():
            if value is None:
                data.pop(key)
            else:
                data[key] = value
        (d / "config.json").write_text(json.dumps(data))

    def shape(d: Path) -> None:
        weights = load_file(d / "model.safetensors")
        name = next(k for k in weights if k.endswith("q_proj.weight"))
        save_st({**weights, name: weights[name][:-1]}, d / "model.safetensors", metadata={"format": "pt"})

    deep = "[" * 100_000 + "]" * 100_000
    damage: dict[str, Callable[[Path], Any]] = {
        "no config.json": lambda d: (d / "config.json").unlink(),
        "config.json not JSON": lambda d: (d / "config.json").write_text("{hidden"),
        "config.json nested deeply": lambda d: (d / "config.json").write_text(deep),
        "config.json without hidden_size": lambda d: config(d, hidden_size=None),
        "config.json hidden_size a string": lambda d: config(d, hidden_size="big"),
        "no weights": lambda d: (d / "model.safetensors").unlink(),
        "truncated weights": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:300]),
        "weight of the wrong shape": shape,
        "index naming a missing shard": lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors.index.json")
                                                   .write_text('{"weight_map": {"x": "model-1.safetensors"}}')),
        "no tokenizer.json": lambda d: (d / "tokenizer.json").unlink(),
        "tokenizer.json not JSON": lambda d: (d / "tokenizer.json").write_text("{"),
    }
    cases = []
    for i, (name, spoil) in enumerate(damage.items()):
        src = root / f"llama-bad-{i}"
        shutil.copytree(good, src)
        spoil(src)
        cases.append(Case(f"import Llama: {name}", ["import", "--from", str(src), "--out", str(root / f"llama-out-{i}")],
                          check=lambda i=i: f"llama-out-{i} written" if (root / f"llama-out-{i}").exists() else None))
    return cases


def line_and_output_cases(root: Path, mt: str) -> tuple[list[Case], Any]:
    """Very long lines, damaged exports, corpora of the wrong shape, prepare's output, nesting,
    full devices, closed stdin, an ASCII terminal; and the lock that a prepare running elsewhere
    would hold (held around the case that runs into it)."""
    from qkv.data.shards import _prepare_lock
    from qkv.tokenizers import MAX_TRAIN_LINE_CHARS

    long_line = "x" * (MAX_TRAIN_LINE_CHARS + 1)
    (root / "long.txt").write_text(f"hello world\n{long_line}\nhello again\n")
    (root / "a.de").write_text("hallo welt\nguten tag\n")
    (root / "a.en").write_text("hello world\ngood day\n")
    (root / "cr.de").write_bytes(b"hallo\rwelt\r")
    (root / "blank.de").write_text("\n  \n\n")
    (root / "corpus-dir").mkdir()
    deep = "[" * 100_000 + "]" * 100_000
    (root / "deep.toml").write_text(f"x = {deep}\n")
    (root / "deep.json").write_text(deep)

    def data_toml(name: str, train_src: str, train_tgt: str = "a.en") -> str:
        (root / f"{name}.toml").write_text(
            f'[data]\nkind = "translation"\ntokenizer = "char"\ntrain_src = "{train_src}"\n'
            f'train_tgt = "{train_tgt}"\nvalid_src = "a.de"\nvalid_tgt = "a.en"\n')
        return str(root / f"{name}.toml")

    ok, cr, blank = data_toml("ok", "a.de"), data_toml("cr", "cr.de", "cr.de"), data_toml("blank", "blank.de", "blank.de")
    in_dir = data_toml("in-dir", "corpus-dir")
    (root / "stale").mkdir()
    (root / "stale" / ".p.prepare-k1ll3d.tmp").mkdir()

    def no_stale() -> str | None:
        left = sorted(p.name for p in (root / "stale").iterdir() if p.name != "p")
        return f"left beside the output: {left}" if left else None

    held = Case("prepare while another prepare writes the same output",       # main() holds its lock
                ["prepare", "-c", ok, "--out", str(root / "held")])
    ct2 = None
    try:
        import ctranslate2  # noqa: F401
        from qkv.interop import export_run

        ct2 = export_run(mt, "ct2", root / "ct2")
        (ct2 / "model.bin").write_bytes((ct2 / "model.bin").read_bytes()[:1000])
    except ImportError:
        pass
    return [
        Case("tokenize --kind bpe --train FILE with a line over the limit",
             ["tokenize", "--kind", "bpe", "--train", str(root / "long.txt"), "hello"], expect="warning"),
        Case("tokenize --kind bpe TEXT over the limit", ["tokenize", "--kind", "bpe", long_line]),
        *([Case("translate --engine ct2 truncated model.bin", ["translate", "-m", mt, "--engine", "ct2",
                                                                "--ct2-model", str(ct2), "abc"]),
           Case("serve --engine ct2 truncated model.bin", ["serve", "-m", mt, "--port", "8793", "--engine", "ct2",
                                                            "--ct2-model", str(ct2)])] if ct2 else []),
        Case("prepare --out FILE", ["prepare", "-c", ok, "--out", str(root / "file")]),
        Case("prepare --out FILE/sub", ["prepare", "-c", ok, "--out", str(root / "file" / "sub")]),
        held,
        Case("prepare after a killed prepare left its temporary directory",
             ["prepare", "-c", ok, "--out", str(root / "stale" / "p")], expect="ok", check=no_stale),
        Case("prepare a corpus with CR-only line ends", ["prepare", "-c", cr, "--out", str(root / "p-cr")]),
        Case("prepare a corpus of blank lines", ["prepare", "-c", blank, "--out", str(root / "p-blank")]),
        Case("prepare a directory given as a corpus file", ["prepare", "-c", in_dir, "--out", str(root / "p-dir")]),
        Case("train --config nested too deeply", ["train", "-q", "--config", str(root / "deep.toml")]),
        Case("train --set nested too deeply", ["train", "-q", "--out", str(root / "deep"), "--set", f"model.d_model={deep}"]),
        Case("tokenize --tokenizer nested too deeply", ["tokenize", "--tokenizer", str(root / "deep.json"), "abc"]),
        *([Case("translate --output /dev/full", ["translate", "-m", mt, "abc", "--output", "/dev/full"],
                check=lambda: "/dev/full was replaced by a file" if Path("/dev/full").is_file() else None)]
          if Path("/dev/full").exists() else []),
        Case("translate to a full stdout", ["translate", "-m", mt, "abc"], terminal="full"),
        Case("translate with stdin closed", ["translate", "-m", mt], stdin="closed"),
        Case("translate with an empty stdin", ["translate", "-m", mt], stdin=b"", expect="warning"),
        Case("tokenize non-ASCII on an ASCII-only terminal", ["tokenize", "--kind", "char", "Grüße"], terminal="ascii",
             expect="warning"),
    ], _prepare_lock(root / "held")


def other_cases(root: Path) -> list[Case]:
    mt, lm = str(tiny_run(root / "mt")), str(tiny_run(root / "lm", "decoder-only"))
    (root / "file").write_text("x")
    (root / "latin1.txt").write_bytes("Grüße\n".encode("latin-1"))
    (root / "bad.toml").write_text("[train\n")
    (root / "notok.json").write_text("[]")
    broken = Path(tiny_run(root / "broken"))
    RunDir(broken).weights().write_bytes(b"\0" * 64)
    meta = Path(tiny_run(root / "meta"))
    save_file(load_file(RunDir(meta).weights()), RunDir(meta).weights(),
              metadata={"format": "pt", "qkv_model_config": "not json"})
    nan = Path(tiny_run(root / "nan"))
    weights = load_file(RunDir(nan).weights())
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, RunDir(nan).weights(),
              metadata={"format": "pt"})
    flipped_weights, flipped_tok = Path(tiny_run(root / "flip-w")), Path(tiny_run(root / "flip-t"))
    _flip_bit(RunDir(flipped_weights).weights())        # one bit in the tensor data
    _flip_bit(RunDir(flipped_tok).tokenizer)
    other = load_run(tiny_run(root / "other"))          # the same vocabulary, other weights
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    save_weights(other.dir.weights(), other.model)
    ct2_of_mt = export_ct2(mt, root / "mt-ct2")
    huge = Path(tiny_run(root / "huge"))           # a hand-edited config.toml: positions for 10**12 tokens
    config = RunDir(huge).config.read_text()
    RunDir(huge).config.write_text(config.replace("max_len = ", "max_len = 1000000000000  # ", 1))
    tr = lambda *a: ["translate", "-m", mt, *a]        # noqa: E731
    tiny = sum((["--set", kv] for kv in TINY), [])
    surrogate = "ab\udcffc"
    return [
        Case("translate --temperature nan", tr("--sample", "--temperature", "nan", "abc")),
        Case("translate --temperature 0", tr("--sample", "--temperature", "0", "abc")),
        Case("translate --top-p nan", tr("--sample", "--top-p", "nan", "abc")),
        Case("translate --top-p 2", tr("--sample", "--top-p", "2", "abc")),
        Case("translate --seed 10**30", tr("--sample", "--seed", str(10**30), "abc")),
        Case("translate --seed -1", tr("--sample", "--seed", "-1", "abc")),
        Case("translate --length-penalty nan", tr("--length-penalty", "nan", "abc")),
        Case("translate --length-penalty inf", tr("--length-penalty", "inf", "abc")),
        Case("translate --beam 0", tr("--beam", "0", "abc")),
        Case("translate --beam 100000", tr("--beam", "100000", "abc")),
        Case("translate --n-best 9 --beam 2", tr("--beam", "2", "--n-best", "9", "abc")),
        Case("translate --output DIR", tr("--output", str(root), "abc")),
        Case("translate --output FILE/x", tr("--output", str(root / "file" / "x"), "abc")),
        Case("translate --input missing", tr("--input", str(root / "missing.txt"))),
        Case("translate --input latin-1", tr("--input", str(root / "latin1.txt"))),
        Case("translate stdin latin-1", tr(), stdin="Grüße\n".encode("latin-1")),
        Case("translate TEXT with a lone surrogate", tr(surrogate)),
        Case("translate TEXT and --input", tr("--input", str(root / "latin1.txt"), "abc")),
        Case("translate --engine bogus", tr("--engine", "bogus", "abc")),
        Case("translate all <unk>", tr("--beam", "1", "안녕하세요"), expect="warning"),
        Case("translate a language model", ["translate", "-m", lm, "abc"]),
        Case("translate missing run", ["translate", "-m", str(root / "nowhere"), "abc"]),
        Case("translate corrupt weights", ["translate", "-m", str(broken), "abc"]),
        Case("translate weights metadata not JSON", ["translate", "-m", str(meta), "abc"]),
        Case("translate NaN weights", ["translate", "-m", str(nan), "abc"]),
        Case("translate one flipped bit in model.safetensors", ["translate", "-m", str(flipped_weights), "abc"]),
        Case("translate one flipped bit in tokenizer.json", ["translate", "-m", str(flipped_tok), "abc"]),
        Case("translate --engine ct2 with another run's export",
             ["translate", "-m", str(other.path), "--engine", "ct2", "--ct2-model", str(ct2_of_mt), "abc"]),
        Case("generate with a translation model", ["generate", "-m", mt, "--prompt", "ab"]),
        Case("generate --prompt lone surrogate", ["generate", "-m", lm, "--prompt", surrogate]),
        Case("generate --temperature nan", ["generate", "-m", lm, "--temperature", "nan"]),
        Case("evaluate misaligned", ["evaluate", "-m", mt, "--src", str(root / "latin1.txt"), "--ref", str(root / "file")]),
        Case("tokenize --save DIR", ["tokenize", "--kind", "char", "--save", str(root), "abc"]),
        Case("tokenize --save FILE/x", ["tokenize", "--kind", "char", "--save", str(root / "file" / "x"), "abc"]),
        *[Case(f"tokenize --kind {k} lone surrogate", ["tokenize", "--kind", k, "--save", str(root / f"s-{k}.json"), surrogate],
               check=lambda k=k: f"s-{k}.json written" if (root / f"s-{k}.json").exists() else None)
          for k in ("char", "word", "bpe")],
        Case("tokenize --kind bogus", ["tokenize", "--kind", "bogus", "abc"]),
        Case("tokenize --tokenizer missing", ["tokenize", "--tokenizer", str(root / "none.json"), "abc"]),
        Case("tokenize --tokenizer not a tokenizer", ["tokenize", "--tokenizer", str(root / "notok.json"), "abc"]),
        Case("tokenize --vocab-size 3", ["tokenize", "--vocab-size", "3", "abc"]),
        Case("tokenize --vocab-size 10**11", ["tokenize", "--vocab-size", str(10**11), "abc"]),
        Case("train --out FILE", ["train", "-q", "--out", str(root / "file"), *tiny]),
        Case("train --out FILE/sub", ["train", "-q", "--out", str(root / "file" / "sub"), *tiny]),
        Case("train --config missing", ["train", "-q", "--config", str(root / "none.toml")]),
        Case("train --config not TOML", ["train", "-q", "--config", str(root / "bad.toml")]),
        Case("train --task and --config", ["train", "-q", "--task", "copy", "--config", str(root / "bad.toml")]),
        Case("train --task bogus", ["train", "-q", "--task", "bogus"]),
        Case("train --set unknown key", ["train", "-q", "--out", str(root / "u"), "--set", "train.warmup=3"]),
        Case("train --set train.optimizer=sgd", ["train", "-q", "--out", str(root / "sgd"), *tiny, "--set",
                                                 "train.optimizer=sgd"]),
        Case("train --set model.d_model=0", ["train", "-q", "--out", str(root / "d0"), *tiny, "--set", "model.d_model=0"]),
        *[Case(f"train --set {kv} (cannot fit)", ["train", "-q", "--out", str(root / f"big-{i}"), *tiny, "--set", kv],
               check=_no_weights(root / f"big-{i}"))
          for i, kv in enumerate(["model.max_len=1000000000000", f"model.d_model={2**40}", "model.d_ff=4000000000"])],
        Case("translate a run whose config.toml cannot fit", ["translate", "-m", str(huge), "abc"]),
        Case("train --set model.max_len=3", ["train", "-q", "--out", str(root / "ml3"), *tiny, "--set", "model.max_len=3"],
             check=_no_weights(root / "ml3")),
        Case("train --set train.lr=1e30 (diverges)",
             ["train", "-q", "--out", str(root / "div"), *tiny, "--set", "train.lr=1e30", "--set", "train.steps=20",
              "--set", "train.checkpoint_every=1", "--set", "train.eval_every=1"],
             check=_finite_checkpoint(root / "div")),
        Case("train --resume missing", ["train", "-q", "--resume", str(root / "nowhere")]),
        Case("train --resume a run with no checkpoint", ["train", "-q", "--resume", mt]),
        Case("train --resume with --task", ["train", "-q", "--resume", mt, "--task", "dates"]),
        Case("serve --host not here", ["serve", "-m", mt, "--host", "192.0.2.1", "--port", "8765"]),
        Case("serve --port 0", ["serve", "-m", mt, "--port", "0"]),
        *[Case(f"serve --timeout {t}", ["serve", "-m", mt, "--timeout", t]) for t in ("0", "-5", "nan", "inf")],
        Case("explain --layer 99", ["explain", "abc", "-m", mt, "--layer", "99", "--out", str(root / "e.html")]),
        *[Case(f"explain --lang {lang!r}", ["explain", "abc", "-m", mt, "--lang", lang, "--out", str(root / "lang.html")],
               check=_absent(root / "lang.html")) for lang in ("xx", "", "KO", "ko-KR")],
        Case("explain --lang xx on an ASCII-only terminal",
             ["explain", "abc", "-m", mt, "--lang", "xx", "--out", str(root / "lang.html")], terminal="ascii"),
        Case("viz pe --d-model 3", ["viz", "pe", "--d-model", "3", "--out", str(root / "pe.png")]),
        Case("viz pe --d-model 10**9", ["viz", "pe", "--d-model", str(10**9), "--out", str(root / "pe.png")]),
        Case("viz embeddings unknown word", ["viz", "embeddings", "-m", mt, "--word", "zzzz", "--out", str(root / "e.png")]),
        Case("export --out the run itself", ["export", "-m", mt, "--out", mt], check=_unchanged(Path(mt))),
        Case("import --out an existing run", ["import", "--from", "minilm", "--out", mt], check=_unchanged(Path(mt))),
        Case("train --out a run without a checkpoint", ["train", "-q", "--out", mt, *tiny], check=_unchanged(Path(mt))),
        Case("demo --out a run it did not write", ["demo", "--out", lm], check=_unchanged(Path(lm))),
        Case("explain --out RUN/model.safetensors", ["explain", "abc", "-m", mt, "--out", str(RunDir(mt).weights())],
             check=_unchanged(Path(mt))),
        Case("translate --output RUN/config.toml", tr("--output", str(RunDir(mt).config), "abc"), check=_unchanged(Path(mt))),
        Case("train --processes 100000", ["train", "-q", "--task", "reverse", "--processes", "100000", "--out", str(root / "np")],
             check=_no_weights(root / "np")),
        Case("history --seed -1", ["history", "--seed", "-1", "--steps", "1", "--out", str(root / "h")]),
        Case("average with no step files", ["average", mt]),
        Case("plot a directory without metrics", ["plot", str(root)]),
        Case("export --format bogus", ["export", "-m", mt, "--out", str(root / "x"), "--format", "bogus"]),
        *output_cases(root, mt, tiny),
    ]


def _intact(path: Path) -> Callable[[], str | None]:
    """`path` (a file, or every file of a directory) must be there, byte for byte, after the case."""
    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in ([path] if path.is_file() else path.iterdir()) if p.is_file()}

    before = files()
    return lambda: None if files() == before else f"{path} was changed"


def _absent(path: Path) -> Callable[[], str | None]:
    """Nothing at `path` (nor a temporary sibling of it) after the case: no partial output."""
    def check() -> str | None:
        left = [p.name for p in path.parent.glob(f".{path.name}.*")] + ([path.name] if path.exists() else [])
        return f"left behind: {', '.join(left)}" if left else None
    return check


def output_cases(root: Path, mt: str, tiny: list[str]) -> list[Case]:
    """Output options aimed at a run's files, directly or through a link; exports and prepared
    corpora over files, foreign directories and full devices: refused in one line, nothing changed."""
    victim = Path(tiny_run(root / "victim"))              # a run with a train state and step checkpoints to average
    RunDir(victim).state.write_bytes(b"the train state")
    for step in (1, 2):
        RunDir(victim).step_weights(step).write_bytes(RunDir(victim).weights().read_bytes())
    links = root / "links"
    links.mkdir()
    (links / "picture.png").symlink_to(RunDir(victim).weights())
    (links / "out.txt").symlink_to(RunDir(victim).config)
    (links / "run").symlink_to(victim)
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    lock_link = root / "lock-link"
    lock_link.mkdir()
    (lock_link / ".qkv-lock").symlink_to(RunDir(victim).weights())
    (root / "prep.toml").write_text(f'[data]\nkind = "translation"\ndir = "{root / "nowhere"}"\nsrc_lang = "de"\ntgt_lang = "en"\n')
    marked = root / "marked-demo"                           # looks like an earlier demo, behind a link
    marked.mkdir()
    (marked / ".qkv-demo").write_text("marked")
    (links / "demo").symlink_to(marked)
    v, intact = str(victim), _intact(victim)
    cases = [
        Case("plot --out RUN/model.safetensors", ["plot", v, "--out", str(RunDir(v).weights())], check=intact),
        Case("average --out RUN/train_state.pt", ["average", v, "--last", "2", "--out", str(RunDir(v).state)], check=intact),
        Case("average --out RUN/config.toml", ["average", v, "--last", "2", "--out", str(RunDir(v).config)], check=intact),
        Case("average --out RUN/model.safetensors", ["average", v, "--last", "2", "--out", str(RunDir(v).weights())], check=intact),
        Case("viz pe --out LINK to RUN/model.safetensors", ["viz", "pe", "--out", str(links / "picture.png")], check=intact),
        Case("plot --out LINK to RUN/model.safetensors", ["plot", v, "--out", str(links / "picture.png")], check=intact),
        Case("translate --output LINK to RUN/config.toml", ["translate", "-m", mt, "--output", str(links / "out.txt"), "abc"],
             check=intact),
        Case("explain --out LINKED-DIR/model.safetensors", ["explain", "abc", "-m", mt, "--out", str(links / "run" / "model.safetensors")],
             check=intact),
        Case("tokenize --save LINKED-DIR/tokenizer.json", ["tokenize", "--kind", "char", "--save", str(links / "run" / "tokenizer.json"), "abc"],
             check=intact),
        Case("average --out LINK to RUN/model.safetensors", ["average", v, "--last", "2", "--out", str(links / "picture.png")],
             check=intact),
        Case("demo --out LINK to a marked directory", ["demo", "--out", str(links / "demo")], check=_intact(marked)),
        Case("history --out RUN", ["history", "--steps", "1", "--models", "rnn", "--out", v], check=intact),
        Case("train with a .qkv-lock that links to weights", ["train", "-q", "--out", str(lock_link), *tiny], check=intact),
        Case("export --out FILE", ["export", "-m", mt, "--out", str(root / "file")], check=_intact(root / "file")),
        Case("export --out a foreign non-empty dir", ["export", "-m", mt, "--out", str(foreign)], check=_intact(foreign)),
        Case("export --format ct2 --out FILE", ["export", "-m", mt, "--format", "ct2", "--out", str(root / "file")],
             check=_intact(root / "file")),
        Case("prepare --out FILE", ["prepare", "-c", str(root / "prep.toml"), "--out", str(root / "file")],
             check=_intact(root / "file")),
        Case("prepare --out a foreign non-empty dir", ["prepare", "-c", str(root / "prep.toml"), "--out", str(foreign)],
             check=_intact(foreign)),
        Case("prepare a missing corpus leaves nothing", ["prepare", "-c", str(root / "prep.toml"), "--out", str(root / "prep")],
             check=_absent(root / "prep")),
    ]
    if Path("/dev/full").is_char_device():           # a full disk, without root tricks
        cases += [
            Case("translate --output /dev/full", ["translate", "-m", mt, "--output", "/dev/full", "abc"]),
            Case("tokenize --save /dev/full", ["tokenize", "--kind", "char", "--save", "/dev/full", "abc"]),
            Case("viz pe --out /dev/full", ["viz", "pe", "--out", "/dev/full"]),
            Case("explain --out /dev/full", ["explain", "abc", "-m", mt, "--out", "/dev/full"]),
        ]
    return cases


class _FullDevice(io.StringIO):
    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


class _AsciiTerminal(io.TextIOWrapper):
    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="ascii")

    def getvalue(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("ascii")  # type: ignore[attr-defined]


def run_case(case: Case) -> None:
    err: Any = _AsciiTerminal() if case.terminal == "ascii" else io.StringIO()
    out: Any = {"full": _FullDevice, "ascii": _AsciiTerminal}.get(case.terminal, io.StringIO)()
    stdin = (io.TextIOWrapper(io.BytesIO(case.stdin), encoding="utf-8", errors="replace")
             if isinstance(case.stdin, bytes) else None)
    old_stdin = sys.stdin
    try:
        if stdin is not None or case.stdin == "closed":
            sys.stdin = stdin                   # None: what Python gives a process started with stdin closed
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = qkv_main(case.args)
    except BaseException as exc:  # noqa: BLE001 - a traceback is what this script counts
        case.outcome, case.detail = "traceback", "".join(traceback.format_exception_only(exc)).strip()[:300]
        return
    finally:
        sys.stdin = old_stdin
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    problem = case.check() if case.check else None
    if "Traceback" in err.getvalue():
        case.outcome = "traceback"
    elif problem:
        case.outcome = "silent"
    elif case.expect == "warning":
        case.outcome = "warned" if code == 0 and any(line.startswith("warning:") for line in lines) else "silent"
    elif case.expect == "ok":
        case.outcome = "clean" if code == 0 else "messy"
    elif code == 0:
        case.outcome = "silent"
    elif len(lines) == 1 and lines[0].startswith("error:") or (code == 2 and any("Usage:" in line for line in lines)):
        case.outcome = "clean"                     # click's usage errors (exit 2) are clean too
    else:
        case.outcome = "messy"
    case.detail = problem or (lines[-1] if lines else "")[:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bad_inputs.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = train_cases(root) + other_cases(root) + llama_cases(root)
        more, held_lock = line_and_output_cases(root, str(root / "mt"))
        cases += more
        for case in cases:
            if case.name.startswith("prepare while another"):
                with held_lock:
                    run_case(case)
            else:
                run_case(case)
    counts = {k: sum(c.outcome == k for c in cases) for k in ("clean", "warned", "traceback", "silent", "messy")}
    result = {
        "benchmark": "bad_inputs",
        "cases": len(cases),
        "counts": counts,
        "not_clean": [{"case": c.name, "outcome": c.outcome, "detail": c.detail}
                      for c in cases if c.outcome not in ("clean", "warned")],
        "all": [{"case": c.name, "outcome": c.outcome, "stderr": c.detail} for c in cases],
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"cpu": cpu_name(), "fast_bf16": cpu_has_fast_bf16(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "python": platform.python_version(), "load_avg_1m": round(os.getloadavg()[0], 1)},
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(run_main(main))
