"""DDP on CPU (gloo, localhost): two processes match one process with the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from qkv.training import train
from qkv.training.metrics import read_metrics

from tests.training.test_train import tiny_task

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")]

STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, config: dict) -> None:
    """One DDP rank of a test; leaves as qkv's own ranks do (exit_worker_rank: no interpreter
    clean-up, where gloo can abort a finished rank)."""
    from qkv.training.distributed import exit_worker_rank

    _train_as_rank(rank, world, port, out, config)
    exit_worker_rank()


def _train_as_rank(rank: int, world: int, port: int, out: str, config: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    train(config, out, quiet=True)


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path, device, optimizer):
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip("DDP on CUDA needs two GPUs")
    # dropout off: the two setups draw their dropout masks from different generators
    config = tiny_task(steps=STEPS, eval_every=0, checkpoint_every=STEPS, device=device.type, optimizer=optimizer)
    config["model"]["dropout"] = 0.0
    single = dict(config, train=dict(config["train"], accumulate=2))
    train(single, tmp_path / "single", quiet=True)

    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), config), nprocs=2,
                       join=True, start_method="spawn")
    a, b = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(a) == len(b) == STEPS
    assert max(abs(x - y) for x, y in zip(a, b)) < (1e-5 if device.type == "cpu" else 1e-4), (a, b)
    # only rank 0 wrote files, and the weights agree
    from qkv.run import load_run

    wa = load_run(tmp_path / "single", weights="last").model.state_dict()
    wb = load_run(tmp_path / "ddp", weights="last").model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5 if device.type == "cpu" else 1e-4) for k in wa)
    if optimizer == "muon":     # each rank kept the momentum of its share; the checkpoint has all of it
        from qkv.run import RunDir

        def momentum(run):
            state = torch.load(RunDir(run).state, map_location="cpu", weights_only=True)["muon"]["optimizer"]["state"]
            return [state[i]["momentum_buffer"] for i in sorted(state)]

        ma, mb = momentum(tmp_path / "single"), momentum(tmp_path / "ddp")
        assert len(ma) == len(mb) > 1 and all(torch.allclose(x, y, atol=1e-5) for x, y in zip(ma, mb))


def test_cli_launch_command_shares_the_global_batch(tmp_path):
    from qkv.cli import train_launch_command

    command = train_launch_command(2, "reverse", None, tmp_path / "run", ["train.steps=3"], None, True)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert command[6:] == ["qkv", "train", "--quiet", "--set", "train.steps=3", "--task", "reverse",
                           "--out", str(tmp_path / "run"), "--set", "train.batch_tokens=600"]   # the task's 1200 / 2
    command = train_launch_command(4, None, None, None, ["train.batch_tokens=1000", "train.batch_tokens=2000"], None, False)
    assert command[-4:] == ["--out", "runs/reverse", "--set", "train.batch_tokens=500"]        # the last --set wins
    resumed = train_launch_command(2, None, None, None, [], tmp_path / "run", False)
    assert resumed[7:] == ["train", "--resume", str(tmp_path / "run")]                         # the run keeps its share


def test_cli_trains_in_two_processes(tmp_path, capsys):
    from qkv.cli import main
    from qkv.run import load_run_config

    tiny = ["model.d_model=32", "model.n_heads=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
            "model.d_ff=64", "train.steps=3", "train.eval_every=0", "train.eval_examples=8", "train.batch_tokens=400",
            "data.train_size=300", "data.valid_size=16"]
    out = tmp_path / "run"
    assert main(["train", "--task", "reverse", "--processes", "2", "--quiet", "--out", str(out),
                 *sum((["--set", s] for s in tiny), [])]) == 0
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"][-1] == 3
    assert load_run_config(out)["train"]["batch_tokens"] == 200                                # each rank's share


# --- a prepared (memory-mapped) corpus --------------------------------------------------------------


def _recording_worker(rank: int, world: int, port: int, out: str, config: dict, record: str, window: int) -> None:
    """_worker that also writes the pair indices of every micro-batch this rank trains on."""
    _record_batches(f"{record}.{rank}")
    from qkv.data import shards

    shards.WINDOW = window
    _worker(rank, world, port, out, config)


def _record_batches(path: str) -> None:
    import json

    from qkv.training import inputs

    original = inputs.MicroBatches.next

    def next_and_record(self):
        batch = original(self)
        with open(path, "a") as f:
            f.write(json.dumps(batch.indices.tolist()) + "\n")
        return batch

    inputs.MicroBatches.next = next_and_record


def test_ddp_ranks_read_disjoint_batches_from_a_prepared_corpus(tmp_path, monkeypatch):
    import json

    from qkv.data import shards
    from qkv.data.shards import prepare_corpus
    from qkv.training.inputs import MicroBatches
    from qkv.run import DataConfig

    from tests.data.test_shards import TINY_MODEL, TINY_TRAIN, translation_data, write_pairs

    (tmp_path / "corpus").mkdir()
    data = translation_data(write_pairs(tmp_path / "corpus"))
    prepare_corpus(DataConfig(**data), tmp_path / "prepared")
    window = 60                                          # 8 micro-batches of ~10 pairs reach a second window
    config = {"model": TINY_MODEL, "train": dict(TINY_TRAIN, steps=STEPS, checkpoint_every=STEPS),
              "data": dict(data, prepared=str(tmp_path / "prepared"))}
    monkeypatch.setattr(shards, "WINDOW", window)
    monkeypatch.setattr(MicroBatches, "next", MicroBatches.next)   # undone after the test
    _record_batches(str(tmp_path / "seen.single"))
    train(dict(config, train=dict(config["train"], accumulate=2)), tmp_path / "single", quiet=True)
    mp.start_processes(_recording_worker, nprocs=2, join=True, start_method="spawn",
                       args=(2, _free_port(), str(tmp_path / "ddp"), config, str(tmp_path / "seen"), window))

    def seen(name):
        return [json.loads(line) for line in (tmp_path / f"seen.{name}").read_text().splitlines()]

    single, rank0, rank1 = seen("single"), seen("0"), seen("1")
    assert len(rank0) == len(rank1) == STEPS and len(single) == 2 * STEPS
    assert not {i for b in rank0 for i in b} & {i for b in rank1 for i in b}          # disjoint pairs
    assert single == [b for step in zip(rank0, rank1) for b in step]                 # one stream, shared out
    a, b = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(a) == len(b) == STEPS and max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)


# --- two torchrun agents (--nnodes 2) on one machine: what two machines do ----------------------


AGENT_SECONDS = 90                                       # both agents are killed after this


def _tagged_processes(tag: str) -> list[int]:
    """Our processes whose environment carries `tag`: the agents and every worker they started (the
    workers run in sessions of their own and outlive a killed agent)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if f"QKV_TEST_AGENTS={tag}".encode() in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:                              # gone, or another user's
                pass
    return pids


