"""Pictures of a Transformer at work: attention heatmaps, positional encodings, embeddings.

Every function returns a `matplotlib.figure.Figure` built without pyplot (no global state, no
display needed); `save_png` writes one to disk and `png_bytes` gives the bytes for embedding in
an HTML page. Axes carry the tokens, every heatmap has a colour bar, every title says what it
shows (layer, head, kind), in English or Korean (`lang`; Korean is drawn inside `fonts_for("ko")`
with a font that has Hangul, when one is installed: `picture_language`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from qkv.explain.i18n import Words, msg
from qkv.explain.trace import AttentionTrace
from qkv.files import atomic_write_bytes

ATTENTION_CMAP = "Blues"
HIDDEN_COLOUR = "#b0b0b0"        # hatching over masked (hidden) cells
ANNOTATE_MAX = 14                # write the numbers into the cells up to this many rows/columns
HANGUL_FONTS = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "NanumBarunGothic", "UnDotum", "Baekmuk Gulim")


@functools.cache
def hangul_font() -> str | None:
    """The name of an installed font with Hangul (Debian: fonts-nanum or fonts-noto-cjk), or None.
    Fonts installed after matplotlib built its font cache are added here."""
    from matplotlib import font_manager

    def known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((name for name in HANGUL_FONTS if name in names), None)

    if known() is None:
        for path in font_manager.findSystemFonts():
            if any(part in os.path.basename(path) for part in ("Nanum", "NotoSansCJK", "NotoSansKR", "UnDotum", "baekmuk")):
                with contextlib.suppress(Exception):
                    font_manager.fontManager.addfont(path)
    return known()


def picture_language(lang: str) -> str:
    """The language the pictures can be labelled in: Korean needs a font with Hangul, else English."""
    return lang if lang != "ko" or hangul_font() is not None else "en"


@contextlib.contextmanager
def fonts_for(lang: str) -> Iterator[None]:
    """Figures made and saved inside draw their text in `lang`'s script (Latin glyphs from DejaVu Sans,
    the rest from a font that has them)."""
    font = hangul_font() if lang == "ko" else None
    if font is None:
        yield
        return
    import matplotlib

    with matplotlib.rc_context({"font.family": ["DejaVu Sans", font]}):
        yield


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)              # every figure here uses constrained layout
    return buf.getvalue()


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    atomic_write_bytes(path, png_bytes(fig, dpi))


def _cell_size(n_rows: int, n_cols: int, cell: float = 0.45, least: float = 2.5, most: float = 11.0) -> tuple[float, float]:
    """Figure (width, height) in inches for a heatmap of n_rows x n_cols cells plus labels."""
    width = min(most, max(least, n_cols * cell + 2.0))
    height = min(most, max(least, n_rows * cell + 1.5))
    return width, height


def draw_attention(
    ax,
    weights: torch.Tensor,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str],
    mask: torch.Tensor | None = None,
    title: str = "",
    annotate: bool | None = None,
    labels: bool = True,
    row_labels: bool = True,
):
    """One (T_q, T_k) weight matrix on `ax`: queries down the side, keys along the top.

    Masked cells (mask False) are hatched grey: their weight is exactly zero because softmax
    never saw them. Returns the image, for a colour bar.
    """
    w = weights.detach().float().cpu().numpy()
    image = ax.imshow(w, cmap=ATTENTION_CMAP, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    n_q, n_k = w.shape
    if mask is not None:
        cells = [Rectangle((j - 0.5, i - 0.5), 1, 1) for i, j in zip(*np.nonzero(~mask.cpu().numpy()))]
        ax.add_collection(PatchCollection(cells, facecolor="none", hatch="///", edgecolor=HIDDEN_COLOUR, linewidth=0))
    if annotate is None:
        annotate = max(n_q, n_k) <= ANNOTATE_MAX
    if annotate:
        for i in range(n_q):
            for j in range(n_k):
                value = w[i, j]
                text = "0" if value == 0 else f"{value:.2f}".lstrip("0")
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 else ("#777777" if value == 0 else "black"))
    if labels:
        ax.set_xticks(range(n_k), list(key_tokens), rotation=90 if max(map(len, key_tokens), default=0) > 2 else 0)
        ax.set_yticks(range(n_q), list(query_tokens) if row_labels else [])
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.tick_params(length=0, labelsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return image


def _axis_names(kind: str, w: Words) -> tuple[str, str]:
    """(query axis, key axis) captions: who is looking, at what."""
    return w(f"plot.axis.{kind}_query"), w(f"plot.axis.{kind}_key")


def attention_title(att: AttentionTrace, w: Words) -> str:
    """'layer 0 encoder self-attention' in `w`'s language."""
    return w("kind.title", layer=att.layer, kind=msg(f"kind.{att.kind}"))


