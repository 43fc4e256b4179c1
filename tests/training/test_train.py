"""Training: loss, schedules, config errors, run directory, resume, CLI, plots, language models."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from qkv import CheckpointError, ConfigError, ModelConfig, build_model
from qkv.errors import ShapeError
from qkv.cli import main
from qkv.data.tasks import task_config
from qkv.training import train
from qkv.run import load_run, load_weights, save_weights
from qkv.training.loss import label_smoothed_nll
from qkv.training.metrics import read_metrics
from qkv.run import parse_config
from qkv.training.schedule import lr_at, make_scheduler, noam

# A model and budget small enough for a few seconds on a busy 2-core CPU.
TINY = [
    "model.d_model=32", "model.n_heads=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
    "model.d_ff=64", "model.dropout=0.1",
    "train.batch_tokens=200", "train.precision=fp32", "train.threads=1", "train.log_every=1",
    "train.eval_examples=16", "train.schedule=constant", "train.lr=3e-3", "train.warmup_steps=5",
    "data.train_size=300", "data.valid_size=16", "data.max_len=5",
]


def tiny_task(task="reverse", **train_keys):
    extra = [f"train.{k}={v}" for k, v in train_keys.items()]
    return parse_config(task_config(task), TINY + extra)


def train_losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


# --- the loss and the schedule -----------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch_and_ignores_padding(smoothing):
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    target = torch.randint(1, 11, (3, 7))
    target[0, 4:] = 0
    target[2, 1:] = 0
    loss, nll, n = label_smoothed_nll(logits, target, smoothing, ignore_index=0)
    ref = F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=smoothing, ignore_index=0)
    assert n == int((target != 0).sum())
    assert torch.allclose(loss / n, ref, atol=1e-6)
    assert torch.allclose(nll / n, F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=0), atol=1e-6)
    # changing logits at padded positions changes nothing
    logits2 = logits.clone()
    logits2[0, 5:] = 100.0
    assert torch.allclose(label_smoothed_nll(logits2, target, smoothing)[0], loss)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_gradient_matches_torch(smoothing):
    # the closed-form backward equals autograd through torch's cross_entropy; padding gets none
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 9, dtype=torch.float64, requires_grad=True)
    target = torch.randint(1, 9, (2, 5))
    target[1, 2:] = 0
    loss, _, _ = label_smoothed_nll(logits, target, smoothing, ignore_index=0)
    (grad,) = torch.autograd.grad(loss * 0.7, logits)
    ref = F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=smoothing,
                          ignore_index=0, reduction="sum")
    (ref_grad,) = torch.autograd.grad(ref * 0.7, logits)
    assert torch.allclose(grad, ref_grad, atol=1e-12)
    assert grad[1, 2:].abs().max() == 0
    assert torch.autograd.gradcheck(
        lambda z: label_smoothed_nll(z, target, smoothing, ignore_index=0)[0], (logits,))


def test_label_smoothing_rejects_mismatched_shapes():
    with pytest.raises(ShapeError, match="do not match"):
        label_smoothed_nll(torch.randn(2, 3, 5), torch.ones(2, 4, dtype=torch.long))


def test_noam_schedule_values():
    # peak at the end of warmup: (d_model * warmup) ** -0.5
    assert noam(4000, 512, 4000) == pytest.approx((512 * 4000) ** -0.5)
    assert noam(1, 512, 4000) == pytest.approx(512**-0.5 * 4000**-1.5)
    assert noam(16000, 512, 4000) == pytest.approx(512**-0.5 * 16000**-0.5)
    assert noam(2000, 512, 4000) == pytest.approx(noam(4000, 512, 4000) / 2)  # linear warmup
    # the LambdaLR wrapper produces the same rates, step by step
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched = make_scheduler(opt, "noam", lr=2.0, warmup=10, total=100, d_model=64)
    for step in range(1, 30):
        assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * noam(step, 64, 10))
        opt.step()
        sched.step()


def test_cosine_schedule_warms_up_and_ends_at_min_lr():
    kw = dict(lr=1e-3, warmup=10, total=110, d_model=64, min_lr=1e-5)
    assert lr_at("cosine", 5, **kw) == pytest.approx(5e-4)
    assert lr_at("cosine", 10, **kw) == pytest.approx(1e-3)
    assert lr_at("cosine", 60, **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at("cosine", 110, **kw) == pytest.approx(1e-5)


def test_linear_schedule_falls_in_a_straight_line_to_min_lr():
    kw = dict(lr=1e-3, warmup=10, total=110, d_model=64, min_lr=0.0)
    assert lr_at("linear", 5, **kw) == pytest.approx(5e-4)
    assert lr_at("linear", 10, **kw) == pytest.approx(1e-3)
    assert lr_at("linear", 35, **kw) == pytest.approx(7.5e-4)          # a quarter of the way down
    assert lr_at("linear", 60, **kw) == pytest.approx(5e-4)
    assert lr_at("linear", 110, **kw) == 0.0
    assert lr_at("linear", 60, **{**kw, "min_lr": 1e-4}) == pytest.approx(5.5e-4)


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, names",
    [("train.stepz=3", ["train.stepz", "train.steps"]),
     ("model.d_modle=64", ["model.d_modle", "model.d_model"]),
     ("data.tokeniser=bpe", ["data.tokeniser", "data.tokenizer"]),
     ("trian.steps=3", ["trian", "train"])],
)
def test_unknown_config_key_names_the_nearest(override, names):
    with pytest.raises(ConfigError) as err:
        parse_config(task_config("reverse"), [override])
    for name in names:
        assert name in str(err.value)


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="train.schedule"):
        parse_config(task_config("reverse"), ["train.schedule=exponential"])
    with pytest.raises(ConfigError, match="train.steps must be an integer"):
        parse_config(task_config("reverse"), ["train.steps=many"])
    with pytest.raises(ConfigError, match="did you mean 'reverse'"):
        task_config("revers")


# --- weights and the run directory ----------------------------------------------------------------


def _model(**kw):
    base = dict(src_vocab_size=20, tgt_vocab_size=20, d_model=16, n_heads=2, n_encoder_layers=1,
                n_decoder_layers=1, d_ff=32)
    return build_model(ModelConfig(**{**base, **kw}))


def test_weights_round_trip_with_tied_embeddings(tmp_path):
    torch.manual_seed(0)
    a, b = _model(), _model()
    save_weights(tmp_path / "w.safetensors", a)
    load_weights(tmp_path / "w.safetensors", b)
    assert b.lm_head.weight is b.tgt_embed.token.weight          # still tied after loading
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_mismatched_and_corrupt_weights_give_clear_errors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, _model())
    with pytest.raises(CheckpointError, match=r"model.d_model=16 .* model.d_model=32"):
        load_weights(path, _model(d_model=32))
    with pytest.raises(CheckpointError, match="n_decoder_layers"):
        load_weights(path, _model(n_decoder_layers=2))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupted or not a safetensors file"):
        load_weights(path, _model())
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "missing.safetensors", _model())


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous file intact and no temporary file behind."""
    path = tmp_path / "w.safetensors"
    save_weights(path, _model())
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError):
        save_weights(path, _model(d_model=32))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One short training run shared by the tests that only read its run directory."""
    out = tmp_path_factory.mktemp("runs") / "reverse"
    result = train(tiny_task(steps=40, eval_every=20, checkpoint_every=20), out, quiet=True)
    return out, result


def test_run_directory_holds_every_file_and_loads(short_run):
    out, result = short_run
    assert result.steps == 40 and result.stopped == "finished"
    for name in ("config.toml", "tokenizer.json", "model.safetensors", "last.safetensors",
                 "train_state.pt", "metrics.jsonl", "training.png"):
        assert (out / name).is_file(), name
    run = load_run(out)
    assert not run.model.training
    assert run.src_tokenizer is run.tgt_tokenizer
    assert run.config["train"]["steps"] == 40 and run.config["data"]["task"] == "reverse"
    assert run.cfg.d_model == 32 and run.cfg.src_vocab_size == run.src_tokenizer.vocab_size
    assert load_run(out, weights="last").cfg == run.cfg
    valid = [r for r in read_metrics(out) if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [20, 40]
    assert {"loss", "ppl", "exact_match", "bleu", "chrf"} <= set(valid[0])


def test_training_learns(short_run):
    out, _ = short_run
    losses = train_losses(out)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_corrupt_run_files_give_one_line_errors(short_run, tmp_path, capsys):
    import shutil

    src, _ = short_run
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="model.safetensors is corrupted"):
        load_run(broken)
    (broken / "train_state.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", str(broken), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err      # the recorded hash catches it first
    assert "train_state.pt does not match the hash recorded" in err
    (broken / "integrity.json").unlink()                   # a run from before hashes: the file itself is read
    assert main(["train", "--resume", str(broken), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "train_state.pt is corrupted" in err and "\n" not in err
    (broken / "config.toml").unlink()
    with pytest.raises(CheckpointError, match="config.toml is missing"):
        load_run(broken)
    with pytest.raises(CheckpointError, match="run directory not found"):
        load_run(tmp_path / "nowhere")


def test_a_task_run_is_evaluated_and_plotted_by_exact_match(short_run, tmp_path, capsys):
    """Characters detokenize without spaces, so a task's BLEU is 0 however many outputs are right:
    its run (config.toml says data.kind = "task") reports exact match instead."""
    from qkv.data.tasks import make_task
    from qkv.training.metrics import plotted_scores

    out, _ = short_run
    pairs = make_task("reverse", 12, split="test", max_len=5)
    src, ref, hyp = tmp_path / "src.txt", tmp_path / "ref.txt", tmp_path / "hyp.txt"
    src.write_text("".join(s + "\n" for s, _ in pairs))
    ref.write_text("".join(t + "\n" for _, t in pairs))
    args = ["evaluate", "-m", str(out), "--src", str(src), "--ref", str(ref), "--beam", "1"]
    assert main(args + ["-o", str(hyp)]) == 0
    text = capsys.readouterr().out
    exact = sum(h == t for h, (_, t) in zip(hyp.read_text().splitlines(), pairs))
    assert text.startswith(f"exact match = {100 * exact / 12:.1f}% ({exact} of 12)\n") and "BLEU" not in text
    assert main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metric"] == "exact_match" and result["exact_matches"] == exact and "bleu" not in result
    assert result["exact_match"] == pytest.approx(exact / 12)
    assert plotted_scores([r for r in read_metrics(out) if r["kind"] == "valid"], "task") == ["exact_match", "chrf"]


def test_plot_command_writes_png(short_run, tmp_path, capsys):
    out, _ = short_run
    png = tmp_path / "plot.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl is missing" in capsys.readouterr().err


def test_plotting_leaves_the_callers_matplotlib_backend_alone(short_run, tmp_path):
    """A notebook that trains keeps its inline figures: the run's plot is drawn without pyplot."""
    import matplotlib

    from qkv.training.metrics import plot_run

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        png = plot_run(short_run[0], tmp_path / "p.png")
        assert matplotlib.get_backend() == "svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)


