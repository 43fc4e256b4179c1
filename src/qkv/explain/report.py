"""A self-contained HTML page that walks through one forward pass with the model's real numbers.

    html = render_html(trace(model, src, tgt, src_tok, tgt_tok), layer=0, head=0)              # English
    html = render_html(t, layer=0, head=0, lang="ko")                                           # Korean

The page follows the data: tokens -> embeddings + positions -> attention, step by step for one
layer and head (Q, K, V, Q K^T, scaling, mask, softmax, mixing values, output projection) ->
heatmaps of every kind of attention -> all heads of the layer -> the next-token distribution at
every step. Layers and heads are counted from 0 (as `qkv explain --layer/--head`). The steps are
built once in `qkv.explain.steps` (the explorer shows the same ones); every word comes from
`qkv.explain.i18n` in the page's language. Pictures are PNGs embedded as base64; there are no
external files, scripts or fonts.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from qkv.errors import ConfigError, DataError
from qkv.explain import plots
from qkv.explain.i18n import DEFAULT_LANGUAGE, Msg, Words, msg, raw
from qkv.explain.steps import Step, Table, attention_steps, final_norm_step, softcap_step, table
from qkv.explain.trace import AttentionTrace, LayerTrace, Trace
from qkv.files import atomic_write_bytes

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans KR", "NanumGothic", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h3 { margin-top: 1.4em; } code, .eq { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.eq { background: #f5f7fa; padding: .4em .7em; border-radius: 4px; display: inline-block; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: .6em 1em; }
.meta td { padding: 0 1em 0 0; }
table.m { border-collapse: collapse; font: 12px ui-monospace, "DejaVu Sans Mono", monospace; margin: .3em 0 1em; }
table.m td, table.m th { border: 1px solid #e2e2e2; padding: 2px 6px; text-align: right; }
table.m th { background: #f3f3f3; font-weight: 600; }
table.m td.masked { color: #999; background: repeating-linear-gradient(45deg, #f4f4f4, #f4f4f4 4px, #e6e6e6 4px, #e6e6e6 8px); }
table.tok td, table.tok th { text-align: center; min-width: 2em; }
.bar { display: inline-block; height: .8em; background: #4a7fc1; vertical-align: middle; margin-right: .4em; }
.hit { background: #e3f4e1; }
.step { margin: .8em 0 1.4em; }
.mats { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
details > summary { cursor: pointer; font-weight: 600; font-size: 1.1em; margin: .6em 0; }
img { max-width: 100%; }
.fig { flex: 1 1 420px; max-width: 540px; }
.caption { color: #555; font-size: .92em; }
"""


# ---------------------------------------------------------------------------------------------
# Small HTML pieces
# ---------------------------------------------------------------------------------------------


def esc(text: object) -> str:
    return html.escape(str(text))


def image(fig: Figure, alt: str) -> str:
    """A figure as an inline PNG."""
    data = base64.b64encode(plots.png_bytes(fig)).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table_html(t: Table, w: Words) -> str:
    """A Table (qkv.explain.steps) as HTML: masked cells hatched, cut rows and columns as ⋮ and …."""
    head = "".join(f"<th>{esc(c)}</th>" for c in t.cols)
    body = []
    for label, cells, masked in zip(t.rows, t.cells, t.masked):
        if label == "⋮" and all(c == "⋮" for c in cells):
            body.append("<tr><th>⋮</th>" + "<td>⋮</td>" * len(cells) + "</tr>")
            continue
        row = "".join(f'<td class="masked">{esc(c)}</td>' if m else f"<td>{esc(c)}</td>" for c, m in zip(cells, masked))
        body.append(f"<tr><th>{esc(label)}</th>{row}</tr>")
    shape = " × ".join(str(s) for s in t.shape)
    title = f"<div class='caption'>{esc(w.of(t.caption))} <span>({shape})</span></div>" if t.caption else ""
    tag = f" data-tensor='{esc(t.name)}'" if t.name else ""
    return f"<div>{title}<table class='m'{tag}><tr><th></th>{head}</tr>{''.join(body)}</table></div>"


