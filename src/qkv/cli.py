"""The `qkv` command line. Each command is a thin layer over the library.

Errors that qkv raises on purpose (`QkvError`) are printed on one line, with exit status 2;
Ctrl-C exits with status 130. Tracebacks are for bugs only (set QKV_DEBUG=1 to see them always).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from qkv.entry import run_main

app = typer.Typer(
    name="qkv",
    help="Implement, train, run and explain the Transformer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Implement, train, run and explain the Transformer."""


def echo_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def not_a_run_file(path: Path | None) -> Path | None:
    """An output option's check: never write over a file of a qkv run (its weights, state, config,
    tokenizer or log), directly or through a link, e.g. `qkv explain ... --out RUN/model.safetensors`."""
    from qkv.errors import OutputError
    from qkv.run import refuse_run_file

    if path is not None:
        try:
            refuse_run_file(path, "")
        except OutputError as exc:
            raise typer.BadParameter(str(exc).strip()) from None
    return path


# ---------------------------------------------------------------------------------------------
# Commands. Keep each one short: parse options, call the library, print the result.
# ---------------------------------------------------------------------------------------------


@app.command()
def version() -> None:
    """Print the qkv and PyTorch versions."""
    import torch

    import qkv

    typer.echo(f"qkv {qkv.__version__} (torch {torch.__version__})")


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="built-in task: copy, reverse, sort, addition, dates")] = "reverse",
    out: Annotated[Path, typer.Option(help="run directory to write")] = Path("runs/demo"),
) -> None:
    """Train a small Transformer on a built-in task (under a minute on a CPU) and show its answers."""
    from qkv.demo import print_demo, run_demo

    print_demo(run_demo(out, task), task)


@app.command()
def tokenize(
    text: Annotated[str, typer.Argument(help="Text to split into tokens.")],
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", "-t", help="A saved tokenizer JSON, e.g. RUN/tokenizer.json.")] = None,
    kind: Annotated[str, typer.Option(help="Kind to train when no --tokenizer is given: char, word or bpe.")] = "bpe",
    compare: Annotated[bool, typer.Option("--compare", help="Show char, word and BPE side by side with token counts.")] = False,
    train: Annotated[list[Path] | None, typer.Option("--train", help="UTF-8 text file to train on (repeatable); default: TEXT itself.")] = None,
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", help="Largest vocabulary when training.", min=5)] = None,
    save: Annotated[Path | None, typer.Option(help="Write the tokenizer to this JSON file.", callback=not_a_run_file)] = None,
) -> None:
    """Show the tokens and ids of TEXT as a table, with a saved tokenizer or one trained on the spot.

    With --compare, char, word and BPE tokenizers (trained on --train files, or on TEXT itself)
    split TEXT side by side; --tokenizer replaces the one of its kind.
    """
    from itertools import chain

    from rich.console import Console
    from rich.table import Table

    from qkv.data.corpus import iter_text_lines
    from qkv.errors import ConfigError, DataError
    from qkv.tokenizers import KINDS, MAX_TRAIN_LINE_CHARS, load_tokenizer, train_tokenizer

    if not train and tokenizer is None and len(text) > MAX_TRAIN_LINE_CHARS:
        raise DataError(f"TEXT has {len(text):,} characters, more than the {MAX_TRAIN_LINE_CHARS:,} a tokenizer "
                        f"learns from at once; give a saved --tokenizer, or --train FILE with shorter lines")

    def trained(kind: str):
        if train:
            return train_tokenizer(kind, chain.from_iterable(iter_text_lines(p) for p in train), vocab_size)
        return train_tokenizer(kind, [text], vocab_size, min_freq=1)   # every merge or word seen once counts

    console = Console(highlight=False)
    given = load_tokenizer(tokenizer) if tokenizer is not None else None
    source = "trained on " + (", ".join(str(p) for p in train) if train else "TEXT itself")
    if compare:
        if save is not None:
            raise ConfigError("--save keeps one tokenizer; use it without --compare")
        console.print(f"{text!r} split three ways; vocabularies {source}"
                      + (f" ({tokenizer} for {given.kind})" if given is not None else ""))
        table = Table()
        for col, justify in (("tokenizer", "left"), ("tokens", "right"), ("vocabulary", "right"), ("split", "left")):
            table.add_column(col, justify=justify, overflow="fold")
        for k in KINDS:
            tok = given if given is not None and given.kind == k else trained(k)
            pieces = tok.tokens(text)
            table.add_row(k, str(len(pieces)), str(tok.vocab_size), " ".join(repr(t) for t in pieces))
        console.print(table)
        if not train and given is None:
            console.print("word and BPE learned their vocabulary from TEXT alone; give --train FILE "
                          "(e.g. a corpus) to see how a real vocabulary splits it")
        return
    tok = given if given is not None else trained(kind)
    if save is not None:
        tok.save(save)
    ids = tok.encode(text)
    pieces = tok.tokens(text)
    console.print(f"{tok.kind} tokenizer ({str(tokenizer) if given is not None else source}): "
                  f"{tok.vocab_size} ids; {len(ids)} tokens")
    table = Table()
    for col in ("#", "token", "id"):
        table.add_column(col, justify="right" if col != "token" else "left")
    for i, (piece, id_) in enumerate(zip(pieces, ids)):
        table.add_row(str(i), repr(piece), str(id_))
    console.print(table)


