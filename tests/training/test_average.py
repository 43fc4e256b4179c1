"""qkv average: the mean of the last N step checkpoints, and clear errors; train.keep_checkpoints."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qkv.cli import main
from qkv.errors import CheckpointError
from qkv.training.average import average_checkpoints
from qkv.run import RunDir


def write_steps(run: Path, steps: dict[int, float]) -> None:
    """step-<N>.safetensors whose every weight equals the given value."""
    run.mkdir(exist_ok=True)
    for step, value in steps.items():
        weights = {"a.weight": torch.full((2, 3), value), "b.bias": torch.full((4,), -value)}
        save_file(weights, str(run / f"step-{step}.safetensors"), metadata={"format": "pt", "note": str(step)})


def test_average_is_the_mean_of_the_newest(tmp_path):
    write_steps(tmp_path, {100: 100.0, 200: 1.0, 300: 2.0, 1000: 6.0})  # step 1000 sorts after 300
    out = average_checkpoints(tmp_path, last=3)
    assert out == tmp_path / "averaged.safetensors"
    mean = load_file(str(out))
    assert torch.allclose(mean["a.weight"], torch.full((2, 3), 3.0))
    assert torch.allclose(mean["b.bias"], torch.full((4,), -3.0))
    assert mean["a.weight"].dtype == torch.float32


def test_average_cli_and_errors(tmp_path, capsys):
    write_steps(tmp_path, {1: 1.0, 2: 3.0})
    assert main(["average", str(tmp_path), "--last", "2", "--out", str(tmp_path / "m.safetensors")]) == 0
    assert torch.allclose(load_file(str(tmp_path / "m.safetensors"))["a.weight"], torch.full((2, 3), 2.0))
    assert main(["average", str(tmp_path), "--last", "3"]) == 2
    err = capsys.readouterr().err
    assert "fewer than --last 3" in err and "keep_checkpoints" in err and len(err.strip().splitlines()) == 1
    assert main(["average", str(tmp_path / "nope")]) == 2
    (tmp_path / "step-3.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="step-3.safetensors is corrupted"):
        average_checkpoints(tmp_path, last=3)


def test_average_refuses_different_models(tmp_path):
    write_steps(tmp_path, {1: 1.0})
    save_file({"a.weight": torch.zeros(5)}, str(tmp_path / "step-2.safetensors"))
    with pytest.raises(CheckpointError, match="different"):
        average_checkpoints(tmp_path, last=2)


def test_training_keeps_the_last_checkpoints_and_a_time_limit_stops_it(tmp_path):
    from qkv.data.tasks import task_config
    from qkv.training import train
    from tests.training.test_train import TINY

    sets = TINY + ["train.steps=9", "train.checkpoint_every=2", "train.keep_checkpoints=2", "train.eval_every=0"]
    train(task_config("reverse"), tmp_path / "run", overrides=sets, quiet=True)
    assert [p.name for p in RunDir(tmp_path / "run").step_checkpoints()] == ["step-8.safetensors", "step-9.safetensors"]
    average_checkpoints(tmp_path / "run", last=2)
    from qkv.run import load_run

    assert load_run(tmp_path / "run", weights="averaged").cfg.d_model == 32
    result = train(task_config("reverse"), tmp_path / "timed",
                   overrides=TINY + ["train.steps=1000", "train.max_minutes=1e-9"], quiet=True)
    assert result.stopped == "time limit" and result.steps == 1 and result.valid
