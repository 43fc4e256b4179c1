"""Data-parallel training with PyTorch DDP: one process per device, launched by torchrun.

    torchrun --nproc-per-node 2 -m qkv train --task reverse --out runs/reverse

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; every process builds the same model, reads its
own share of the batches (rank r takes micro-batches r, r + W, r + 2W, ... of one global
stream) and DDP averages the gradients during `backward()`. Only rank 0 writes files. The
backend is NCCL on GPUs and gloo on CPUs.

Without those variables everything here is a no-op and training runs in one process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from qkv.errors import ConfigError
from qkv.machine import usable_cores


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank (0 .. world-1), world size, local rank on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def from_env() -> Dist:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers; launch with torchrun") from None
    return Dist(rank, world, local_rank, local_world)


def setup(device: torch.device) -> Dist:
    """Join the process group if torchrun started us; returns this process's place."""
    d = from_env()
    if d.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return d


def device_for(requested: str, d: Dist) -> torch.device:
    """"auto" is CUDA when present (this rank's local GPU), else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and d.enabled:
        requested = f"cuda:{d.local_rank}"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"train.device {requested!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device asks for CUDA but no GPU is visible; use train.device=cpu or auto")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def set_threads(requested: int, d: Dist) -> int:
    """CPU threads for this process: the cores it may use shared evenly between the ranks on this
    machine (LOCAL_WORLD_SIZE, not the world: with several machines each has its own cores)."""
    n = requested or max(1, usable_cores() // d.local_world)
    torch.set_num_threads(n)
    return n


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (identity in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision (stop early, interrupted) for everyone."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if any rank raised the flag (e.g. one of them got Ctrl-C)."""
    return all_reduce_sum([float(flag)], device)[0] > 0


def check_same_everywhere(fingerprint: str, what: str, device: torch.device) -> None:
    """One ConfigError on every rank when `fingerprint` differs from rank 0's (nothing in one process).

    Each machine reads its own copy of the corpus and builds its own tokenizers; when the copies
    differ, the ranks would train on different ids and DDP would average gradients that mean
    nothing, silently."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    import hashlib

    mine = int.from_bytes(hashlib.sha256(fingerprint.encode("utf-8")).digest()[:7], "big")
    t = torch.tensor([mine], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    if any_flag(int(t.item()) != mine, device):
        raise ConfigError(f"{what} differs between the DDP ranks: every machine must read the same data (the "
                          f"same files at the config's paths, or one shared file system) and build the same "
                          f"tokenizers")


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_worker_rank(code: int = 0) -> NoReturn:
    """End a torchrun rank whose part is done (its run saved, its process group destroyed, its one
    line of error printed) with exit status `code`, without the interpreter's final clean-up. There,
    gloo's threads can still hold tensors and abort the process ("terminate called without an active
    exception", SIGABRT), and torchrun answers a failed rank by stopping the others: rank 0, still
    evaluating and writing the results, would lose them (seen once in about fifteen 2-process runs
    of the Shakespeare recipe), and a rank that stopped on a bad input would end in a C++ message
    instead of its one line (about one run in four of two ranks refusing different data)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- one machine, several processes: how the recipes start their own ranks -----------------------


def default_processes() -> int:
    """2 training processes on a CPU with 2+ cores, else 1 (and 1 with CUDA: one GPU).

    Small models keep the threads of one process waiting on each other: on 2 cores without
    AVX-512, 2 single-threaded DDP processes trained a character GPT (d_model 128) at 12,200
    characters/s against 9,000 for one process with 2 threads, and Multi30k's Transformer-tiny at
    6,600 against 5,200 tokens/s (median step)."""
    if torch.cuda.is_available():
        return 1
    return 2 if usable_cores() >= 2 else 1


def check_processes(processes: int) -> int:
    """--processes as given, or one line: at least 1, and no more than this machine's cores or GPUs
    (each rank is a process with its own model copy: more ranks than cores only thrash)."""
    cores = usable_cores()
    most = max(2, cores, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if not 1 <= processes <= most:
        raise ConfigError(f"--processes must be between 1 and {most} on this machine ({cores} cores), got {processes}")
    return processes


def local_launch_command(target: str | list[str], argv: list[str], processes: int,
                         batch_tokens: int | None) -> list[str]:
    """`target argv` under torchrun on this machine (--standalone) in `processes` ranks; target is a
    script path or ["-m", "module"]. Each rank is given its share of the global batch
    `batch_tokens` (appended as the last --set, so it wins); None adds nothing (a resumed run
    keeps the share it was started with)."""
    import sys

    if processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {processes}")
    share = [] if batch_tokens is None else ["--set", f"train.batch_tokens={max(1, batch_tokens // processes)}"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            *([target] if isinstance(target, str) else target), *argv, *share]


def local_launch(command: list[str], processes: int) -> int:
    """Run `command` with the machine's cores shared out as threads among `processes`; return its
    exit status. Ctrl-C reaches the ranks through torchrun: they save and stop."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, usable_cores() // processes)))
    child = subprocess.Popen(command, env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:
        return child.wait()