def matrix_table(m: torch.Tensor, row_labels: Sequence[str], col_labels: Sequence[str] | None = None,
                 caption: str | Msg = "", hidden: torch.Tensor | None = None, name: str | None = None,
                 w: Words | None = None) -> str:
    """A 2-D tensor as an HTML table; big ones keep their first rows/columns and the last one.

    `hidden` (bool, same shape) marks masked cells, shown hatched. `name` tags the table
    (data-tensor="name") so that a reader or a test can find the tensor it shows."""
    cap = (raw(caption) if caption else None) if isinstance(caption, str) else caption
    return table_html(table(m, row_labels, col_labels, cap, hidden, name), w or Words())


def step_html(step: Step, w: Words, heading: str = "h4") -> str:
    """One step: its title, what it does, its equation, and its tables (a norm's ε first)."""
    n = step.norm
    tag = ("" if n is None else f"data-qk-norm-eps='{n['eps']!r}'" if n.get("per_head") else
           f"data-norm='{n['kind']}' data-eps='{n['eps']!r}'")
    eps = "" if n is None else f"<span class='caption' {tag}>ε = {n['eps']:g}</span>"
    text = " ".join(w.of(m) for m in step.text)
    tables = "".join(table_html(t, w) for t in step.tables)
    return (f"<{heading}>{esc(w.of(step.title))}</{heading}><p>{esc(text)}</p><p class='eq'>{esc(w.of(step.equation))}</p>"
            f"<div class='mats'>{eps}{tables}</div>")


def token_table(ids: Sequence[int], tokens: Sequence[str], w: Words | None = None) -> str:
    w = w or Words()
    pos = "".join(f"<th>{i}</th>" for i in range(len(ids)))
    toks = "".join(f"<td>{esc(t)}</td>" for t in tokens)
    nums = "".join(f"<td>{i}</td>" for i in ids)
    return (f"<table class='m tok'><tr><th>{w.html('page.tokens.position')}</th>{pos}</tr>"
            f"<tr><th>{w.html('page.tokens.token')}</th>{toks}</tr>"
            f"<tr><th>{w.html('page.tokens.id')}</th>{nums}</tr></table>")


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _header(t: Trace, title: str, warnings: Sequence[str], w: Words) -> str:
    layers = (msg("page.layers_ed", enc=len(t.encoder_layers), dec=len(t.decoder_layers))
              if t.arch == "encoder-decoder" else msg("page.layers_lm", dec=len(t.decoder_layers)))
    a = t.attentions()[0]
    rows = [(w("page.meta.model"), w("page.meta.model_value", arch=msg(f"page.arch.{t.arch}"), layers=layers,
                                      d_model=a.x.size(-1), heads=a.n_heads, d_head=a.d_head,
                                      ln=msg("page.pre_ln" if t.norm_first else "page.post_ln")))]
    since = [w(key, **args) for on, key, args in (
        (t.positional == "rope", "page.since.rope", {}), (t.norm == "rmsnorm", "page.since.rmsnorm", {}),
        (a.n_kv_heads is not None and a.n_kv_heads < a.n_heads, "page.since.gqa", {"n": a.n_kv_heads}),
        (t.qk_norm, "page.since.qk_norm", {}),
        (t.logit_softcap > 0, "page.since.softcap", {"cap": f"{t.logit_softcap:g}"}),
        (t.value_embeddings, "page.since.value_embeddings", {}),
    ) if on]
    if since:
        rows.append((w("page.meta.since"), ", ".join(since)))
    if t.src is not None:
        rows.append((w("page.meta.source"), " ".join(t.src.tokens)))
    rows.append((w("page.meta.decoder_input"), " ".join(t.tgt.tokens)))
    meta = "".join(f"<tr><td><b>{esc(k)}</b></td><td>{esc(v)}</td></tr>" for k, v in rows)
    warn = "".join(f"<p class='warn'>⚠ {esc(x)}</p>" for x in (*warnings, *t.warnings))
    return f"<h1>{esc(title)}</h1>{warn}<table class='meta'>{meta}</table>"


