"""DDP on CPU (gloo, localhost): two processes match one process with the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from qkv.train import train
from qkv.train.metrics import read_metrics

from test_train import tiny_task

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")]

STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, config: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    train(config, out, quiet=True)


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # dropout off: the two setups draw their dropout masks from different generators
    config = tiny_task(steps=STEPS, eval_every=0, checkpoint_every=STEPS)
    config["model"]["dropout"] = 0.0
    single = dict(config, train=dict(config["train"], accumulate=2))
    train(single, tmp_path / "single", quiet=True)

    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), config), nprocs=2,
                       join=True, start_method="spawn")
    a, b = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(a) == len(b) == STEPS
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)
    # only rank 0 wrote files, and the weights agree
    from qkv.train.checkpoint import load_run

    wa = load_run(tmp_path / "single", weights="last").model.state_dict()
    wb = load_run(tmp_path / "ddp", weights="last").model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
