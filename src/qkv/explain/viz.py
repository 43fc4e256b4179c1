"""What `qkv viz` draws, as library functions that write PNG files.

    write_positional_encoding("pe.png", d_model=128, max_len=100)
    write_attention("att.png", run, "hello", layer=0, head=1, kind="cross")
    neighbours = write_embeddings("emb.png", run, "dog", k=10)
"""

from __future__ import annotations

import os
from pathlib import Path

from qkv.errors import ConfigError, DataError
from qkv.explain import plots
from qkv.explain.embeddings import Neighbour, nearest_neighbours, pca_2d
from qkv.explain.text import explain_text
from qkv.model.layers import sinusoidal_table


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a file name such as {path / 'picture.png'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.save_png(fig, path)
    return path


def write_positional_encoding(path: str | os.PathLike, d_model: int = 128, max_len: int = 100) -> Path:
    """The sinusoidal table of the paper, as a heatmap plus a few of its waves."""
    if d_model < 2 or d_model % 2:
        raise ConfigError(f"--d-model must be an even number >= 2, got {d_model}")
    if not 1 <= max_len <= 100_000:
        raise ConfigError(f"--max-len must be between 1 and 100000, got {max_len}")
    if max_len * d_model > 10_000_000:
        raise ConfigError(f"--max-len x --d-model must be at most 10,000,000 numbers (a picture shows far "
                          f"fewer), got {max_len} x {d_model}")
    return _save(plots.positional_encoding(sinusoidal_table(max_len, d_model)), path)


def write_attention(path: str | os.PathLike, run, text: str, target: str | None = None,
                    layer: int = 0, head: int = 0, kind: str = "cross") -> Path:
    """One head's attention map for `text` and the model's own greedy output, or `target`
    (`qkv.explain.text.explain_text`)."""
    t = explain_text(run, text, target).trace
    if run.cfg.arch == "decoder-only" and kind == "cross":
        kind = "dec"                            # the default kind fits both model shapes
    att = t.attention(kind, layer)
    if not 0 <= head < att.n_heads:
        raise ConfigError(f"head {head} does not exist: the model has heads 0..{att.n_heads - 1}")
    return _save(plots.attention_heatmap(att, head), path)


def write_embeddings(path: str | os.PathLike, run, word: str, k: int = 10, side: str = "tgt") -> list[Neighbour]:
    """Nearest neighbours of `word` in the model's token embeddings, and their 2-D PCA picture."""
    if side not in ("src", "tgt"):
        raise ConfigError(f"side must be 'src' or 'tgt', got {side!r}")
    model = run.model
    if run.cfg.arch == "decoder-only" or side == "tgt":
        embed = model.embed if run.cfg.arch == "decoder-only" else model.tgt_embed
        tokenizer, side = run.tgt_tokenizer, "target" if run.cfg.arch == "encoder-decoder" else "token"
    else:
        embed, tokenizer, side = model.src_embed, run.src_tokenizer, "source"
    weight = embed.token.weight.detach()
    found = nearest_neighbours(weight, tokenizer, word, k)
    points = pca_2d(weight[[n.id for n in found]])
    title = f"{side} embeddings of {run.path.name}: {found[0].token!r} and its {len(found) - 1} nearest tokens"
    _save(plots.embedding_neighbours(points, [n.token for n in found], [n.similarity for n in found], title), path)
    return found