# what translates (`qkv translate`, `qkv evaluate`, `qkv serve`): qkv.text.translation_backend
EngineOpt = Annotated[str, typer.Option(help="What translates: qkv (PyTorch) or ct2 (CTranslate2, with --ct2-model).")]
Ct2ModelOpt = Annotated[Path | None, typer.Option("--ct2-model", help="This run exported by `qkv export --format ct2`.")]


@app.command()
def serve(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory to serve.")],
    host: Annotated[str, typer.Option(help="Address to bind; only this machine by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    engine: Annotated[str, typer.Option(help="What translates: qkv (PyTorch) or ct2 (CTranslate2, with --ct2-model); the explorer's steps trace the PyTorch weights.")] = "qkv",
    ct2_model: Ct2ModelOpt = None,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", help="Also answer requests whose Host header is NAME (or NAME:PORT); repeat it for more; "
                             "* answers every Host. By default only 127.0.0.1, localhost, [::1] and --host, with --port, "
                             "are answered (others get 403), which keeps web pages from reaching the server by DNS rebinding.",
        metavar="NAME")] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds a client has to send a request's headers, and then its body (else the connection is closed, "
             "408 for a body).")] = 10.0,
) -> None:
    """Serve a model over HTTP with the explorer page at / (API docs at /docs).

    The explorer page speaks English or Korean: its English / 한국어 toggle, or /?lang=ko.

    Limits: a body of at most 1 MiB (counted as it arrives, chunked or not; 413 past it), at most 100
    headers in 16 KiB (431; 400 for a larger head), headers and body each within --timeout seconds,
    and only the Host names listed under --allow-host (403)."""
    from qkv import serve as serving

    serving.serve(model, host=host, port=port, engine=engine, ct2_model=ct2_model, allow_hosts=allow_host or (),
                  timeout=timeout)


# options shared by `qkv explain` and `qkv viz attention`
ExplainText = Annotated[str, typer.Argument(help="Source sentence (translation model) or text (language model).")]
RunDir = Annotated[Path, typer.Option("--model", "-m", help="Run directory.")]
Target = Annotated[str | None, typer.Option(help="Output to explain (a translation, or a language model's continuation); default: the model's own greedy output.")]
Layer = Annotated[int, typer.Option(help="Layer, counted from 0 (the explain page and the explorer count the same way).")]
Head = Annotated[int, typer.Option(help="Head, counted from 0.")]


