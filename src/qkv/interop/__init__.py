"""Interoperability: qkv models out to Hugging Face and CTranslate2, a real pretrained encoder in.

- `qkv.interop.hf`: export a run as a `transformers` model directory (Marian, Pegasus or GPT-2,
  whichever is exactly equivalent) with its tokenizer.
- `qkv.interop.ct2`: export a run as a CTranslate2 model (float32 or int8); translating with it is
  a search backend (`qkv.search.ct2`), used through `qkv.text`.
- `qkv.run.targets`: which of those formats a model config exports to (`export_targets`),
  known before training; the exporters apply the same rules.
- `qkv.interop.minilm`: load the pretrained all-MiniLM-L6-v2 sentence encoder into qkv's own
  encoder layers.

Each module imports its optional package (`transformers`, `ctranslate2`, `sentence-transformers`)
only when used: `pip install -e '.[interop]'`.
"""

from __future__ import annotations

import os
from pathlib import Path

from qkv.errors import ConfigError
from qkv.run.targets import FORMATS, describe_targets, export_targets

__all__ = ["FORMATS", "describe_targets", "export_run", "export_targets"]


def export_run(run_dir: str | os.PathLike, fmt: str, out_dir: str | os.PathLike, quantize: str | None = None) -> Path:
    """`qkv export`: write run `run_dir` to `out_dir` as a Hugging Face or CTranslate2 model."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    from qkv.run import refuse_to_replace_run

    refuse_to_replace_run(out_dir, f"the {fmt} export")
    if fmt == "hf":
        if quantize is not None:
            raise ConfigError("--quantize applies to --format ct2 only; Hugging Face exports are float32")
        from qkv.interop.hf import export_hf

        return export_hf(run_dir, out_dir)
    from qkv.interop.ct2 import export_ct2

    return export_ct2(run_dir, out_dir, quantize)