def _tokens_section(t: Trace, w: Words) -> str:
    parts = [f"<h2>{w.html('page.tokens.h')}</h2><p>{w.html('page.tokens.p')}</p>"]
    if t.src is not None:
        parts.append(f"<h3>{w.html('page.tokens.source_h')}</h3>" + token_table(t.src.ids, t.src.tokens, w))
        parts.append(f"<h3>{w.html('page.tokens.target_h')}</h3><p>{w.html('page.tokens.target_p_html')}</p>")
    else:
        parts.append(f"<h3>{w.html('page.tokens.text_h')}</h3><p>{w.html('page.tokens.text_p')}</p>")
    parts.append(token_table(t.tgt.ids, t.tgt.tokens, w))
    return "".join(parts)


def _embedding_section(t: Trace, w: Words, pw: Words) -> str:
    emb = t.src if t.src is not None else t.tgt
    d = emb.sum.size(-1)
    cols = [str(j) for j in range(d)]
    if t.positional == "rope":
        return (
            f"<h2>{w.html('page.emb.rope_h')}</h2><p>{w.html('page.emb.rope_p')}</p>"
            f"<p class='eq'>x<sub>t</sub> = E[token<sub>t</sub>] · {emb.scale:.2f}</p>"
            f"<div class='mats'>{matrix_table(emb.sum, emb.tokens, cols, msg('page.emb.cap_sum'), w=w)}</div>"
        )
    fig = plots.matrix_heatmap(
        [(pw("page.emb.fig_token", scale=f"{emb.scale:.2f}"), emb.token_embedding),
         (pw("page.emb.fig_pe"), emb.positional), (pw("page.emb.fig_sum"), emb.sum)],
        emb.tokens, pw("page.emb.fig_title_source" if t.src is not None else "page.emb.fig_title_input", d=d),
        lang=pw.lang,
    )
    tables = "".join([
        matrix_table(emb.token_embedding, emb.tokens, cols, msg("page.emb.cap_token", scale=f"{emb.scale:.2f}"), w=w),
        matrix_table(emb.positional, emb.tokens, cols, msg("page.emb.cap_pe"), w=w),
        matrix_table(emb.sum, emb.tokens, cols, msg("page.emb.cap_sum"), w=w),
    ])
    return (
        f"<h2>{w.html('page.emb.h')}</h2><p>{w.html('page.emb.p')}</p>"
        f"<p class='eq'>x<sub>t</sub> = E[token<sub>t</sub>] · √d_model + PE(t)</p>"
        f"<div class='mats'>{tables}</div>{image(fig, w('page.emb.alt'))}"
    )


def _step_by_step(a: AttentionTrace, head: int, open_: bool, rope_theta: float, w: Words) -> str:
    """Every step of one head's attention (qkv.explain.steps), with the numbers and the weights that made them."""
    body = "".join(f"<div class='step'>{step_html(s, w)}</div>" for s in attention_steps(a, head, rope_theta))
    summary = w.html("kind.title_head", layer=a.layer, kind=msg(f"kind.{a.kind}"), head=head)
    return f"<details data-attention='{a.kind}'{' open' if open_ else ''}><summary>{summary}</summary>{body}</details>"


def _layer_attentions(t: Trace, layer: int) -> list[AttentionTrace]:
    """The attentions of `layer` in forward order: enc, then dec and cross (those that exist)."""
    out = []
    for kind in ("enc", "dec", "cross"):
        try:
            out.append(t.attention(kind, layer))
        except ConfigError:
            continue
    return out