# --- resume ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_continues_exactly(tmp_path, device, optimizer):
    """3 steps + stop + resume + 3 steps gives the same per-step losses as 6 straight steps
    (dropout on, so the RNG state must be restored too; with Muon, its momentum and schedule)."""
    where = device.type
    keys = dict(eval_every=0, checkpoint_every=3, device=where, optimizer=optimizer)
    straight = train(tiny_task(steps=6, **keys), tmp_path / "a", quiet=True)
    assert straight.steps == 6
    train(tiny_task(steps=3, **keys), tmp_path / "b", quiet=True)
    resumed = train(None, tmp_path / "b", ["train.steps=6"], quiet=True, resume=True)
    assert resumed.steps == 6
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert len(a) == len(b) == 6
    tol = 1e-6 if where == "cpu" else 1e-5           # GPU kernels may add in a different order
    assert max(abs(x - y) for x, y in zip(a, b)) <= tol
    wa = load_run(tmp_path / "a", weights="last").model.state_dict()
    wb = load_run(tmp_path / "b", weights="last").model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=tol) for k in wa)


def test_training_gives_back_the_global_seed_and_threads(tmp_path):
    """train() seeds torch's generator and sets the thread count for its run; the caller gets
    both back as they were (no process-wide change as a side effect of a library call)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads != 2 else 1)
    try:
        before_threads = torch.get_num_threads()
        torch.manual_seed(1234)
        before = torch.get_rng_state()
        train(tiny_task(steps=2, eval_every=0, threads=3 if before_threads != 3 else 1), tmp_path / "r", quiet=True)
        assert torch.get_num_threads() == before_threads
        assert torch.equal(torch.get_rng_state(), before)
    finally:
        torch.set_num_threads(threads)


def test_interrupt_saves_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    """SIGINT/SIGTERM stop the loop after the current step with a checkpoint."""
    import signal

    from qkv.training.loop import Trainer

    calls = {"n": 0}
    real_step = Trainer.train_step

    def step_then_signal(self):
        out = real_step(self)
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    result = train(tiny_task(steps=50, eval_every=0, checkpoint_every=100), tmp_path / "r", quiet=True)
    assert result.stopped == "interrupted" and result.steps == 2
    state = torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)
    assert state["step"] == 2
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert train(None, tmp_path / "r", ["train.steps=4"], quiet=True, resume=True).steps == 4


def test_a_resumed_run_reports_the_training_time_of_every_session(tmp_path):
    """train_state.pt records the training seconds so far; a resume adds its own to them, so a
    finished run resumed (e.g. to finish a recipe's evaluation) reports its whole training time."""
    import io

    from qkv.run import RunDir

    first = train(tiny_task(steps=4, eval_every=0, checkpoint_every=4), tmp_path / "r", quiet=True)
    run = RunDir(tmp_path / "r")
    state = torch.load(io.BytesIO(run.read_state()), weights_only=True)
    assert 0 < state["seconds"] <= first.seconds
    state["seconds"] = 1000.0                     # as if the first session had trained for 1000 s
    buf = io.BytesIO()
    torch.save(state, buf)
    run.write_state(buf.getvalue())
    again = train(None, tmp_path / "r", quiet=True, resume=True)          # nothing left to train
    assert again.steps == 4 and 1000.0 <= again.seconds < 1060.0
    recorded = torch.load(io.BytesIO(run.read_state()), weights_only=True)["seconds"]
    assert 1000.0 <= recorded <= again.seconds
    more = train(None, tmp_path / "r", ["train.steps=6"], quiet=True, resume=True)
    assert more.steps == 6 and more.seconds > recorded


def test_training_works_where_the_caller_turned_gradients_off(tmp_path):
    """A notebook that only looks at models sets torch.set_grad_enabled(False), then trains (or resumes)
    its run: the trainer turns gradients on for itself and gives the caller's setting back."""
    torch.set_grad_enabled(False)
    try:
        result = train(tiny_task(steps=2, eval_every=0), tmp_path / "r", quiet=True)
        assert result.steps == 2 and not torch.is_grad_enabled()
        assert train(None, tmp_path / "r", ["train.steps=3"], quiet=True, resume=True).steps == 3
    finally:
        torch.set_grad_enabled(True)


# --- the command line -------------------------------------------------------------------------------


def test_cli_train_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--task", "copy", "--out", str(out)] + [a for kv in TINY for a in ("--set", kv)]
    assert main(args + ["--set", "train.steps=4", "--set", "train.eval_every=4"]) == 0
    err = capsys.readouterr().err
    assert "copy:" in err and "valid loss" in err and "finished after 4 steps" in err
    assert "\nexports to: hf, ct2\n" in err        # known before training: the task defaults export everywhere
    assert load_run(out).cfg.d_model == 32
    # a second run into the same directory is refused; resume continues it
    assert main(args + ["--set", "train.steps=4"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--set", "train.steps=6", "--quiet"]) == 0
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    assert main(["train", "--task", "reverse", "--set", "train.stepz=3", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean train.steps?" in capsys.readouterr().err


def test_cli_config_file(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[data]\nkind = "task"\ntask = "sort"\ntrain_size = 200\nvalid_size = 8\nmax_len = 4\n'
                   '[model]\nd_model = 16\nn_heads = 2\nn_encoder_layers = 1\nn_decoder_layers = 1\nd_ff = 32\n'
                   '[train]\nsteps = 2\nbatch_tokens = 128\nprecision = "fp32"\nthreads = 1\neval_examples = 8\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert load_run(tmp_path / "run").cfg.d_model == 16
    cfg.write_text("[train]\nsteps = 2\nwarmup = 3\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run2")]) == 2
    assert "did you mean train.warmup_steps?" in capsys.readouterr().err


# --- language models ---------------------------------------------------------------------------------


def test_language_model_trains_with_char_tokenizer(tmp_path, device):
    text = tmp_path / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 60)
    config = {
        "data": {"kind": "lm", "train_text": str(text), "tokenizer": "char", "block_size": 32},
        "model": {"d_model": 32, "n_heads": 2, "n_decoder_layers": 1, "d_ff": 64, "dropout": 0.0},
        "train": {"steps": 30, "batch_tokens": 256, "schedule": "constant", "lr": 3e-3, "warmup_steps": 1,
                  "precision": "fp32", "threads": 1, "log_every": 1, "eval_every": 30, "eval_examples": 64,
                  "device": device.type},
    }
    result = train(config, tmp_path / "lm", quiet=True)
    run = load_run(tmp_path / "lm")
    assert run.src_tokenizer is None and run.cfg.arch == "decoder-only"
    assert (tmp_path / "lm" / "tokenizer.json").is_file()
    assert set(result.valid) >= {"loss", "ppl", "bpc"}
    assert result.valid["bpc"] == pytest.approx(result.valid["loss"] / math.log(2))
    losses = train_losses(tmp_path / "lm")
    assert losses[-1] < 0.6 * losses[0]


# --- translation from parallel files -------------------------------------------------------------------


def test_translation_from_parallel_files_with_two_tokenizers(tmp_path, capsys):
    words = ["ein hund", "eine katze", "ein mann", "eine frau", "ein kind"]
    english = ["a dog", "a cat", "a man", "a woman", "a child"]
    for split, n in (("train", 40), ("val", 5)):
        (tmp_path / f"{split}.de").write_text("".join(f"{words[i % 5]} läuft\n" for i in range(n)))
        (tmp_path / f"{split}.en").write_text("".join(f"{english[i % 5]} runs\n" for i in range(n)))
    config = {
        "data": {"kind": "translation", "dir": str(tmp_path), "src_lang": "de", "tgt_lang": "en",
                 "tokenizer": "word", "min_freq": 1, "shared_vocab": False},
        "model": {"d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 32},
        "train": {"steps": 3, "batch_tokens": 64, "precision": "fp32", "threads": 1, "eval_every": 3},
    }
    result = train(config, tmp_path / "run", quiet=True)
    assert result.metric == "bleu" and {"bleu", "chrf", "exact_match"} <= set(result.valid)
    run = load_run(tmp_path / "run")
    assert (tmp_path / "run" / "src_tokenizer.json").is_file() and not (tmp_path / "run" / "tokenizer.json").exists()
    assert run.src_tokenizer.token_to_id("hund") is not None and run.tgt_tokenizer.token_to_id("dog") is not None
    assert run.cfg.src_vocab_size == run.src_tokenizer.vocab_size != run.cfg.tgt_vocab_size
    # a translation run is evaluated and plotted with BLEU
    assert main(["evaluate", "-m", str(tmp_path / "run"), "--src", str(tmp_path / "val.de"),
                 "--ref", str(tmp_path / "val.en"), "--beam", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("BLEU = ") and "chrF = " in text and "exact match" not in text
    from qkv.training.metrics import plotted_scores

    assert plotted_scores([result.valid], "translation") == ["exact_match", "bleu", "chrf"]


def test_validation_line_leaves_bleu_out_for_built_in_tasks(capsys):
    """A reversed string is one "word": its BLEU is 0 by construction, so tasks show exact match and chrF."""
    from qkv.training.progress import Progress

    record = {"step": 200, "loss": 0.5, "ppl": 1.65, "exact_match": 0.9, "bleu": 0.0, "chrf": 95.0}
    Progress().validation(record, 1000, show_bleu=False)
    line = capsys.readouterr().err
    assert "exact 90.0%" in line and "chrF 95.0" in line and "BLEU" not in line
    Progress().validation(record, 1000)
    assert "BLEU 0.0  chrF 95.0" in capsys.readouterr().err


def test_a_finished_worker_rank_exits_with_its_status_and_its_output_flushed():
    # the way out for torchrun ranks other than 0 (no interpreter clean-up, where gloo can abort)
    import subprocess
    import sys

    for status in (0, 2):
        code = ("from qkv.training.distributed import exit_worker_rank\nprint('rank 1 done', end='')\n"
                f"exit_worker_rank({status})\nprint('never')")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout) == (status, "rank 1 done"), done.stderr