@app.command()
def explain(
    text: ExplainText,
    model: RunDir,
    target: Target = None,
    layer: Layer = 0,
    head: Head = 0,
    top_k: Annotated[int, typer.Option("--top-k", help="Next-token candidates shown per step.", min=1, max=50)] = 5,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Most tokens of the model's own output; default: 1.5 x input tokens + 10.", min=1)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.", callback=not_a_run_file)] = Path("explain.html"),
    lang: Annotated[str, typer.Option("--lang", help="Language of the page: en (English) or ko (한국어, Korean).")] = "en",
) -> None:
    """Write a self-contained HTML page that walks through one forward pass with the real numbers
    (in English, or in Korean with --lang ko)."""
    from qkv.explain.i18n import check_lang
    from qkv.explain.report import write_report
    from qkv.interop.minilm import refuse_sentence_encoder
    from qkv.run import load_run

    check_lang(lang)
    refuse_sentence_encoder(model, "qkv explain")
    for warning in write_report(out, load_run(model), text, target, layer, head, top_k, max_new_tokens, lang):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {out}")


viz_app = typer.Typer(help="Draw one picture as a PNG: positional encodings, attention, embeddings.",
                      no_args_is_help=True, rich_markup_mode=None)
app.add_typer(viz_app, name="viz")


@viz_app.command("pe")
def viz_pe(
    d_model: Annotated[int, typer.Option("--d-model", help="Model width (even).")] = 128,
    max_len: Annotated[int, typer.Option("--max-len", help="Number of positions.")] = 100,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.", callback=not_a_run_file)] = Path("pe.png"),
) -> None:
    """The sinusoidal positional encoding of the paper."""
    from qkv.explain.viz import write_positional_encoding

    typer.echo(f"wrote {write_positional_encoding(out, d_model, max_len)}")


@viz_app.command("attention")
def viz_attention(
    text: ExplainText,
    model: RunDir,
    target: Target = None,
    layer: Layer = 0,
    head: Head = 0,
    kind: Annotated[str, typer.Option(help="enc, dec (masked self-attention) or cross.")] = "cross",
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.", callback=not_a_run_file)] = Path("attention.png"),
) -> None:
    """One head's attention weights as a heatmap."""
    from qkv.explain.viz import write_attention
    from qkv.interop.minilm import is_sentence_encoder_run, write_encoder_attention
    from qkv.run import load_run

    if is_sentence_encoder_run(model):        # an imported encoder (qkv import) has only "enc" attention
        typer.echo(f"wrote {write_encoder_attention(out, model, text, layer, head)}")
        return
    typer.echo(f"wrote {write_attention(out, load_run(model), text, target, layer, head, kind)}")


@viz_app.command("embeddings")
def viz_embeddings(
    model: RunDir,
    word: Annotated[str, typer.Option(help="A token of the model's vocabulary.")],
    k: Annotated[int, typer.Option(help="Number of neighbours.", min=1, max=200)] = 10,
    side: Annotated[str, typer.Option(help="Embedding table of a translation model: src or tgt.")] = "tgt",
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.", callback=not_a_run_file)] = Path("embeddings.png"),
) -> None:
    """Nearest neighbours of a word by cosine similarity, and a 2-D PCA picture of them."""
    from qkv.explain.viz import write_embeddings
    from qkv.run import load_run

    found = write_embeddings(out, load_run(model), word, k, side)
    typer.echo(f"{'token':<16} cosine")
    for n in found[1:]:
        typer.echo(f"{n.token:<16} {n.similarity:+.3f}")
    typer.echo(f"wrote {out}")


@app.command()
def export(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory to export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.")],
    format: Annotated[str, typer.Option("--format", "-f", help="hf (transformers) or ct2 (CTranslate2).")] = "hf",
    quantize: Annotated[str | None, typer.Option(help="ct2 only: int8 (or int16, float16, bfloat16).")] = None,
) -> None:
    """Export a run as a Hugging Face `transformers` model or a CTranslate2 model."""
    from qkv.interop import export_run

    typer.echo(f"wrote {export_run(model, format, out, quantize)}")