def _attention_section(t: Trace, layer: int, head: int, w: Words, pw: Words) -> str:
    atts = _layer_attentions(t, layer)
    steps = "".join(_step_by_step(a, head, i == 0, t.rope_theta, w) for i, a in enumerate(atts))
    heat = "".join(
        f"<div class='fig'><h3>{esc(_capitalized(w(f'kind.{a.kind}')))}</h3>"
        f"<p class='caption'>{w.html(f'page.maps.{a.kind}')}</p>"
        f"{image(plots.attention_heatmap(a, head, pw.lang), plots.attention_title(a, w))}</div>"
        for a in atts
    )
    grids = "".join(image(plots.heads_grid(a, pw.lang), w("page.heads.alt", title=plots.attention_title(a, w)))
                    for a in atts)
    kinds = "page.attn.kinds_ed" if t.arch == "encoder-decoder" else "page.attn.kinds_lm"
    return (
        f"<h2>{w.html('page.attn.h', layer=layer, head=head)}</h2>"
        f"<p>{w.html('page.attn.p')} {w.html(kinds)}</p>"
        "<p class='eq'>Attention(Q, K, V) = softmax(Q Kᵀ / √d_head) V</p>"
        f"{steps}<h2>{w.html('page.maps.h', layer=layer, head=head)}</h2>"
        f"<p>{w.html('page.maps.p')}</p><div class='mats'>{heat}</div>"
        f"<h2>{w.html('page.heads.h', layer=layer)}</h2><p>{_heads_text(atts[0], w)}</p>{grids}"
    )


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _heads_text(a: AttentionTrace, w: Words) -> str:
    if a.n_kv_heads is None or a.n_kv_heads >= a.n_heads:
        return w.html("page.heads.own")
    group = a.n_heads // a.n_kv_heads
    return w.html("page.heads.gqa", heads=a.n_heads, kv_heads=a.n_kv_heads, g=group, g1=group - 1)


def _ffn_section(t: Trace, layer: int, w: Words) -> str:
    stack = t.encoder_layers if layer < len(t.encoder_layers) else t.decoder_layers
    lt: LayerTrace = stack[layer]
    norm = "RMSNorm" if t.norm == "rmsnorm" else "LayerNorm"
    where = msg("page.ffn.where_pre" if t.norm_first else "page.ffn.where_post", norm=norm)
    blocks = [("page.block.attention", lt.self_block), ("page.block.feed-forward", lt.ff_block)]
    rows = []
    for i, tok in enumerate(lt.self_attn.query_tokens):
        cells = "".join(
            f"<td>{b.input[i].norm():.2f}</td><td>{b.fn_output[i].norm():.2f}</td><td>{b.output[i].norm():.2f}</td>"
            for _, b in blocks
        )
        rows.append(f"<tr><th>{esc(tok)}</th>{cells}</tr>")
    head = "".join(f"<th>{w.html('page.ffn.in')}</th><th>‖{w.html(name)}‖</th><th>{w.html('page.ffn.out')}</th>"
                   for name, _ in blocks)
    hidden = lt.ff.hidden
    active = float((hidden > 0).float().mean())
    return (
        f"<h2>{w.html('page.ffn.h', stack=msg(f'stack.{lt.stack}'), layer=layer)}</h2>"
        f"<p>{w.html('page.ffn.p', where=where)}</p>"
        f"<p class='eq'>{esc(_ffn_equation(t.activation, w))}</p>"
        f"<p>{w.html('page.ffn.hidden', units=hidden.size(-1), active=f'{active:.0%}')}</p>"
        f"<table class='m'><tr><th>{w.html('page.ffn.token')}</th>{head}</tr>{''.join(rows)}</table>"
        f"<p class='caption'>{w.html('page.ffn.caption')}"
        f"{' ' + w.html('page.ffn.post_note') if not t.norm_first else ''}</p>{_rmsnorm_note(lt, w)}"
    )