def _kill_tagged(tag: str) -> None:
    import signal

    for pid in _tagged_processes(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the agents' workers through /proc")
def test_two_torchrun_agents_with_nnodes_2_match_one_process(tmp_path):
    """Two `torchrun --nnodes 2` agents, each a "machine" with one CPU rank, meet at a c10d rendezvous
    on 127.0.0.1 and train the same per-step losses as one process with the same global batch.
    Each agent gets its own --out, as two machines without a shared file system would: the run lands
    only where global rank 0 runs, and the other "machine" gets nothing."""
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    import qkv
    from tests.training.test_train import TINY

    sets = [*TINY, "model.dropout=0.0", f"train.steps={STEPS}", "train.eval_every=0",
            f"train.checkpoint_every={STEPS}"]
    single = tiny_task(steps=STEPS, eval_every=0, checkpoint_every=STEPS, accumulate=2)
    single["model"]["dropout"] = 0.0
    train(single, tmp_path / "single", quiet=True)

    tag = uuid.uuid4().hex
    src = str(Path(qkv.__file__).resolve().parents[1])
    env = dict(os.environ, QKV_TEST_AGENTS=tag, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    env.pop("WORLD_SIZE", None)                          # not a rank ourselves
    endpoint = f"127.0.0.1:{_free_port()}"
    agents, logs = [], []
    try:
        for node in (0, 1):
            log = open(tmp_path / f"agent{node}.log", "wb")
            logs.append(log)
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                       "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", f"qkv-test-{tag}",
                       "--rdzv-conf", f"is_host={int(node == 0)}", "--max-restarts", "0", "--local-addr", "127.0.0.1",
                       "-m", "qkv", "train", "--task", "reverse", "--quiet", "--out", str(tmp_path / f"node{node}" / "run"),
                       *sum((["--set", s] for s in sets), [])]
            agents.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))
        codes = [agent.wait(timeout=AGENT_SECONDS) for agent in agents]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        _kill_tagged(tag)                                # agents and workers alike, on any outcome
        for agent in agents:
            agent.wait()
        for log in logs:
            log.close()
    output = "\n".join(f"--- agent {n}:\n" + (tmp_path / f"agent{n}.log").read_text(errors="replace")[-3000:]
                       for n in (0, 1))
    assert codes == [0, 0], f"agents ended with {codes} (None: killed after {AGENT_SECONDS} s)\n{output}"
    assert not _tagged_processes(tag)

    written = [n for n in (0, 1) if (tmp_path / f"node{n}").exists()]
    assert len(written) == 1, f"exactly one 'machine' holds the run (global rank 0's), got {written}"
    a, b = _losses(tmp_path / "single"), _losses(tmp_path / f"node{written[0]}" / "run")
    assert len(a) == len(b) == STEPS
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)


