"""qkv: implement, train, run and explain the Transformer.

    import qkv
    run = qkv.load("runs/demo")               # a trained run: translate, generate, evaluate, attention, explain
    run = qkv.train("reverse", steps=300)     # train one and get it back
    model = qkv.EncoderDecoder(qkv.ModelConfig(src_vocab_size=100, tgt_vocab_size=100))   # the paper's model

Names load on first use, so `import qkv` (and the command line's `--help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from qkv.errors import CheckpointError, ConfigError, DataError, QkvError, ShapeError

__version__ = "0.1.0"

_LAZY = {
    "ModelConfig": "qkv.config",
    "EncoderDecoder": "qkv.model",
    "DecoderOnly": "qkv.model",
    "build_model": "qkv.model",
    "RunConfig": "qkv.run",
    "load": "qkv.api",
    "train": "qkv.api",
    "Run": "qkv.api",
    "Attention": "qkv.api",
    "Explanation": "qkv.api",
    "QkvWarning": "qkv.errors",
}

__all__ = [*_LAZY, "QkvError", "ConfigError", "ShapeError", "DataError", "CheckpointError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value          # a function here, never the subpackage of the same name
        return value
    raise AttributeError(f"module 'qkv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