def _ffn_equation(activation: str, w: Words) -> str:
    if activation == "swiglu":
        return w("page.ffn.eq_swiglu")
    if activation == "gelu":
        return "FFN(x) = GELU(x W₁ + b₁) W₂ + b₂"
    return "FFN(x) = max(0, x W₁ + b₁) W₂ + b₂"


def _rmsnorm_note(lt: LayerTrace, w: Words) -> str:
    """With RMSNorm: the formula and each token's RMS, the number its stream was divided by."""
    blocks = [(name, b) for name, b in (("page.block.attention", lt.self_block), ("page.block.feed-forward", lt.ff_block))
              if b.rms is not None]
    if not blocks:
        return ""
    cells = "".join(f"<th>{w.html(name)}</th>" for name, _ in blocks)
    rows = "".join(
        f"<tr><th>{esc(tok)}</th>" + "".join(f"<td>{float(b.rms[i]):.3f}</td>" for _, b in blocks) + "</tr>"
        for i, tok in enumerate(lt.self_attn.query_tokens)
    )
    return (
        f"<h3>{w.html('page.rms.h')}</h3><p>{w.html('page.rms.p_html')}</p>"
        "<p class='eq'>RMSNorm(x) = x / √(mean(x²) + ε) · g</p>"
        f"<table class='m'><tr><th>{w.html('page.ffn.token')}</th>{cells}</tr>{rows}</table>"
        f"<p class='caption'>{w.html('page.rms.caption')}</p>"
    )


def _predictions_section(t: Trace, k: int, w: Words) -> str:
    rows = []
    for step in t.top_k(k):
        target = step["target"]
        cells = []
        for c in step["top"]:
            hit = target is not None and c["id"] == target["id"]
            cells.append(f"<td class='{'hit' if hit else ''}' style='text-align:left'>"
                         f"<span class='bar' style='width:{60 * c['prob']:.0f}px'></span>"
                         f"{esc(c['token'])} {c['prob']:.3f}</td>")
        true = "" if target is None else f"{esc(target['token'])} {target['prob']:.3f}"
        rows.append(f"<tr><th>{step['step']}</th><td>{esc(step['input'])}</td>{''.join(cells)}"
                    f"<td style='text-align:left'>{true}</td></tr>")
    head = "".join(f"<th>#{i + 1}</th>" for i in range(len(t.top_k(k)[0]["top"])))
    return (
        f"<h2>{w.html('page.pred.h')}</h2><p>{w.html('page.pred.p')}</p>"
        f"<p class='eq'>{_output_equation(t, w)}</p>"
        f"{_final_norm(t, w)}{_softcap(t, w)}"
        f"<table class='m'><tr><th>{w.html('page.pred.step')}</th><th>{w.html('page.pred.input')}</th>{head}"
        f"<th>{w.html('page.pred.actual')}</th></tr>{''.join(rows)}</table>"
    )


def _final_norm(t: Trace, w: Words) -> str:
    """h, the vector the output layer reads: with pre-LN the last layer's stream through one more norm."""
    step = final_norm_step(t)
    if step is None:
        return f"<p>{w.html('page.final.post')}</p>"
    return f"<div data-final-norm='1'>{step_html(step, w, 'h3')}</div>"


def _output_equation(t: Trace, w: Words) -> str:
    if t.raw_logits is None:
        return w.html("page.pred.eq")
    return w.html("page.pred.eq_softcap", cap=f"{t.logit_softcap:g}")


def _softcap(t: Trace, w: Words) -> str:
    """With model.logit_softcap: the logits and the capped logits softmax reads (`steps.softcap_step`)."""
    step = softcap_step(t)
    if step is None:
        return ""
    return f"<div data-softcap='{t.logit_softcap!r}'>{step_html(step, w, 'h3')}</div>"


