"""train.schedule = "wsd": warmup, a stable rate, then "1 - sqrt" decay over the last fraction of the steps."""

import math
import signal

import pytest
import torch

from qkv import ConfigError
from qkv.data.tasks import task_config
from qkv.run import RunConfig, load_run
from qkv.training import train
from qkv.training.loop import Trainer
from qkv.training.schedule import lr_at, warmup_stable_decay

from tests.training.test_train import tiny_task, train_losses

KW = dict(lr=1e-3, warmup=10, total=110, d_model=64, min_lr=1e-5, decay_fraction=0.2)


def test_wsd_warms_up_holds_then_decays_by_one_minus_sqrt_to_min_lr():
    assert lr_at("wsd", 1, **KW) == pytest.approx(1e-4)
    assert lr_at("wsd", 5, **KW) == pytest.approx(5e-4)                 # linear warmup
    assert lr_at("wsd", 10, **KW) == pytest.approx(1e-3)
    for step in (11, 50, 88):                                              # stable: decay starts after 110 - 22
        assert lr_at("wsd", step, **KW) == 1e-3
    for step, progress in ((99, 0.5), (93.5, 0.25), (110, 1.0)):          # 1 - sqrt(progress) of the way down
        expected = 1e-3 - (1e-3 - 1e-5) * math.sqrt(progress)
        assert warmup_stable_decay(step, 1e-3, 10, 110, 1e-5, 0.2) == pytest.approx(expected)
    assert lr_at("wsd", 110, **KW) == pytest.approx(1e-5)
    assert lr_at("wsd", 200, **KW) == pytest.approx(1e-5)                  # past the end: the floor
    halfway = lr_at("wsd", 99, **KW)                                        # 1 - sqrt: below the straight line
    assert halfway < (1e-3 + 1e-5) / 2
    rates = [lr_at("wsd", s, **KW) for s in range(88, 111)]
    assert all(a > b for a, b in zip(rates, rates[1:]))                    # falls at every step of the decay


def test_wsd_decay_fraction_and_a_decay_longer_than_the_run_after_warmup():
    assert lr_at("wsd", 55, **{**KW, "decay_fraction": 0.5}) == 1e-3      # decay starts after step 55
    assert lr_at("wsd", 56, **{**KW, "decay_fraction": 0.5}) < 1e-3
    whole = {**KW, "decay_fraction": 1.0}                                  # all of it: decays right after warmup
    assert lr_at("wsd", 10, **whole) == pytest.approx(1e-3) and lr_at("wsd", 11, **whole) < 1e-3
    assert lr_at("wsd", 110, **whole) == pytest.approx(1e-5)
    assert lr_at("wsd", 5, **{**KW, "warmup": 0}) == 1e-3                 # no warmup: stable from step 1


def test_wsd_is_a_train_option_with_a_checked_decay_fraction():
    cfg = RunConfig.parse(task_config("reverse"), ["train.schedule=wsd", "train.decay_fraction=0.3"])
    assert cfg.train.schedule == "wsd" and cfg.train.decay_fraction == 0.3
    assert RunConfig.parse(task_config("reverse"), []).train.decay_fraction == 0.2
    for bad in ("0", "1.5", "-0.1", "nan"):
        with pytest.raises(ConfigError, match="train.decay_fraction"):
            RunConfig.parse(task_config("reverse"), [f"train.decay_fraction={bad}"])
    with pytest.raises(ConfigError, match="train.schedule must be one of noam, cosine, linear, wsd, constant"):
        RunConfig.parse(task_config("reverse"), ["train.schedule=wsd2"])


def test_both_optimizers_follow_wsd(tmp_path):
    """AdamW's rate is the curve; Muon's is the same curve scaled to peak at muon_lr."""
    trainer = Trainer(tiny_task(steps=10, optimizer="muon", schedule="wsd", warmup_steps=2, decay_fraction=0.5,
                                lr=1e-3, min_lr=1e-4, muon_lr=0.02), tmp_path / "run", quiet=True)
    optim = trainer.optimizer
    assert optim.muon is not None
    for step in range(1, 11):
        adamw = [g["lr"] for g in optim.adamw.param_groups]
        muon = [g["lr"] for g in optim.muon.param_groups]
        expected = lr_at("wsd", step, lr=1e-3, warmup=2, total=10, d_model=0, min_lr=1e-4, decay_fraction=0.5)
        assert adamw == pytest.approx([expected] * len(adamw))
        assert muon == pytest.approx([expected * 0.02 / 1e-3] * len(muon))
        optim.step()                                                         # no gradients: only the rates move


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_in_the_decay_continues_exactly(tmp_path, monkeypatch, optimizer):
    """A run stopped in its decay and resumed gives the per-step losses and weights of a run that never stopped."""
    keys = dict(steps=8, eval_every=0, checkpoint_every=100, schedule="wsd", warmup_steps=2, decay_fraction=0.5,
                optimizer=optimizer)
    straight = train(tiny_task(**keys), tmp_path / "a", quiet=True)
    assert straight.steps == 8
    real_step, calls = Trainer.train_step, {"n": 0}

    def step_then_signal(self):
        out = real_step(self)
        calls["n"] += 1
        if calls["n"] == 6:                                                  # in the decay (steps 5..8)
            signal.raise_signal(signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    assert train(tiny_task(**keys), tmp_path / "b", quiet=True).steps == 6
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert train(None, tmp_path / "b", [], quiet=True, resume=True).steps == 8
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert len(a) == len(b) == 8 and max(abs(x - y) for x, y in zip(a, b)) <= 1e-6
    wa = load_run(tmp_path / "a", weights="last").model.state_dict()
    wb = load_run(tmp_path / "b", weights="last").model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
