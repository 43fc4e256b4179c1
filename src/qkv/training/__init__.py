"""Training: the loop, learning-rate schedules, losses, metrics and DDP.

    from qkv.data.tasks import task_config
    from qkv.training import train
    result = train(task_config("reverse"), "runs/reverse")
    result.run_dir, result.best, result.steps

The run's configuration, files and loading live in `qkv.run`; the loop loads lazily.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "train": "qkv.training.loop",
    "TrainResult": "qkv.training.loop",
    "Trainer": "qkv.training.loop",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qkv.training' has no attribute {name!r}")