def attention_heatmap(att: AttentionTrace, head: int, lang: str = "en") -> Figure:
    """One head of one attention as a heatmap with a colour bar, labelled in `lang` (draw and save
    it inside `fonts_for(lang)`)."""
    w = Words(lang)
    n_q, n_k = att.weights.shape[-2:]
    fig = Figure(figsize=_cell_size(n_q, n_k), layout="constrained")
    ax = fig.add_subplot()
    title = w("kind.title_head", layer=att.layer, kind=msg(f"kind.{att.kind}"), head=head)
    hidden = None if att.mask.all() else att.mask
    image = draw_attention(ax, att.weights[head], att.query_tokens, att.key_tokens, hidden)
    ylabel, xlabel = _axis_names(att.kind, w)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.9, label=w("plot.weight"))
    fig.suptitle(title, fontsize=11)
    return fig


def heads_grid(att: AttentionTrace, lang: str = "en") -> Figure:
    """Every head of one attention side by side (same colour scale): each head's own viewpoint."""
    w = Words(lang)
    h = att.n_heads
    n_q, n_k = att.weights.shape[-2:]
    cols = min(h, 4)
    rows = (h + cols - 1) // cols
    small = max(n_q, n_k) > 20
    wd, ht = _cell_size(n_q, n_k, cell=0.16 if small else 0.3, least=2.2, most=5.0)
    fig = Figure(figsize=(cols * wd + 1.0, rows * ht + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    hidden = None if att.mask.all() else att.mask
    for i, ax in enumerate(axes.flat):
        if i >= h:
            ax.set_visible(False)
            continue
        image = draw_attention(ax, att.weights[i], att.query_tokens, att.key_tokens, hidden,
                               title=w("plot.head", head=i), annotate=False, labels=not small,
                               row_labels=i % cols == 0)
    fig.colorbar(image, ax=axes, shrink=0.8, label=w("plot.weight"))
    fig.suptitle(w("plot.all_heads", title=attention_title(att, w), n=h), fontsize=12)
    return fig


def matrix_heatmap(
    matrices: Sequence[tuple[str, torch.Tensor]],
    row_labels: Sequence[str],
    title: str,
    cmap: str = "RdBu_r",
    lang: str = "en",
) -> Figure:
    """Several (T, d) matrices side by side with one symmetric colour scale (e.g. token
    embedding, positional encoding and their sum): rows are tokens, columns dimensions."""
    limit = max(float(m.abs().max()) for _, m in matrices) or 1.0
    n = len(matrices)
    t = matrices[0][1].size(0)
    fig = Figure(figsize=(3.6 * n + 1.0, min(8.0, max(2.4, 0.32 * t + 1.4))), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, m) in zip(axes, matrices):
        image = ax.imshow(m.detach().float().cpu().numpy(), cmap=cmap, vmin=-limit, vmax=limit,
                          aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_yticks(range(t), list(row_labels))
        ax.set_xlabel(Words(lang)("plot.dimension"), fontsize=9)
        ax.tick_params(labelsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.9)
    fig.suptitle(title, fontsize=12)
    return fig


def positional_encoding(table: torch.Tensor) -> Figure:
    """The sinusoidal table (positions x dimensions) and a few of its dimensions as waves."""
    max_len, d_model = table.shape
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[2, 1])
    image = top.imshow(table.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    top.set_xlabel("dimension i")
    top.set_ylabel("position")
    top.set_title(f"sinusoidal positional encoding, d_model={d_model}, {max_len} positions\n"
                  "PE(pos, 2i) = sin(pos / 10000^(2i/d)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d))",
                  fontsize=10)
    fig.colorbar(image, ax=top, label="value")
    dims = sorted({0, 2, min(8, d_model - 2), d_model // 4 * 2, d_model - 2})
    for dim in dims:
        bottom.plot(table[:, dim].numpy(), label=f"dim {dim}")
    bottom.set_xlabel("position")
    bottom.set_ylabel("PE value")
    bottom.set_title("low dimensions turn fast, high dimensions slowly: each pair is a clock", fontsize=10)
    bottom.legend(fontsize=8, loc="upper right", ncols=len(dims))
    bottom.set_ylim(-1.3, 1.6)
    return fig


def embedding_neighbours(points: np.ndarray, labels: Sequence[str], sims: Sequence[float], title: str) -> Figure:
    """A 2-D projection of a word (first point) and its nearest neighbours, labelled with cosine
    similarity: words the model uses alike lie close together."""
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    colours = ax.scatter(points[1:, 0], points[1:, 1], c=list(sims[1:]), cmap="viridis", s=50,
                         vmin=min(sims[1:], default=0.0), vmax=max(sims[1:], default=1.0))
    ax.scatter(points[:1, 0], points[:1, 1], c="crimson", s=140, marker="*", zorder=3)
    for (x, y), label, sim in zip(points, labels, sims):
        ax.annotate(f"{label}" if sim >= 0.9999 else f"{label} ({sim:.2f})", (x, y),
                    textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title, fontsize=11)
    ax.margins(0.2)
    fig.colorbar(colours, ax=ax, label="cosine similarity to the word")
    return fig