# --- decoding: translate, evaluate, generate (logic in qkv.text) ---------------------------------

RunOpt = Annotated[Path, typer.Option("--model", "-m", help="Run directory.")]
BeamOpt = Annotated[int, typer.Option("--beam", help="Beam size (1-128); 1 is greedy search.", min=1, max=128)]
LengthPenaltyOpt = Annotated[float, typer.Option("--length-penalty", help="alpha of the GNMT length penalty ((5+len)/6)^alpha.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Sentences decoded together.", min=1)]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature (> 0).")]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Sample among the k most probable tokens (0 = all).", min=0)]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Sample from the smallest set of tokens with this much probability.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed for sampling (reproducible output).")]


def echo_warning(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@app.command()
def translate(
    model: RunOpt,
    text: Annotated[str | None, typer.Argument(help="Sentence to translate; default: --input or stdin lines.")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help="File with one sentence per line.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write translations here instead of stdout.", callback=not_a_run_file)] = None,
    beam: BeamOpt = 5,
    n_best: Annotated[int, typer.Option("--n-best", help="Hypotheses per sentence ('i ||| text ||| score').", min=1)] = 1,
    length_penalty: LengthPenaltyOpt = 0.6,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of searching (sets the beam to 1).")] = False,
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    batch_size: BatchOpt = 32,
    engine: EngineOpt = "qkv",
    ct2_model: Ct2ModelOpt = None,
) -> None:
    """Translate TEXT, a file, or stdin with a trained translation model."""
    from qkv.files import atomic_write_bytes
    from qkv.search import DecodeConfig
    from qkv.text import check_engine, format_translations, read_input_lines, translate_lines, translation_backend
    from qkv.run import load_run

    check_engine(engine, ct2_model)
    dcfg = DecodeConfig(beam_size=1 if sample else beam, n_best=n_best, length_penalty=length_penalty, sample=sample,
                        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    lines = read_input_lines(text, input)
    if not lines:
        echo_warning(f"no lines to translate: {input or 'stdin'} is empty")
    run = load_run(model)
    backend = translation_backend(run, engine, ct2_model)
    out = format_translations(translate_lines(run, lines, dcfg, batch_size, echo_warning, backend), n_best)
    if output is None:
        typer.echo(out, nl=False)
    else:
        atomic_write_bytes(output, out.encode("utf-8"))


@app.command()
def evaluate(
    model: RunOpt,
    src: Annotated[Path, typer.Option("--src", help="Source sentences, one per line.")],
    ref: Annotated[Path, typer.Option("--ref", help="Reference translations, line-aligned with --src.")],
    beam: BeamOpt = 5,
    length_penalty: LengthPenaltyOpt = 0.6,
    batch_size: BatchOpt = 32,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the translations here.", callback=not_a_run_file)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
    engine: EngineOpt = "qkv",
    ct2_model: Ct2ModelOpt = None,
) -> None:
    """Translate --src and score it against --ref: sacreBLEU BLEU and chrF with their signatures
    (a built-in task's run: exact match and chrF)."""
    import json

    from qkv.data.corpus import iter_lines
    from qkv.files import atomic_write_bytes
    from qkv.search import DecodeConfig
    from qkv.text import check_engine, translation_backend
    from qkv.text import evaluate as score
    from qkv.run import load_run

    check_engine(engine, ct2_model)
    dcfg = DecodeConfig(beam_size=beam, length_penalty=length_penalty)
    sources, refs = [x for _, x in iter_lines(src)], [x for _, x in iter_lines(ref)]
    run = load_run(model)
    result = score(run, sources, refs, dcfg, batch_size, echo_warning, translation_backend(run, engine, ct2_model))
    hyps = result.pop("hypotheses")
    if output is not None:
        atomic_write_bytes(output, "".join(h + "\n" for h in hyps).encode("utf-8"))
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        if result["metric"] == "exact_match":
            typer.echo(f"exact match = {100 * result['exact_match']:.1f}% ({result['exact_matches']} of {result['sentences']})")
        else:
            typer.echo(f"BLEU = {result['bleu']:.2f}  {result['bleu_signature']}")
        typer.echo(f"chrF = {result['chrf']:.2f}  {result['chrf_signature']}")


@app.command()
def generate(
    model: RunOpt,
    prompt: Annotated[str, typer.Option(help="Text to continue; empty starts from <bos>.")] = "",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Most tokens to add.", min=1)] = 200,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most probable token.")] = False,
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
) -> None:
    """Continue a prompt with a trained language model, printing tokens as they come."""
    from qkv.search import DecodeConfig, Sampler
    from qkv.text import generate_text
    from qkv.run import load_run

    dcfg = DecodeConfig(sample=not greedy, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    pieces = generate_text(load_run(model), prompt, max_new_tokens, Sampler.from_config(dcfg), echo_warning)
    typer.echo(prompt, nl=False)
    for piece in pieces:
        typer.echo(piece, nl=False)
        sys.stdout.flush()
    typer.echo()


@app.command()
def train(
    task: Annotated[str | None, typer.Option(help="Built-in task: copy, reverse, sort, addition, dates.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config ([model], [train], [data]).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory; default runs/<task or config name>.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value, e.g. model.d_model=256 (repeatable).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint, with its own config.toml (--set may change values; --task/--config/--out are refused).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    processes: Annotated[int, typer.Option(
        "--processes", "-n",
        help="Train in N DDP processes on this machine (torchrun --standalone; the CPU cores are shared out "
             "as threads); train.batch_tokens stays the global batch. On a CPU, small models train faster in 2 "
             "single-threaded processes than in one with 2 threads. Resume with the same N.")] = 1,
) -> None:
    """Train a Transformer: a built-in task (default reverse), a config file, or resume a run."""
    from qkv.entry import relaunch_under_torchrun
    from qkv.errors import ConfigError
    from qkv.training.loop import train as run_training

    if resume is not None and (task or config or out):
        given = ", ".join(n for n, v in (("--task", task), ("--config", config), ("--out", out)) if v)
        raise ConfigError(f"--resume continues {resume} with its own config.toml, so {given} would be ignored; "
                          f"drop {given} (change values such as train.steps with --set)")
    code = relaunch_under_torchrun(processes, lambda: train_launch_command(processes, task, config, out, set_ or [],
                                                                         resume, quiet))
    if code is not None:                        # the ranks did the work
        if code:
            raise typer.Exit(code)
        return
    if resume is not None:
        result = run_training(None, resume, set_ or (), quiet, resume=True)
    else:
        cfg, default_out = command_config(task, str(config) if config else None)
        result = run_training(cfg, out or Path(default_out), set_ or (), quiet)
    if result.stopped == "interrupted":
        raise typer.Exit(130)


@app.command()
def prepare(
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML config whose [data] section names the corpus (translation or lm).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write (must not exist or be empty).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value, e.g. data.vocab_size=16000 (repeatable).")] = None,
    sample: Annotated[int, typer.Option(help="Learn the tokenizer from at most this many training sentences (lines), sampled evenly.", min=1)] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Seed of the tokenizer sample.", min=0, max=2**63 - 1)] = 0,
) -> None:
    """Write a corpus once as memory-mapped token files (for corpora bigger than memory).

    Train from it with `qkv train --config CONFIG --set data.prepared=OUT`: every process reads
    only the sentences of its own batches from the files.
    """
    from qkv.data.shards import prepare_corpus
    from qkv.run import RunConfig

    data = RunConfig.parse(config, set_ or []).data
    report = prepare_corpus(data, out, sample, seed, log=typer.echo)
    unit = "pairs" if report.kind == "translation" else "tokens"
    counts = ", ".join(f"{split} {n:,} {unit}" for split, n in report.counts.items())
    typer.echo(f"wrote {report.out}: {counts}; tokenizer from {report.sampled:,} sampled "
               f"{'pairs' if report.kind == 'translation' else 'lines'} ({report.seconds:.1f} s)")


def command_config(task: str | None, config_file: str | None) -> tuple[Any, str]:
    """What `qkv train --task T` or `--config F` trains (a task's config dict, or the config file's
    path, whose relative data paths are read against its folder), and its default run directory."""
    from qkv.data.tasks import task_config
    from qkv.errors import ConfigError

    if task and config_file:
        raise ConfigError("give either --task or --config, not both")
    if config_file:
        return Path(config_file), str(Path("runs") / Path(config_file).stem)
    task = task or "reverse"
    return task_config(task), str(Path("runs") / task)


def train_launch_command(processes: int, task: str | None, config: Path | None, out: Path | None,
                         overrides: list[str], resume: Path | None, quiet: bool) -> list[str]:
    """`qkv train ...` again under torchrun in `processes` ranks, each with its share of the global
    batch (the config's train.batch_tokens or the user's --set); a bad config fails here, once."""
    from qkv.run import RunConfig
    from qkv.training.distributed import local_launch_command

    argv = ["train", *(["--quiet"] if quiet else []), *sum((["--set", item] for item in overrides), [])]
    if resume is not None:              # the run's config already holds the per-rank share
        return local_launch_command(["-m", "qkv"], [*argv, "--resume", str(resume)], processes, None)
    cfg, default_out = command_config(task, str(config) if config else None)
    batch = RunConfig.parse(cfg, overrides).train.batch_tokens
    source = ["--task", task] if task else ["--config", str(config)] if config else []
    return local_launch_command(["-m", "qkv"], [*argv, *source, "--out", str(out or default_out)], processes, batch)


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="Run directory (with metrics.jsonl).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="PNG to write; default RUN/training.png.", callback=not_a_run_file)] = None,
) -> None:
    """Plot a run's loss, learning rate and validation metrics as a PNG."""
    from qkv.training.metrics import plot_run

    typer.echo(f"wrote {plot_run(run, out)}")