# --- several machines: what is per machine and what is global --------------------------------------


def test_threads_and_model_copies_count_the_ranks_of_this_machine_not_the_world(monkeypatch):
    """Two machines of 8 usable cores with 2 ranks each: every rank gets 4 threads (not 8 // 4), and the
    memory check counts 2 model copies on this machine (not 4)."""
    from qkv.training import distributed

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    d = distributed.from_env()
    assert (d.rank, d.world, d.local_rank, d.local_world, d.is_main, d.enabled) == (3, 4, 1, 2, False, True)
    threads = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 64)                   # the node has 64 cores...
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)  # ...8 are ours
    try:
        assert distributed.set_threads(0, d) == 4 == torch.get_num_threads()
        assert distributed.set_threads(3, d) == 3                       # train.threads wins
    finally:
        torch.set_num_threads(threads)
    assert distributed.check_processes(8) == 8
    with pytest.raises(Exception, match="between 1 and 8"):
        distributed.check_processes(9)


def test_the_memory_check_counts_the_copies_on_this_machine(monkeypatch, tmp_path):
    """Rank 1 of 4, two per machine: check_model_fits is asked for 2 copies of the model (CPU)."""
    from qkv.training import loop

    seen = []
    monkeypatch.setattr(loop, "check_model_fits", lambda cfg, device, training, copies: seen.append(copies))
    monkeypatch.setattr(loop.distributed, "setup", lambda device: loop.distributed.from_env())   # no group
    monkeypatch.setattr(loop, "build_model", lambda cfg: (_ for _ in ()).throw(RuntimeError("stop here")))
    for name, value in (("WORLD_SIZE", "4"), ("RANK", "1"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    try:
        with pytest.raises(RuntimeError, match="stop here"):
            loop.Trainer(tiny_task(steps=1), tmp_path / "run")
    finally:
        torch.set_rng_state(rng)
        torch.set_num_threads(threads)
    assert seen == [2] and not (tmp_path / "run").exists()              # and rank 1 wrote nothing


def _data_check_worker(rank: int, world: int, port: int, out: str, config: dict) -> None:
    """_worker where rank 1's machine holds other data (a smaller corpus); records the error."""
    from qkv.errors import ConfigError
    from qkv.training.distributed import exit_worker_rank

    if rank == 1:
        config = dict(config, data=dict(config["data"], train_size=config["data"]["train_size"] - 50))
    try:
        _train_as_rank(rank, world, port, out, config)
    except ConfigError as exc:
        with open(f"{out}.error.{rank}", "w") as f:
            f.write(str(exc))
    exit_worker_rank()


def test_ranks_with_different_data_stop_with_one_line_each(tmp_path):
    config = tiny_task(steps=2, eval_every=0, checkpoint_every=2)
    mp.start_processes(_data_check_worker, args=(2, _free_port(), str(tmp_path / "run"), config), nprocs=2,
                       join=True, start_method="spawn")
    for rank in (0, 1):
        assert "differs between the DDP ranks" in (tmp_path / f"run.error.{rank}").read_text()
    assert not (tmp_path / "run" / "train_state.pt").exists()