def check_focus(n_layers: int, n_heads: int, layer: int, head: int) -> None:
    """The layer and head to zoom in on must exist (both counted from 0)."""
    if not 0 <= layer < n_layers:
        raise ConfigError(f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}")
    if not 0 <= head < n_heads:
        raise ConfigError(f"head {head} does not exist: the model has heads 0..{n_heads - 1}")


def render_html(t: Trace, layer: int = 0, head: int = 0, k: int = 5, title: str | None = None,
                warnings: Sequence[str] = (), lang: str = DEFAULT_LANGUAGE) -> str:
    """The whole page for trace `t`, zooming in on `layer` and `head` (0-based), every word in
    `lang` ("en" or "ko"; the pictures too where a font with Hangul is installed)."""
    w = Words(lang)
    check_focus(max(len(t.encoder_layers), len(t.decoder_layers)), t.attentions()[0].n_heads, layer, head)
    title = title if title is not None else w("page.title_default")
    pw = Words(plots.picture_language(lang))          # the pictures' words
    with plots.fonts_for(pw.lang):
        body = "".join([
            _header(t, title, warnings, w),
            _tokens_section(t, w),
            _embedding_section(t, w, pw),
            _attention_section(t, layer, head, w, pw),
            _ffn_section(t, layer, w),
            _predictions_section(t, k, w),
        ])
    return (f"<!DOCTYPE html><html lang='{w.lang}'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


# ---------------------------------------------------------------------------------------------
# From a run directory
# ---------------------------------------------------------------------------------------------


def report_notes(run, explained, lang: str = DEFAULT_LANGUAGE) -> list[str]:
    """What the report says about the run and the output besides the input's warnings, in `lang`:
    an untrained model, and which output is explained when no target was given."""
    w = Words(lang)
    notes = []
    if not run.dir.has_metrics():
        notes.append(w("page.note.untrained", path=run.path, file=run.dir.metrics.name))
    if explained.own_output:
        what = "page.note.own_continuation" if run.cfg.arch == "decoder-only" else "page.note.own_translation"
        notes.append(w(what, text=repr(run.tgt_tokenizer.decode(explained.output))))
    return notes


def explain_run(run, text: str, target: str | None = None, layer: int = 0, head: int = 0,
                max_new_tokens: int | None = None, lang: str = DEFAULT_LANGUAGE) -> tuple[Trace, list[str], str]:
    """What the report of `text` shows (`qkv.explain.text.explain_text`): the trace, its warnings
    (`report_notes` in `lang`, and the input's) and the page's title; `layer` and `head` must exist."""
    from qkv.explain.text import explain_text

    w = Words(lang)
    cfg = run.cfg
    check_focus(max(cfg.n_decoder_layers, cfg.n_encoder_layers if cfg.arch == "encoder-decoder" else 0),
                cfg.n_heads, layer, head)
    explained = explain_text(run, text, target, max_new_tokens,
                             name="the source" if cfg.arch == "encoder-decoder" else "the text")
    title = (w("page.title", run=run.path.name, text=text) if target is None else
             w("page.title_target", run=run.path.name, text=text, target=target))
    return explained.trace, report_notes(run, explained, lang) + explained.warnings, title


def write_report(path: str | os.PathLike, run, text: str, target: str | None = None, layer: int = 0,
                 head: int = 0, k: int = 5, max_new_tokens: int | None = None,
                 lang: str = DEFAULT_LANGUAGE) -> list[str]:
    """Write the HTML report for `text` and the model's output (or `target`) through a loaded run
    (`explain_run`), in `lang` ("en" or "ko"); return its warnings."""
    Words(lang)                                   # a wrong language is refused before any work
    t, warnings, title = explain_run(run, text, target, layer, head, max_new_tokens, lang)
    page = render_html(t, layer, head, k, title=title, warnings=warnings, lang=lang)
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a file name such as {path / 'explain.html'}")
    atomic_write_bytes(path, page.encode("utf-8"))
    return warnings
