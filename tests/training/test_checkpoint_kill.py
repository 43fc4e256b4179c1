"""Kill training anywhere: resume then continues bit-exactly, or refuses with one line.

A forked child trains with `os.replace` wrapped so that it SIGKILLs itself just before the N-th
atomic write is renamed into place (and once just after the last): that covers a kill in the
middle of every file write (a complete temporary file left behind) and between every pair of
checkpoint writes (last.safetensors, step-N, train_state.pt, model.safetensors...). A few more children are killed at random moments. After
each kill the run is resumed in this process and must end with exactly the weights, train losses
and best model of an uninterrupted run.
"""

import os
import random
import signal
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from qkv import CheckpointError
from qkv.data.tasks import task_config
from qkv.training import train
from qkv.run import weights_step
from qkv.training.metrics import read_metrics
from qkv.run import parse_config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TINY = [
    "model.d_model=16", "model.n_heads=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
    "model.d_ff=32", "model.dropout=0.1",     # dropout on: the RNG state must survive the kill too
    "train.batch_tokens=120", "train.precision=fp32", "train.threads=1", "train.log_every=1",
    "train.eval_examples=8", "train.schedule=constant", "train.lr=3e-3", "train.warmup_steps=2",
    "train.steps=4", "train.eval_every=2", "train.checkpoint_every=2", "train.keep_checkpoints=1",
    "data.train_size=120", "data.valid_size=8", "data.max_len=5",
]


@pytest.fixture(scope="module", autouse=True)
def no_plots():
    """The PNG at the end of each run is most of a tiny run's time and no part of a checkpoint."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("qkv.training.loop.plot_run", lambda *args, **kwargs: None)
        yield


def config():
    return parse_config(task_config("reverse"), TINY)


def outcome(run_dir):
    state = torch.load(run_dir / "train_state.pt", weights_only=True)
    weights = load_file(run_dir / "last.safetensors")
    if "model" in state:                        # the checkpoint is one unit
        assert all(torch.equal(weights[k], state["model"][k]) for k in weights)
    losses = [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]
    best = run_dir / "model.safetensors"        # tensors and step (the header's key order may vary)
    return state["step"], weights, losses, (weights_step(best), load_file(best))


def killed_child(run_dir, kill_at=None, after=False, delay=None) -> bool:
    """Train in a forked child that SIGKILLs itself at the kill_at-th os.replace (before or after
    it) or after `delay` seconds. True when it died by the kill (False: it finished first)."""
    pid = os.fork()
    if pid == 0:                                     # the child: train until killed
        try:
            real_replace, calls = os.replace, [0]

            def replace(src, dst):
                calls[0] += 1
                if calls[0] == kill_at and not after:
                    os.kill(os.getpid(), signal.SIGKILL)
                real_replace(src, dst)
                if calls[0] == kill_at and after:
                    os.kill(os.getpid(), signal.SIGKILL)

            os.replace = replace
            if delay is not None:
                threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
            train(config(), run_dir, quiet=True)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def resume_or_refuse(run_dir):
    """Resume the killed run to the end; where no checkpoint exists yet, resume must refuse and a
    fresh start in the same directory must work."""
    if (run_dir / "train_state.pt").exists():
        train(None, run_dir, quiet=True, resume=True)
        return "resumed"
    with pytest.raises(CheckpointError) as refused:
        train(None, run_dir, quiet=True, resume=True)
    assert "\n" not in str(refused.value)
    train(config(), run_dir, quiet=True)
    return "restarted"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and how many atomic writes it makes."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    real_replace, calls = os.replace, [0]

    def counting(src, dst):
        calls[0] += 1
        real_replace(src, dst)

    os.replace = counting
    try:
        train(config(), run_dir, quiet=True)
    finally:
        os.replace = real_replace
    return outcome(run_dir), calls[0]


def check_same(run_dir, reference):
    (step, weights, losses, best), _ = reference
    got_step, got_weights, got_losses, got_best = outcome(run_dir)
    assert got_step == step
    assert got_weights.keys() == weights.keys()
    assert all(torch.equal(got_weights[k], weights[k]) for k in weights)     # bit-exact
    assert got_losses == losses
    assert got_best[0] == best[0] and got_best[1].keys() == best[1].keys()
    assert all(torch.equal(got_best[1][k], best[1][k]) for k in best[1])
    assert not list(run_dir.glob(".*.tmp"))                                   # leftovers cleaned
    assert weights_step(run_dir / "last.safetensors") == step


def test_kill_at_every_write_then_resume_is_bit_exact(reference, tmp_path):
    _, writes = reference
    assert writes >= 12                  # config, tokenizer, then last/step/state/best at each checkpoint
    seen = set()
    # just before write n's rename: its temporary file is complete, writes 1..n-1 are done (so this
    # is also "between write n-1 and write n"); and once after the very last write
    for n, after in [(n, False) for n in range(1, writes + 1)] + [(writes, True)]:
        run_dir = tmp_path / f"kill-{n}-{'after' if after else 'before'}"
        assert killed_child(run_dir, kill_at=n, after=after), f"write {n} was never reached"
        seen.add(resume_or_refuse(run_dir))
        check_same(run_dir, reference)
    assert seen == {"resumed", "restarted"}


def test_kill_at_random_moments_then_resume_is_bit_exact(reference, tmp_path):
    rng = random.Random(19)
    start = time.perf_counter()
    train(config(), tmp_path / "timing", quiet=True)
    seconds = time.perf_counter() - start
    for i in range(4):
        run_dir = tmp_path / f"random-{i}"
        killed_child(run_dir, delay=rng.uniform(0.05, 1.0) * seconds)
        if (run_dir / "train_state.pt").exists() or (run_dir / "config.toml").exists():
            resume_or_refuse(run_dir)
        else:
            train(config(), run_dir, quiet=True)
        check_same(run_dir, reference)
