"""Training: the loop, learning-rate schedules, the run directory, metrics and DDP.

    from qkv.train import train, task_config
    result = train(task_config("reverse"), "runs/reverse")
    result.run_dir, result.best_metric, result.steps

`qkv.train.checkpoint` (save_run / load_run) is importable on its own; the rest loads lazily.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "train": "qkv.train.loop",
    "TrainResult": "qkv.train.loop",
    "Trainer": "qkv.train.loop",
    "task_config": "qkv.train.options",
    "TrainConfig": "qkv.train.options",
    "DataConfig": "qkv.train.options",
    "save_run": "qkv.train.checkpoint",
    "load_run": "qkv.train.checkpoint",
    "Run": "qkv.train.checkpoint",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qkv.train' has no attribute {name!r}")