@app.command()
def average(
    run: Annotated[Path, typer.Argument(help="Run directory trained with train.keep_checkpoints >= --last.")],
    last: Annotated[int, typer.Option("--last", help="How many of the newest step checkpoints to average.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write; default RUN/averaged.safetensors.")] = None,
) -> None:
    """Average the weights of a run's last N step checkpoints (step-<N>.safetensors)."""
    from qkv.run import RunDir, refuse_run_file
    from qkv.training.average import average_checkpoints

    if out is not None and out.resolve() != RunDir(run).weights("averaged").resolve():   # its own output may be replaced
        refuse_run_file(out)
    typer.echo(f"wrote {average_checkpoints(run, last, out)}")


@app.command("import")
def import_(
    source: Annotated[str, typer.Option("--from", help="Pretrained model to import: minilm (all-MiniLM-L6-v2), "
                                                  "or a Llama-format directory (config.json, safetensors, tokenizer.json).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
) -> None:
    """Load a pretrained model (the MiniLM encoder, or a Llama directory) into qkv's own layers as a run directory."""
    from qkv.interop.llama import import_llama
    from qkv.interop.minilm import import_model
    from qkv.run import refuse_to_replace_run

    refuse_to_replace_run(out, "the imported model")
    typer.echo(f"wrote {import_llama(source, out) if Path(source).is_dir() else import_model(source, out)}")


@app.command()
def history(
    task: Annotated[str, typer.Option(help="Built-in task: reverse, copy, sort, addition, dates.")] = "reverse",
    quick: Annotated[bool, typer.Option("--quick", help="Small budgets in steps (500 per model; --modern: 600 per variant), a few minutes in all.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.md, the PNG plots and results.json.")] = Path("history-out"),
    models: Annotated[str, typer.Option(help="Comma-separated: rnn, lstm, gru, gru-attn, transformer.")] = "rnn,lstm,gru,gru-attn,transformer",
    budget_seconds: Annotated[float | None, typer.Option("--budget-seconds", help="Training time per model (default 100; --quick: 500 steps, at most 60 s).")] = None,
    steps: Annotated[int | None, typer.Option(help="Also stop each model after this many steps (a step budget).")] = None,
    clock: Annotated[str, typer.Option(help="cpu: CPU time of the training thread (fair on a busy machine); wall.")] = "cpu",
    seed: Annotated[int | None, typer.Option(help="Random seed (data, initialization; default 0, --modern 1337).",
                                                min=0, max=2**63 - 1)] = None,
    modern: Annotated[bool, typer.Option("--modern", help="Instead: the 2017 GPT, then RoPE, RMSNorm, SwiGLU, GQA one at a time, "
                                                         "then all (a Llama), then that Llama with Muon instead of AdamW, on Tiny Shakespeare (default 75 s each, --quick 600 steps, at most 60 s).")] = False,
    data: Annotated[Path | None, typer.Option(help="With --modern: Tiny Shakespeare's input.txt (default ../shared/data/tinyshakespeare/input.txt).")] = None,
) -> None:
    """Why the Transformer won: train RNN, LSTM, GRU, GRU+attention and a Transformer for the same time and compare.
    With --modern: what changed since 2017, each change trained alone, all together, then with Muon; same budget and seed."""
    from qkv.run import refuse_to_replace_run

    refuse_to_replace_run(out, "the history report")
    if modern:
        from qkv.history.modern import run_modern_history

        written = run_modern_history(out, quick, budget_seconds, steps, clock, 1337 if seed is None else seed, data,
                                     log=typer.echo)
        typer.echo(f"wrote {written}")
        return
    from qkv.history.lab import run_history

    typer.echo(f"wrote {run_history(out, task, quick, models, budget_seconds, steps, clock, seed or 0, log=typer.echo)}")


_escaped = {"count": 0}


def _escape_unencodable(exc: UnicodeError) -> tuple[str, int]:
    """The codec error handler of an output stream whose encoding cannot show everything (an
    ASCII-only terminal): backslash escapes, counted for one warning at the end."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    _escaped["count"] += exc.end - exc.start
    return exc.object[exc.start:exc.end].encode("ascii", "backslashreplace").decode("ascii"), exc.end


def tolerant_output_streams() -> None:
    """Let stdout and stderr write what their encoding cannot (PYTHONIOENCODING=ascii, an ASCII
    locale) as backslash escapes instead of raising UnicodeEncodeError mid-output."""
    import codecs

    try:
        codecs.lookup_error("qkv-escape")
    except LookupError:
        codecs.register_error("qkv-escape", _escape_unencodable)
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        if encoding and hasattr(stream, "reconfigure") and getattr(stream, "errors", "") == "strict":
            try:
                "\u00e4\u2192\uac00".encode(encoding)
            except (UnicodeEncodeError, LookupError):
                stream.reconfigure(errors="qkv-escape")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `qkv` console script, through the one wrapper (qkv.entry): one line for
    deliberate errors, never a traceback; click handles usage errors itself (exit 2). Characters
    the terminal's encoding cannot show are written as backslash escapes, with one warning."""
    tolerant_output_streams()
    _escaped["count"] = 0
    code = run_main(lambda: app(args=argv, standalone_mode=True))
    escaped = _escaped["count"]
    if escaped:
        encoding = getattr(sys.stdout, "encoding", None) or getattr(sys.stderr, "encoding", "?")
        echo_warning(f"{escaped:,} character(s) that the terminal's encoding ({encoding}) cannot show "
                     f"were written as backslash escapes; use a UTF-8 locale or PYTHONIOENCODING=utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
