"""Bad input gets one clear line and a non-zero exit; nothing is silently wrong.

Each case here once ended in a traceback or in exit 0 with a wrong result (a NaN model saved as
"best", an empty translation, bytes dropped from stdin...).
"""

import io
import math
from pathlib import Path

import pytest
import torch
from tests.serve_runs import tiny_run

from qkv import CheckpointError, ConfigError
from qkv.cli import main
from qkv.errors import OutputError, TrainingError
from qkv.data.tasks import task_config
from qkv.training import train
from qkv.run.dir import LOCK_FILE
from qkv.run import RunDir, load_run, lock_run, save_weights
from qkv.training.metrics import read_metrics
from qkv.run import parse_config

TINY = [
    "model.d_model=16", "model.n_heads=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
    "model.d_ff=32", "train.batch_tokens=120", "train.precision=fp32", "train.threads=1",
    "train.log_every=1", "train.eval_examples=8", "train.schedule=constant", "train.lr=3e-3",
    "train.warmup_steps=0", "data.train_size=120", "data.valid_size=8", "data.max_len=5",
]
TINY_ARGS = [a for kv in TINY for a in ("--set", kv)]


@pytest.fixture(scope="module")
def mt(tmp_path_factory):
    return str(tiny_run(tmp_path_factory.mktemp("runs") / "mt"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "trained"
    train(parse_config(task_config("reverse"), TINY + ["train.steps=2", "train.eval_every=2"]), out, quiet=True)
    return out


def one_line_error(capsys, args, code=2):
    got = main(list(args))
    err = capsys.readouterr().err.strip()
    assert got == code, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# --- tracebacks that are now one line ---------------------------------------------------------------


@pytest.mark.parametrize("option, value, says", [
    ("train.threads", "-1", "train.threads must be in [0, 4096], got -1"),
    ("train.beta2", "2", "train.beta2 must be in [0, 1), got 2.0"),
    ("train.lr", "nan", "train.lr must be a finite number, got nan"),
    ("train.lr", "inf", "train.lr must be a finite number, got inf"),
    ("train.eps", "0", "train.eps must be in (0, inf), got 0.0"),
    ("train.seed", "99999999999999999999999", "train.seed must fit in 64 bits"),
    ("train.label_smoothing", "1", "train.label_smoothing must be in [0, 1)"),
    ("data.valid_fraction", "-0.5", "data.valid_fraction must be in [0, 1)"),
    ("data.train_size", "1000000000000", "data.train_size must be in [1, 10000000], got 1000000000000"),
    ("data.max_len", "1000000000", "task 'reverse' draws inputs of up to 1000000000 characters, more than the model has positions for"),
    ("train.accumulate", "1000000000", "train.accumulate must be in [1, 4096], got 1000000000"),
    ("model.layer_norm_eps", "-1", "model.layer_norm_eps must be in (0, 1), got -1.0"),
    ("model.rope_theta", "nan", "model.rope_theta must be a finite number, got nan"),
    ("model.logit_softcap", "-30", "model.logit_softcap must be in [0, inf), got -30.0"),
    ("model.qk_norm", "1", "model.qk_norm must be true or false, got 1"),
    ("train.decay_fraction", "0", "train.decay_fraction must be in (0, 1], got 0.0"),
    ("model.n_encoder_layers", "-2", "model.n_encoder_layers must be in [0, 1024], got -2"),
    ("model.n_decoder_layers", "100000000", "model.n_decoder_layers must be in [1, 1024], got 100000000"),
    ("model.max_len", "1000000000000", "its largest tensor is src_embed.position.pe (1000000000000 x 16)"),
    ("model.d_model", str(2**40), "the model is too large to build"),
])
def test_option_values_are_checked_in_the_config_layer(option, value, says, tmp_path, capsys):
    args = ["train", "-q", "--task", "reverse", "--out", str(tmp_path / "r"), *TINY_ARGS, "--set", "train.steps=2"]
    err = one_line_error(capsys, [*args, "--set", f"{option}={value}"])
    assert says in err
    assert not (tmp_path / "r" / "model.safetensors").exists()


@pytest.mark.parametrize("args, says", [
    (["--temperature", "nan", "--sample"], "temperature must be a finite number"),
    (["--seed", str(10**30), "--sample"], "seed must fit in 64 bits"),
    (["--length-penalty", "nan"], "length_penalty must be a finite number"),
    (["--top-p", "nan", "--sample"], "top_p must be a finite number"),
])
def test_decoding_options_are_checked(mt, args, says, capsys):
    assert says in one_line_error(capsys, ["translate", "--model", mt, *args, "abc"])


def test_outputs_that_cannot_be_files(mt, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "is a directory" in one_line_error(capsys, ["translate", "-m", mt, "--output", str(tmp_path), "abc"])
    assert "is a directory" in one_line_error(capsys, ["tokenize", "--kind", "char", "--save", str(tmp_path), "abc"])
    assert "is a file" in one_line_error(capsys, ["train", "--out", str(tmp_path / "file"), *TINY_ARGS])
    assert "Not a directory" in one_line_error(capsys, ["train", "--out", str(tmp_path / "file" / "sub"), *TINY_ARGS])
    with pytest.raises(OutputError):
        save_weights(tmp_path / "file" / "w.safetensors", load_run(mt).model)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_lone_surrogates_are_refused_by_every_tokenizer(kind, tmp_path, capsys):
    bad = "ab\udcffc"                     # how Python keeps an undecodable byte of a command-line argument
    err = one_line_error(capsys, ["tokenize", "--kind", kind, "--save", str(tmp_path / "t.json"), bad])
    assert "not valid UTF-8" in err and not (tmp_path / "t.json").exists()
    good = tmp_path / "good.json"
    assert main(["tokenize", "--kind", kind, "--save", str(good), "abc abc"]) == 0
    assert "not valid UTF-8" in one_line_error(capsys, ["tokenize", "--tokenizer", str(good), bad])


def test_weights_metadata_that_is_not_qkv_json(mt, tmp_path):
    from safetensors.torch import load_file, save_file

    path = Path(mt) / "model.safetensors"
    for junk in ("not json", "[1, 2]", "{"):
        bad = tmp_path / "bad.safetensors"
        save_file(load_file(path), bad, metadata={"format": "pt", "qkv_model_config": junk})
        with pytest.raises(CheckpointError, match="not a JSON table"):
            from qkv.run import load_weights
            load_weights(bad, load_run(mt).model)


# --- silent nonsense that is now an error or a warning ----------------------------------------------


def test_non_utf8_stdin_is_refused_like_the_same_file(mt, tmp_path, capsys, monkeypatch):
    data = b"abc\nab\xffc\n"
    (tmp_path / "in.txt").write_bytes(data)
    by_file = one_line_error(capsys, ["translate", "-m", mt, "--input", str(tmp_path / "in.txt")])
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace"))
    by_pipe = one_line_error(capsys, ["translate", "-m", mt])
    assert "invalid UTF-8 at byte 2" in by_file and "invalid UTF-8 at byte 2" in by_pipe
    assert by_pipe.startswith("error: stdin:2:")


def test_resume_refuses_options_it_would_ignore(trained, capsys):
    for extra in (["--task", "dates"], ["--config", "x.toml"], ["--out", "elsewhere"]):
        err = one_line_error(capsys, ["train", "--resume", str(trained), *extra])
        assert extra[0] in err and "would be ignored" in err


def test_a_failed_start_leaves_no_usable_looking_model(tmp_path, capsys):
    out = tmp_path / "r"
    # inputs of 4 letters fit 4 positions, but with <bos>/<eos> not: the first step fails
    err = one_line_error(capsys, ["train", "-q", "--task", "reverse", "--out", str(out), *TINY_ARGS,
                                  "--set", "model.max_len=4", "--set", "data.max_len=4"])
    assert "max_len=4" in err and "positions up to" in err
    assert not (out / "model.safetensors").exists()
    assert "weights file not found" in one_line_error(capsys, ["translate", "-m", str(out), "abc"])


def test_training_stops_at_the_first_non_finite_loss_keeping_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "r"
    cfg = parse_config(task_config("reverse"), TINY + ["train.steps=20", "train.lr=1e30", "train.checkpoint_every=1",
                                                       "train.eval_every=1"])
    with pytest.raises(TrainingError, match=r"training diverged at step \d+: the loss is nan") as stop:
        train(cfg, out, quiet=True)
    assert "\n" not in str(stop.value) and "last good checkpoint" in str(stop.value)
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert f"step {state['step']}) is kept" in str(stop.value)
    assert all(bool(torch.isfinite(t).all()) for t in state["model"].values())
    for record in read_metrics(out):
        assert all(not isinstance(v, float) or math.isfinite(v) for v in record.values()), record
    load_run(out)                                     # the best weights are finite and load
    load_run(out, weights="last")


def test_is_better_never_picks_nan():
    from qkv.training.metrics import is_better

    assert not is_better("loss", float("nan"), None) and not is_better("bleu", float("nan"), 1.0)


def test_nan_weights_and_nan_scores_are_errors_not_empty_lines(mt, tmp_path, capsys):
    import shutil

    broken = tmp_path / "nan"
    shutil.copytree(mt, broken)
    run = load_run(mt)
    with torch.no_grad():
        next(run.model.parameters()).fill_(float("nan"))
    save_weights(broken / "model.safetensors", run.model)
    assert "NaN or infinite" in one_line_error(capsys, ["translate", "-m", str(broken), "abc"])
    run = load_run(mt)                                # finite weights whose outputs overflow to NaN
    with torch.no_grad():
        run.model.src_embed.token.weight.mul_(1e38)
    save_weights(broken / "model.safetensors", run.model)
    assert "scores are NaN" in one_line_error(capsys, ["translate", "-m", str(broken), "abc"])


def test_input_the_vocabulary_does_not_know_is_warned_about(mt, capsys):
    assert main(["translate", "-m", mt, "--beam", "1", "안녕하세요"]) == 0      # the model knows a-z and space
    err = capsys.readouterr().err
    assert "warning: line 1: 5 of its 5 tokens are unknown to the model (<unk>)" in err
    assert main(["translate", "-m", mt, "--beam", "1", "abc def"]) == 0
    assert "unknown" not in capsys.readouterr().err


# --- the run directory: one trainer, no leftovers ---------------------------------------------------


def test_a_second_trainer_on_one_run_directory_is_refused(trained, capsys):
    with lock_run(trained, create=False):
        err = one_line_error(capsys, ["train", "--resume", str(trained), "--set", "train.steps=3"])
        assert f"is in use by another qkv train (pid {__import__('os').getpid()})" in err
    assert (trained / LOCK_FILE).exists()
    before = len(read_metrics(trained))
    assert main(["train", "--resume", str(trained), "--quiet", "--set", "train.steps=3"]) == 0  # free again
    assert len(read_metrics(trained)) > before


def test_leftover_temporary_files_are_removed_on_resume(trained):
    leftover = trained / ".last.safetensors.x1y2z3.tmp"
    leftover.write_bytes(b"\0" * 1000)
    train(None, trained, ["train.steps=4"], quiet=True, resume=True)
    assert not leftover.exists() and not list(trained.glob(".*.tmp"))


def test_resume_refuses_weights_and_state_from_different_steps_in_an_old_run(trained, tmp_path):
    """A train_state.pt written before it held the weights: last.safetensors must be from its step."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained, old)
    state = torch.load(old / "train_state.pt", weights_only=True)
    del state["model"]
    state["step"] -= 1
    torch.save(state, old / "train_state.pt")
    RunDir(old).manifest.unlink()               # an old run: written before files carried hashes
    with pytest.raises(CheckpointError, match="cannot continue exactly"):
        train(None, old, ["train.steps=8"], quiet=True, resume=True)


# --- a model that cannot fit is refused before it is built -----------------------------------------


def test_the_footprint_is_the_models_own(monkeypatch):
    """Counted from the model built on the meta device: equal to the real model's parameters
    (tied and shared embeddings once) and buffers, for every architecture option."""
    from qkv.config import ModelConfig
    from qkv.run.fits import check_model_fits, model_footprint
    from qkv.model import build_model

    shapes = [
        dict(src_vocab_size=40, tgt_vocab_size=40, share_embeddings=True),
        dict(src_vocab_size=40, tgt_vocab_size=50, tie_embeddings=False, positional="learned"),
        dict(arch="decoder-only", tgt_vocab_size=60, n_encoder_layers=0, positional="rope",
             activation="swiglu", norm="rmsnorm", n_kv_heads=1, bias=False, norm_first=True),
    ]
    for shape in shapes:
        cfg = ModelConfig(d_model=32, n_heads=4, n_decoder_layers=2, d_ff=64, max_len=64,
                          **{"n_encoder_layers": 2, **shape})
        model = build_model(cfg)
        params, buffers, _ = model_footprint(cfg)
        assert params == model.num_parameters()
        assert buffers == sum(b.numel() * b.element_size() for b in model.buffers())
        need = params * 16 + buffers          # training: fp32 weights, gradients, two AdamW moments
        monkeypatch.setattr("qkv.machine.available_memory", lambda device="cpu", n=need: n)
        check_model_fits(cfg, training=True)
        with pytest.raises(ConfigError, match="in each of 2 processes"):
            check_model_fits(cfg, training=True, copies=2)
        monkeypatch.setattr("qkv.machine.available_memory", lambda device="cpu", n=need: n - 1)
        with pytest.raises(ConfigError, match=f"{params:,} parameters: weights, gradients and AdamW moments"):
            check_model_fits(cfg, training=True)
        check_model_fits(cfg)                 # loading needs only the weights


def test_a_run_whose_config_cannot_fit_is_refused_in_one_line(mt, tmp_path, capsys):
    import shutil

    big = tmp_path / "big"
    shutil.copytree(mt, big)
    config = (big / "config.toml").read_text()
    (big / "config.toml").write_text(config.replace("max_len = ", "max_len = 1000000000000  # ", 1))
    err = one_line_error(capsys, ["translate", "-m", str(big), "abc"])
    assert "GiB free" in err and "max_len" in err


# --- asking for too much at once --------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["tokenize", "--vocab-size", str(10**11), "abc"], "needs 260 to 1,000,000 ids"),     # once aborted the process
    (["viz", "pe", "--d-model", str(10**9)], "--max-len x --d-model must be at most 10,000,000"),
])
def test_requests_too_large_to_compute_are_refused(args, says, tmp_path, capsys):
    err = one_line_error(capsys, args + (["--out", str(tmp_path / "pe.png")] if args[0] == "viz" else []))
    assert says in err


def test_beam_is_capped(mt, capsys):
    assert main(["translate", "-m", mt, "--beam", "129", "abc"]) == 2
    assert "less than or equal to 128" in capsys.readouterr().err


def test_a_negative_history_seed_is_refused(tmp_path, capsys):
    assert main(["history", "--seed", "-1", "--steps", "1", "--models", "rnn", "--out", str(tmp_path / "h")]) == 2
    assert "greater than or equal to 0" in capsys.readouterr().err and not (tmp_path / "h").exists()


@pytest.mark.parametrize("failure", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 38400000000 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_running_out_of_memory_is_one_line_but_a_bug_is_not_hidden(failure, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr("qkv.explain.viz.write_positional_encoding", fail)
    err = one_line_error(capsys, ["viz", "pe", "--out", str(tmp_path / "pe.png")])
    assert err.startswith("error: out of memory (") and "--batch-size" in err

    def bug(*args, **kwargs):
        raise RuntimeError("expected scalar type Float but found Half")

    monkeypatch.setattr("qkv.explain.viz.write_positional_encoding", bug)
    with pytest.raises(RuntimeError, match="expected scalar type"):
        main(["viz", "pe", "--out", str(tmp_path / "pe.png")])


# --- writing over a run -----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["export", "--format", "hf"], ["export", "--format", "ct2"], ["import", "--from", "minilm"],
])
def test_export_and_import_never_write_into_a_run(args, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run(tmp_path / "src"), run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    model = ["--model", str(run)] if args[0] == "export" else []
    err = one_line_error(capsys, [*args, *model, "--out", str(run)])
    assert "holds a qkv run" in err and "choose another --out" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    load_run(run)


def test_training_never_writes_over_a_model_without_a_checkpoint(tmp_path, capsys):
    run = tiny_run(tmp_path / "imported")                 # config.toml + model.safetensors, as `qkv import` writes
    weights = (run / "model.safetensors").read_bytes()
    err = one_line_error(capsys, ["train", "-q", "--task", "reverse", "--out", str(run), *TINY_ARGS])
    assert "already holds a model" in err and (run / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("args, target", [
    (["explain", "abc", "-m", "{run}", "--out"], "model.safetensors"),
    (["translate", "-m", "{run}", "abc", "--output"], "config.toml"),
    (["tokenize", "abc", "--save"], "tokenizer.json"),
    (["viz", "pe", "--out"], "model.safetensors"),
    (["plot", "{run}", "--out"], "model.safetensors"),
    (["average", "{run}", "--out"], "train_state.pt"),
    (["average", "{run}", "--out"], "config.toml"),
])
@pytest.mark.parametrize("through_a_link", [False, True])
def test_an_output_option_never_writes_over_a_run_file(args, target, through_a_link, tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    if not (run / target).exists():
        (run / target).write_bytes(b"state")
    before = (run / target).read_bytes()
    out = run / target
    if through_a_link:                          # a picture "elsewhere" that is a link into the run
        out = tmp_path / "elsewhere.png"
        out.symlink_to(run / target)
    argv = [a.replace("{run}", str(run)) for a in args] + [str(out)]
    assert main(argv) in (1, 2)
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())       # (click may wrap the line)
    assert "a file of the qkv run" in err and ("a link to" in err) == through_a_link
    assert (run / target).read_bytes() == before
    load_run(run)


def test_a_run_file_behind_a_linked_directory_is_refused(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    (tmp_path / "pictures").symlink_to(run)
    before = (run / "model.safetensors").read_bytes()
    assert main(["viz", "pe", "--out", str(tmp_path / "pictures" / "model.safetensors")]) == 2
    assert "a file of the qkv run" in " ".join(capsys.readouterr().err.split())
    assert (run / "model.safetensors").read_bytes() == before


def test_history_never_writes_into_a_run(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    err = one_line_error(capsys, ["history", "--steps", "1", "--models", "rnn", "--out", str(run)])
    assert "holds a qkv run" in err


def test_more_processes_than_the_machine_has_are_refused_before_any_starts(tmp_path, capsys):
    from qkv.machine import usable_cores

    too_many = max(2, usable_cores()) + 1
    err = one_line_error(capsys, ["train", "--task", "reverse", "--processes", str(too_many), "--out", str(tmp_path / "r")])
    assert f"--processes must be between 1 and {too_many - 1}" in err and not (tmp_path / "r").exists()


def test_a_lock_file_that_is_a_link_is_never_written_through(tmp_path):
    run = tiny_run(tmp_path / "run")
    weights = (run / "model.safetensors").read_bytes()
    (run / LOCK_FILE).symlink_to(run / "model.safetensors")
    with pytest.raises(CheckpointError, match="cannot lock"), lock_run(run):
        pass
    assert (run / "model.safetensors").read_bytes() == weights


# --- issue 27: damaged or unusual input, output and terminals -------------------------------------


def test_deeply_nested_config_set_and_tokenizer_values_are_one_line(mt, tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.toml").write_text(f"x = {deep}\n")
    assert "nests arrays or tables too deeply" in one_line_error(capsys, ["train", "-q", "-c", str(tmp_path / "deep.toml")])
    err = one_line_error(capsys, ["train", "-q", "--out", str(tmp_path / "r"), "--set", f"model.d_model={deep}"])
    assert "override model.d_model=... nests" in err
    (tmp_path / "tok.json").write_text(deep)
    err = one_line_error(capsys, ["tokenize", "--tokenizer", str(tmp_path / "tok.json"), "abc"])
    assert "nested too deeply" in err


def test_a_truncated_ctranslate2_model_is_one_line_for_translate_and_serve(mt, tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    from qkv.interop import export_run

    ct2 = export_run(mt, "ct2", tmp_path / "ct2")
    weights = ct2 / "model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for command in (["translate", "-m", mt, "abc"], ["serve", "-m", mt, "--port", "8791"]):
        err = one_line_error(capsys, [*command, "--engine", "ct2", "--ct2-model", str(ct2)])
        assert "model.bin cannot be loaded by CTranslate2" in err and "export it again" in err


def test_a_full_device_is_one_line_and_never_replaced(mt, capsys, monkeypatch):
    import errno
    import os

    if os.path.exists("/dev/full"):
        err = one_line_error(capsys, ["translate", "-m", mt, "abc", "--output", "/dev/full"])
        assert err == "error: cannot write /dev/full: No space left on device; free some space or write somewhere else"
        assert not Path("/dev/full").is_file()

    class Full(io.StringIO):
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sys.stdout", Full())
    err = one_line_error(capsys, ["translate", "-m", mt, "abc"])
    assert err == "error: cannot write: No space left on device; free some space or write somewhere else"


def test_a_closed_or_empty_stdin_is_said(mt, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)                       # what Python gives for `0<&-`
    assert "stdin is closed" in one_line_error(capsys, ["translate", "-m", mt])
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))     # `< /dev/null`
    assert main(["translate", "-m", mt]) == 0
    assert capsys.readouterr().err == "warning: no lines to translate: stdin is empty\n"


def test_an_ascii_only_terminal_gets_escapes_and_one_warning(mt, monkeypatch):
    out, err = io.BytesIO(), io.BytesIO()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(out, encoding="ascii"))
    monkeypatch.setattr("sys.stderr", io.TextIOWrapper(err, encoding="ascii"))
    assert main(["tokenize", "--kind", "char", "Grüße"]) == 0
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    assert "\\xfc" in out.getvalue().decode("ascii")
    lines = err.getvalue().decode("ascii").splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "encoding (ascii)" in lines[0], lines
