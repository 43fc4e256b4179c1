"""train.optimizer = "muon": Muon on the layers' weight matrices, AdamW on the rest."""

import pytest
import torch

from qkv.errors import CheckpointError
from qkv.training import train
from qkv.training.loop import Trainer
from qkv.training.optim import Optimizers, hidden_matrices
from qkv.training.schedule import lr_at

from tests.training.test_train import tiny_task, train_losses


def test_muon_takes_the_layers_matrices_and_adamw_the_rest(tmp_path):
    trainer = Trainer(tiny_task(steps=1, optimizer="muon"), tmp_path / "run", quiet=True)
    names = set(hidden_matrices(trainer.model))
    params = dict(trainer.model.named_parameters())
    assert names and all(params[n].ndim == 2 and ".layers." in f".{n}" for n in names)
    assert all(n.endswith(("_proj.weight", "w1.weight", "w2.weight")) for n in names)
    others = set(params) - names
    assert any("embed" in n for n in others) and all(params[n].ndim == 1 for n in others if ".layers." in n)
    optim = trainer.optimizer
    assert {id(p) for p in optim.muon_params} == {id(params[n]) for n in names}
    assert {id(p) for p in optim.adamw_params} == {id(params[n]) for n in others}
    assert optim.describe().startswith(f"optimizer: Muon on {len(names)} matrices (")


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_the_split_is_written_to_the_run(tmp_path, optimizer):
    from qkv.training.metrics import read_metrics

    train(tiny_task(steps=2, optimizer=optimizer, eval_every=0), tmp_path / "run", quiet=True)
    records = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "optimizer"]
    assert len(records) == 1 and records[0]["optimizer"] == optimizer
    trainer = Trainer(tiny_task(steps=1, optimizer=optimizer), tmp_path / "other", quiet=True)
    muon = hidden_matrices(trainer.model) if optimizer == "muon" else []
    assert records[0].get("muon", {}).get("tensors", []) == muon
    names = [n for n, _ in trainer.model.named_parameters()]
    assert records[0]["adamw"]["tensors"] == [n for n in names if n not in muon]
    assert records[0]["adamw"]["parameters"] + records[0].get("muon", {}).get("parameters", 0) == \
        sum(p.numel() for p in trainer.model.parameters())


def test_a_muon_step_is_torchs_muon_on_the_matrices_and_adamw_on_the_rest(tmp_path):
    config = tiny_task(steps=10, optimizer="muon", muon_lr=0.05, muon_momentum=0.9, muon_weight_decay=0.01,
                       weight_decay=0.02)
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    tc = trainer.tc
    params = dict(trainer.model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    grads: dict[str, torch.Tensor] = {}
    step = Optimizers.step

    def capture(self):                  # the gradients the optimizers see (after clipping)
        grads.update({n: p.grad.detach().clone() for n, p in params.items()})
        step(self)

    trainer.optimizer.step = capture.__get__(trainer.optimizer)
    trainer.train_step()
    rate = dict(warmup=tc.warmup_steps, total=tc.steps, d_model=trainer.cfg.d_model)
    adamw_lr = lr_at(tc.schedule, 1, lr=tc.lr, **rate)
    muon_lr = lr_at(tc.schedule, 1, lr=tc.muon_lr, **rate)      # the same curve, peaking at muon_lr
    muon_names = set(hidden_matrices(trainer.model))
    copies = {n: torch.nn.Parameter(t.clone()) for n, t in before.items()}
    for n, p in copies.items():
        p.grad = grads[n]
    muon = torch.optim.Muon([copies[n] for n in copies if n in muon_names], lr=muon_lr, momentum=0.9,
                            weight_decay=0.01)
    adamw = torch.optim.AdamW([copies[n] for n in copies if n not in muon_names], lr=adamw_lr,
                              betas=(tc.beta1, tc.beta2), eps=tc.eps, weight_decay=0.02)
    muon.step()
    adamw.step()
    for n, p in params.items():
        assert not torch.equal(p.detach(), before[n]), n
        assert torch.allclose(p.detach(), copies[n].detach(), rtol=0, atol=1e-6), n


@pytest.mark.parametrize("saved, resumed", [("adamw", "muon"), ("muon", "adamw")])
def test_resuming_with_another_optimizer_is_refused(tmp_path, saved, resumed):
    train(tiny_task(steps=1, eval_every=0, optimizer=saved), tmp_path / "run", quiet=True)
    with pytest.raises(CheckpointError, match=f"train.optimizer='{saved}'"):
        train(None, tmp_path / "run", ["train.steps=2", f"train.optimizer={resumed}"], quiet=True, resume=True)
    assert train_losses(tmp_path / "run") and len(train_losses(tmp_path / "run")) == 1


def test_a_rate_set_by_hand_moves_muon_by_the_same_share_of_its_peak():
    """qkv history --modern schedules by time: set_lr(lr) before a step sets AdamW's rate and Muon's
    at the same share of train.muon_lr."""
    from qkv.model import build_model
    from qkv.run import TrainConfig
    from tests.tiny import tiny_config

    model = build_model(tiny_config(20, arch="decoder-only", n_encoder_layers=0))
    tc = TrainConfig(optimizer="muon", schedule="constant", lr=2.5e-3, warmup_steps=0, muon_lr=0.02)
    optim = Optimizers(model, tc, 32)
    for lr in (1e-3, 2.5e-3, 1e-4):
        optim.set_lr(lr)
        assert optim.lr == lr and all(g["lr"] == lr for g in optim.adamw.param_groups)
        assert all(g["lr"] == pytest.approx(lr * 0.02 / 2.5e-3) for g in optim.muon.param_groups)
    adamw_only = Optimizers(model, TrainConfig(schedule="constant", lr=2.5e-3, warmup_steps=0), 32)
    adamw_only.set_lr(1e-3)
    assert adamw_only.muon is None and adamw_only.lr == 1e-3
