"""Fixtures for the Python blocks of README.md and docs/*.md (run by pytest-markdown-docs).

A block fenced ```python fixture:trained_runs runs in a fresh working directory that holds small
trained runs under the names the docs use: runs/demo and runs/reverse (the reverse task) and
runs/tiny-lm (a character language model), trained once per test session.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

LM_TEXT = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
           "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. ") * 40


@pytest.fixture(scope="session")
def _trained_runs(tmp_path_factory) -> Path:
    from qkv.data.tasks import task_config
    from qkv.training import train

    root = tmp_path_factory.mktemp("doc-runs")
    tiny = ["model.d_model=48", "model.n_heads=4", "model.d_ff=128", "data.train_size=3000", "data.valid_size=50",
            "data.max_len=6", "train.steps=150", "train.eval_every=150", "train.checkpoint_every=150",
            "train.eval_examples=50", "train.threads=2"]
    train(task_config("reverse"), root / "reverse", tiny, quiet=True)
    (root / "lm.txt").write_text(LM_TEXT, encoding="utf-8")
    lm = {"model": {"d_model": 32, "n_heads": 2, "n_decoder_layers": 1, "d_ff": 64, "max_len": 64, "norm_first": True},
          "train": {"steps": 60, "batch_tokens": 512, "schedule": "cosine", "lr": 3e-3, "warmup_steps": 10,
                    "eval_every": 60, "checkpoint_every": 60, "eval_examples": 64, "threads": 2},
          "data": {"kind": "lm", "train_text": str(root / "lm.txt"), "tokenizer": "char", "block_size": 64}}
    train(lm, root / "tiny-lm", quiet=True)
    return root


@pytest.fixture
def trained_runs(_trained_runs, tmp_path, monkeypatch) -> Path:
    """A working directory with runs/demo, runs/reverse and runs/tiny-lm (copies: blocks may write)."""
    for name, source in (("demo", "reverse"), ("reverse", "reverse"), ("tiny-lm", "tiny-lm")):
        shutil.copytree(_trained_runs / source, tmp_path / "runs" / name)
    monkeypatch.chdir(tmp_path)
    assert Path(os.getcwd()) == tmp_path
    return tmp_path
