"""Checkpoint averaging: the mean of the last N saved weights, often worth a BLEU point or more.

Training with `train.keep_checkpoints = N` keeps `step-<N>.safetensors` files in the run
directory; `average_checkpoints(run_dir, last=N)` writes their element-wise mean as
`averaged.safetensors` (atomically), which `load_run(run_dir, weights="averaged")` loads; copy
it over `model.safetensors` to make every `--model` command use it.

    qkv average runs/multi30k-de-en --last 5
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from qkv.errors import CheckpointError, ConfigError
from qkv.run import RunDir, read_weights, save_tensors

def average_checkpoints(run_dir: str | os.PathLike, last: int, out: str | os.PathLike | None = None) -> Path:
    """Average the newest `last` step-<N>.safetensors of `run_dir`; returns the file written."""
    run_dir = Path(run_dir)
    if last < 1:
        raise ConfigError(f"--last must be >= 1, got {last}")
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    found = RunDir(run_dir).step_checkpoints()
    if len(found) < last:
        raise CheckpointError(
            f"{run_dir} holds {len(found)} step checkpoint(s) (step-<N>.safetensors), fewer than --last {last}; "
            f"train with train.keep_checkpoints >= {last} or average fewer"
        )
    paths = found[-last:]
    total, metadata = _read(paths[0])
    total = {name: t.double() for name, t in total.items()}
    for path in paths[1:]:
        weights, _ = _read(path)
        if weights.keys() != total.keys() or any(weights[k].shape != total[k].shape for k in total):
            raise CheckpointError(f"{path} holds different weights than {paths[0]}; they come from different models")
        for name, tensor in weights.items():
            total[name] += tensor.double()
    dtypes, _ = _read(paths[-1])
    mean = {name: (t / last).to(dtypes[name].dtype).contiguous() for name, t in total.items()}
    target = Path(out) if out is not None else RunDir(run_dir).weights("averaged")
    save_tensors(target, mean, metadata)                   # with its own hash
    return target


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A step file's tensors and metadata, checked against its recorded hash."""
    tensors, metadata, _ = read_weights(path)
    return tensors, metadata
