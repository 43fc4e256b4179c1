"""A self-contained HTML page that walks through one forward pass with the model's real numbers.

    html = render_html(trace(model, src, tgt, src_tok, tgt_tok), layer=0, head=0)

The page follows the data: tokens -> embeddings + positions -> attention, step by step for one
layer and head (Q, K, V, Q K^T, scaling, mask, softmax, mixing values, output projection) ->
heatmaps of every kind of attention -> all heads of the layer -> the next-token distribution at
every step. Pictures are PNGs embedded as base64; there are no external files, scripts or fonts.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from qkv.files import atomic_write_bytes
from qkv.errors import ConfigError, DataError
from qkv.explain import plots
from qkv.explain.trace import KIND_NAMES, AttentionTrace, LayerTrace, NormTrace, Trace

MAX_ROWS = 8        # matrices larger than this are cut, with an ellipsis row/column
MAX_COLS = 8

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
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


def _number(x: float) -> str:
    if x == float("-inf"):
        return "−∞"
    if x == 0:
        return "0"
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.2e}"


def _cut(n: int, limit: int) -> list[int | None]:
    """Indices to show out of n: all, or the first limit-1, an ellipsis (None) and the last."""
    if n <= limit:
        return list(range(n))
    return list(range(limit - 1)) + [None, n - 1]


def matrix_table(
    m: torch.Tensor,
    row_labels: Sequence[str],
    col_labels: Sequence[str] | None = None,
    caption: str = "",
    hidden: torch.Tensor | None = None,
    name: str | None = None,
) -> str:
    """A 2-D tensor as an HTML table; big ones keep their first rows/columns and the last one.

    `hidden` (bool, same shape) marks masked cells, shown hatched. `name` tags the table
    (data-tensor="name") so that a reader or a test can find the tensor it shows.
    """
    rows, cols = _cut(m.size(0), MAX_ROWS), _cut(m.size(1), MAX_COLS)
    col_labels = list(col_labels) if col_labels is not None else [str(j) for j in range(m.size(1))]
    head = "".join(f"<th>{'…' if j is None else esc(col_labels[j])}</th>" for j in cols)
    body = []
    for i in rows:
        if i is None:
            body.append("<tr><th>⋮</th>" + "<td>⋮</td>" * len(cols) + "</tr>")
            continue
        cells = []
        for j in cols:
            if j is None:
                cells.append("<td>…</td>")
            elif hidden is not None and bool(hidden[i, j]):
                cells.append(f'<td class="masked">{_number(float(m[i, j]))}</td>')
            else:
                cells.append(f"<td>{_number(float(m[i, j]))}</td>")
        body.append(f"<tr><th>{esc(row_labels[i])}</th>{''.join(cells)}</tr>")
    shape = " × ".join(str(s) for s in m.shape)
    title = f"<div class='caption'>{caption} <span>({shape})</span></div>" if caption else ""
    tag = f" data-tensor='{esc(name)}'" if name else ""
    return f"<div>{title}<table class='m'{tag}><tr><th></th>{head}</tr>{''.join(body)}</table></div>"


def token_table(ids: Sequence[int], tokens: Sequence[str]) -> str:
    pos = "".join(f"<th>{i}</th>" for i in range(len(ids)))
    toks = "".join(f"<td>{esc(t)}</td>" for t in tokens)
    nums = "".join(f"<td>{i}</td>" for i in ids)
    return (f"<table class='m tok'><tr><th>position</th>{pos}</tr><tr><th>token</th>{toks}</tr>"
            f"<tr><th>id</th>{nums}</tr></table>")


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _header(t: Trace, title: str, warnings: Sequence[str]) -> str:
    layers = (f"{len(t.encoder_layers)} encoder + {len(t.decoder_layers)} decoder layers"
              if t.arch == "encoder-decoder" else f"{len(t.decoder_layers)} decoder layers")
    a = t.attentions()[0]
    rows = [
        ("model", f"{t.arch}, {layers}, d_model={a.x.size(-1)}, {a.n_heads} heads of d_head={a.d_head}, "
                  f"{'pre-LN' if t.norm_first else 'post-LN (as in the paper)'}"),
    ]
    since = [text for on, text in (
        (t.positional == "rope", "rotary positions (RoPE)"), (t.norm == "rmsnorm", "RMSNorm"),
        (a.n_kv_heads is not None and a.n_kv_heads < a.n_heads, f"grouped-query attention ({a.n_kv_heads} key/value heads)"),
        (t.qk_norm, "QK-norm"), (t.logit_softcap > 0, f"logits soft-capped at ±{t.logit_softcap:g}"),
    ) if on]
    if since:
        rows.append(("since 2017", ", ".join(since)))
    if t.src is not None:
        rows.append(("source", " ".join(t.src.tokens)))
    rows.append(("decoder input", " ".join(t.tgt.tokens)))
    meta = "".join(f"<tr><td><b>{esc(k)}</b></td><td>{esc(v)}</td></tr>" for k, v in rows)
    warn = "".join(f"<p class='warn'>⚠ {esc(w)}</p>" for w in (*warnings, *t.warnings))
    return f"<h1>{esc(title)}</h1>{warn}<table class='meta'>{meta}</table>"


def _tokens_section(t: Trace) -> str:
    parts = ["<h2>1. Tokens</h2><p>The tokenizer cuts the text into tokens and looks up each one's id. "
             "Spaces are shown as ␣.</p>"]
    if t.src is not None:
        parts.append("<h3>Source (the encoder's input)</h3>" + token_table(t.src.ids, t.src.tokens))
        parts.append("<h3>Target, shifted right (the decoder's input)</h3><p>The decoder reads "
                     "<code>&lt;bos&gt;</code> followed by the target and, at every position, predicts "
                     "the next token.</p>")
    else:
        parts.append("<h3>Text (the decoder's input)</h3><p>At every position the model predicts the next token.</p>")
    parts.append(token_table(t.tgt.ids, t.tgt.tokens))
    return "".join(parts)


def _embedding_section(t: Trace) -> str:
    emb = t.src if t.src is not None else t.tgt
    side = "source" if t.src is not None else "input"
    d = emb.sum.size(-1)
    fig = plots.matrix_heatmap(
        [(f"token embedding × {emb.scale:.2f}", emb.token_embedding), ("positional encoding", emb.positional),
         ("sum: the first layer's input", emb.sum)],
        emb.tokens, f"{side} tokens as vectors of d_model={d} numbers",
    )
    cols = [str(j) for j in range(d)]
    tables = "".join([
        matrix_table(emb.token_embedding, emb.tokens, cols, f"token embedding × √d_model = × {emb.scale:.2f}"),
        matrix_table(emb.positional, emb.tokens, cols, "+ positional encoding"),
        matrix_table(emb.sum, emb.tokens, cols, "= input of layer 0"),
    ])
    if t.positional == "rope":
        return (
            "<h2>2. Embeddings (positions come later, by rotation)</h2>"
            "<p>Each token id selects a row of the embedding matrix (a learned vector). This model uses "
            "rotary positions (RoPE): nothing is added here; instead every attention turns each query and "
            "key by an angle proportional to its position (section 3, step 1b).</p>"
            f"<p class='eq'>x<sub>t</sub> = E[token<sub>t</sub>] · {emb.scale:.2f}</p>"
            f"<div class='mats'>{matrix_table(emb.sum, emb.tokens, cols, '= input of layer 0')}</div>"
        )
    return (
        "<h2>2. Embeddings and positions</h2>"
        "<p>Each token id selects a row of the embedding matrix (a learned vector), scaled by "
        "√d_model. Attention itself ignores order, so a positional encoding is added: a vector "
        "that depends only on the position. The sum is what the first layer sees.</p>"
        f"<p class='eq'>x<sub>t</sub> = E[token<sub>t</sub>] · √d_model + PE(t)</p>"
        f"<div class='mats'>{tables}</div>{image(fig, 'embeddings')}"
    )


Step = tuple[str, str, str, list[str]]          # name, explanation, equation, tables


def _norm_tables(n: NormTrace, tokens: Sequence[str], prefix: str, what: str) -> list[str]:
    """A norm's input, parameters and output as tables named prefix + stream/gain/bias/x."""
    dims = [str(j) for j in range(n.input.size(-1))]
    tables = [f"<span class='caption' data-norm='{n.kind}' data-eps='{n.eps!r}'>ε = {n.eps:g}</span>",
              matrix_table(n.input, tokens, dims, "the residual stream", name=f"{prefix}stream"),
              matrix_table(n.gain[None], ["g"], dims, "gain g", name=f"{prefix}gain")]
    if n.bias is not None:
        tables.append(matrix_table(n.bias[None], ["b"], dims, "bias b", name=f"{prefix}bias"))
    tables.append(matrix_table(n.output, tokens, dims, what, name=f"{prefix}x"))
    return tables


def norm_equation(n: NormTrace) -> str:
    if n.kind == "rmsnorm":
        return f"RMSNorm(x) = x / √(mean(x²) + ε) · g,   ε = {n.eps:g}"
    return f"LayerNorm(x) = (x − mean(x)) / √(var(x) + ε) · g + b,   ε = {n.eps:g}   (var: the mean of squares, not n − 1)"


def _input_step(a: AttentionTrace) -> Step:
    """Step 0: the x the queries come from (with pre-LN: the norm that made it) and, for
    cross-attention, the encoder output m that keys and values come from."""
    dims = [str(j) for j in range(a.x.size(-1))]
    memory = ([matrix_table(a.memory, a.key_tokens, dims, "m: the encoder output", name="memory")]
              if a.kind == "cross" else [])
    m_text = " Keys and values come from m, the encoder's output." if a.kind == "cross" else ""
    if a.norm is not None:
        name = "RMSNorm" if a.norm.kind == "rmsnorm" else "LayerNorm"
        return ("0. Normalize the residual stream (pre-LN)",
                f"This model is pre-LN: the attention does not read the residual stream itself but its {name}, "
                f"computed token by token with the gain g{' and bias b' if a.norm.bias is not None else ''} below."
                + m_text,
                norm_equation(a.norm), [*_norm_tables(a.norm, a.query_tokens, "norm_", "x = the norm's output"), *memory])
    first = " (the embeddings, section 2)" if a.layer == 0 and a.kind != "cross" else ""
    return ("0. The input x",
            f"This model is post-LN: the attention reads the residual stream as it is{first}; its LayerNorm "
            "comes after the residual addition." + m_text,
            "x = the residual stream", [matrix_table(a.x, a.query_tokens, dims, "x", name="x"), *memory])


def _projection_step(a: AttentionTrace, head: int) -> Step:
    """Step 1: the slices of W_Q, W_K, W_V that make this head's Q, K, V, and the results."""
    d, model_dims = a.d_head, [str(j) for j in range(a.x.size(-1))]
    dims = [str(j) for j in range(d)]
    kv = a.kv_head(head)
    q_cols, kv_cols = f"{head * d}..{(head + 1) * d - 1}", f"{kv * d}..{(kv + 1) * d - 1}"
    source = "x" if a.kind != "cross" else "m"
    if a.n_kv_heads is not None and a.n_kv_heads < a.n_heads:
        group = a.n_heads // a.n_kv_heads
        shared = (f" This model uses grouped-query attention: {a.n_kv_heads} key/value heads for {a.n_heads} query "
                  f"heads, so query heads {kv * group}..{kv * group + group - 1} share key/value head {kv}: "
                  f"head {head} reads columns {kv_cols} of W_K and W_V.")
    else:
        shared = f" Head {head} has its own keys and values: columns {kv_cols} of W_K and W_V."
    rope, normed = a.q_before_rope is not None, a.q_norm is not None and a.k_norm is not None
    tables = []
    u = a.weights_used
    if u is not None:
        for letter, w, b, cols, j in (("Q", u.w_q, u.b_q, q_cols, head), ("K", u.w_k, u.b_k, kv_cols, kv),
                                      ("V", u.w_v, u.b_v, kv_cols, kv)):
            tables.append(matrix_table(w[j], model_dims, dims, f"W_{letter}[:, {cols}]", name=f"w_{letter.lower()}"))
            if b is not None:
                tables.append(matrix_table(b[j][None], ["b"], dims, f"b_{letter}[{cols}]", name=f"b_{letter.lower()}"))
    if a.q_norm is not None and a.k_norm is not None:             # QK-norm (and RoPE) come next
        q, k, later, suffix = a.q_norm.input[head], a.k_norm.input[head], " before QK-norm", "_before_norm"
    elif a.q_before_rope is not None and a.k_before_rope is not None:   # RoPE comes next
        q, k, later, suffix = a.q_before_rope[head], a.k_before_rope[head], " before the rotation", "_before_rope"
    else:
        q, k, later, suffix = a.q[head], a.k[head], "", ""
    tables += [matrix_table(q, a.query_tokens, dims, "Q" + later, name="q" + suffix),
               matrix_table(k, a.key_tokens, dims, "K" + later, name="k" + suffix),
               matrix_table(a.v[head], a.key_tokens, dims, "V", name="v")]
    then = {(True, True): " Q and K are normalized in the next step, then rotated.",
            (True, False): " Q and K are normalized in the next step.",
            (False, True): " Q and K are rotated in the next step."}.get((normed, rope), "")
    bias = " + b" if u is not None and u.b_q is not None else ""
    return ("1. Project queries, keys and values",
            ("Queries come from x; keys and values from m. " if a.kind == "cross" else
             "Queries, keys and values all come from x. ") + f"Head {head} uses columns {q_cols} of W_Q "
            f"(d_head = {d}).{shared}" + then,
            f"Q = x W_Q{bias},   K = {source} W_K{bias},   V = {source} W_V{bias}", tables)


def _step_by_step(a: AttentionTrace, head: int, open_: bool, rope_theta: float = 10000.0) -> str:
    """Every step of one head's attention, with the numbers and the weights that made them."""
    d = a.d_head
    dims = [str(j) for j in range(d)]
    hidden = ~a.mask
    masked_scores = a.scaled[head].masked_fill(hidden, float("-inf"))
    mask_text = {
        "enc": "Only padding is hidden: every source token may look at every other.",
        "dec": "The causal mask hides the future: position t may look at positions 0..t only "
               "(the upper triangle). Hidden entries become −∞, so softmax gives them weight exactly 0.",
        "cross": "Each target position may look at every (non-padding) source token.",
    }[a.kind]
    w_o = ([] if a.weights_used is None else
           [matrix_table(a.weights_used.w_o[head], dims, None, f"W_O[{head * d}..{(head + 1) * d - 1}, :]", name="w_o")])
    steps: list[Step] = [
        _input_step(a),
        _projection_step(a, head),
        *_qk_norm_step(a, head),
        *_rope_step(a, head, rope_theta),
        ("2. Compare every query with every key", "A dot product: large when the query and key point the same way.",
         "scores = Q Kᵀ", [matrix_table(a.scores[head], a.query_tokens, a.key_tokens, "Q Kᵀ", name="scores")]),
        ("3. Scale", f"Divide by √d_head = √{d} = {math.sqrt(d):.3f}, so the spread of the scores "
         "does not grow with the head size and softmax does not saturate.",
         "scaled = Q Kᵀ / √d_head",
         [matrix_table(a.scaled[head], a.query_tokens, a.key_tokens, "Q Kᵀ / √d_head", name="scaled")]),
        ("4. Mask", mask_text, "scaled[i, j] = −∞ where position j is hidden from i",
         [matrix_table(masked_scores, a.query_tokens, a.key_tokens, "masked scores", hidden, name="masked")]),
        ("5. Softmax", "Each row becomes weights that are positive and sum to 1: how much each query "
         "takes from each key.", "weights = softmax(masked scores) (row by row)",
         [matrix_table(a.weights[head], a.query_tokens, a.key_tokens, "attention weights", hidden, name="weights")]),
        ("6. Mix the values", "Each output row is a weighted average of the value vectors.",
         "mixed = weights V", [matrix_table(a.mixed[head], a.query_tokens, dims, "weights · V", name="mixed")]),
        ("7. Output projection", f"The heads' results are concatenated and multiplied by W_O; head {head}'s "
         "share is its mixed values times its rows of W_O. Adding all heads' shares and the bias "
         "gives the attention output, which joins the residual stream.",
         f"head_out = mixed W_O[rows of head {head}],   out = Σ heads"
         + (" + b_O" if a.weights_used is None or a.weights_used.b_o is not None else ""),
         [*w_o, matrix_table(a.head_outputs[head], a.query_tokens, None, f"head {head}'s share of the output",
                             name="head_out"),
          matrix_table(a.out, a.query_tokens, None, "attention output (all heads)", name="out")]),
    ]
    body = "".join(
        f"<div class='step'><h4>{esc(name)}</h4><p>{esc(text)}</p><p class='eq'>{esc(eq)}</p>"
        f"<div class='mats'>{''.join(tables)}</div></div>"
        for name, text, eq, tables in steps
    )
    return (f"<details data-attention='{a.kind}'{' open' if open_ else ''}><summary>{esc(a.title)}, head {head}"
            f"</summary>{body}</details>")


def _qk_norm_step(a: AttentionTrace, head: int) -> list[Step]:
    """Step 1a with QK-norm: each head's queries and keys through an RMSNorm over d_head, with gains."""
    if a.q_norm is None or a.k_norm is None:
        return []
    dims = [str(j) for j in range(a.d_head)]
    rope = a.q_before_rope is not None
    later, suffix = (" (rotated next)", "_before_rope") if rope else ("", "")
    eps = a.q_norm.eps
    return [(
        "1a. Normalize each head's queries and keys (QK-norm)",
        "Each query and each key vector of the head is divided by its root mean square and multiplied by a "
        "learned gain, one for queries and one for keys, shared by all heads (Henry et al., 2020; Dehghani et al., "
        "2023; as in Gemma 3 and Qwen3). However large W_Q and W_K grow, the scores below stay bounded "
        "(|Q Kᵀ| ≤ d_head · max|g_Q| · max|g_K|), so softmax cannot saturate"
        + ("; the rotation comes after the norm." if rope else "."),
        f"Q ← Q / √(mean(Q²) + ε) · g_Q,   K ← K / √(mean(K²) + ε) · g_K   (each row of d_head numbers),   ε = {eps:g}",
        [f"<span class='caption' data-qk-norm-eps='{eps!r}'>ε = {eps:g}</span>",
         matrix_table(a.q_norm.gain[None], ["g_Q"], dims, "gain g_Q", name="q_norm_gain"),
         matrix_table(a.k_norm.gain[None], ["g_K"], dims, "gain g_K", name="k_norm_gain"),
         matrix_table(a.q_norm.output[head], a.query_tokens, dims, "Q normalized" + later, name="q" + suffix),
         matrix_table(a.k_norm.output[head], a.key_tokens, dims, "K normalized" + later, name="k" + suffix)],
    )]


def rope_angles(positions: int, d_head: int, theta: float) -> torch.Tensor:
    """(positions, d_head/2): the angle p · theta^(−2i/d_head) by which RoPE turns pair i at position p."""
    freq = torch.pow(theta, -torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    return torch.arange(positions, dtype=torch.float64)[:, None] * freq


def _rope_step(a: AttentionTrace, head: int, theta: float) -> list[Step]:
    """Step 1b when the model uses rotary positions: the angles, then Q and K after their rotation."""
    if a.q_before_rope is None or a.k_before_rope is None:
        return []
    dims = [str(j) for j in range(a.d_head)]
    angles = rope_angles(max(len(a.query_tokens), len(a.key_tokens)), a.d_head, theta)
    labels = [f"{p}: {tok}" for p, tok in enumerate(a.key_tokens)]
    return [(
        "1b. Rotate queries and keys by their positions (RoPE)",
        "Each pair of dimensions (2i, 2i+1) of a query or key at position p is turned by the angle "
        f"p · {theta:g}^(−2i/{a.d_head}) (the table below): fast clocks in the first pairs, slow ones in the last. "
        "A rotation keeps the vector's length, and the dot product of a query turned by m and a key turned by n "
        "depends only on m − n, so the scores below see relative positions.",
        "(q₂ᵢ, q₂ᵢ₊₁) ← (q₂ᵢ cos pθᵢ − q₂ᵢ₊₁ sin pθᵢ,  q₂ᵢ sin pθᵢ + q₂ᵢ₊₁ cos pθᵢ),   the same for k",
        [matrix_table(angles[: len(labels)], labels, [f"pair {i}" for i in range(a.d_head // 2)],
                      "angle pθᵢ (radians)", name="rope_angle"),
         matrix_table(a.q[head], a.query_tokens, dims, "Q rotated", name="q"),
         matrix_table(a.k[head], a.key_tokens, dims, "K rotated", name="k")],
    )]


def _layer_attentions(t: Trace, layer: int) -> list[AttentionTrace]:
    """The attentions of `layer` in forward order: enc, then dec and cross (those that exist)."""
    out = []
    for kind in ("enc", "dec", "cross"):
        try:
            out.append(t.attention(kind, layer))
        except ConfigError:
            continue
    return out


def _attention_section(t: Trace, layer: int, head: int) -> str:
    atts = _layer_attentions(t, layer)
    steps = "".join(_step_by_step(a, head, i == 0, t.rope_theta) for i, a in enumerate(atts))
    heat = "".join(
        f"<div class='fig'><h3>{esc(KIND_NAMES[a.kind].capitalize())}</h3>"
        f"<p class='caption'>{_heatmap_caption(a.kind)}</p>{image(plots.attention_heatmap(a, head), a.title)}</div>"
        for a in atts
    )
    grids = "".join(image(plots.heads_grid(a), a.title + ' all heads') for a in atts)
    return (
        f"<h2>3. Attention, step by step (layer {layer}, head {head})</h2>"
        "<p>Attention is a soft search: each query is compared with every key, the scores are scaled "
        "and masked, softmax turns them into weights, and the weights mix the values.</p>"
        "<p class='eq'>Attention(Q, K, V) = softmax(Q Kᵀ / √d_head) V</p>"
        f"{steps}<h2>4. Attention maps (layer {layer}, head {head})</h2>"
        "<p>Rows are queries (who is looking), columns keys (what is looked at). Darker = more "
        f"weight; hatched cells are hidden by the mask and get weight 0.</p><div class='mats'>{heat}</div>"
        f"<h2>5. All heads of layer {layer}</h2><p>{_heads_text(atts[0])}</p>{grids}"
    )


def _heads_text(a: AttentionTrace) -> str:
    if a.n_kv_heads is None or a.n_kv_heads >= a.n_heads:
        return "Each head has its own W_Q, W_K, W_V, so it looks from its own viewpoint."
    group = a.n_heads // a.n_kv_heads
    return (f"Each head has its own W_Q, so it asks its own questions; with grouped-query attention the "
            f"{a.n_heads} query heads share {a.n_kv_heads} key/value heads (W_K, W_V): heads "
            f"{group}j..{group}j+{group - 1} read key/value head j.")


def _heatmap_caption(kind: str) -> str:
    return {
        "enc": "Every source token looks at the whole source.",
        "dec": "The upper triangle is the future: hidden, exactly zero.",
        "cross": "Which source tokens each target position reads: the alignment learned without being taught.",
    }[kind]


def _ffn_section(t: Trace, layer: int) -> str:
    stack = t.encoder_layers if layer < len(t.encoder_layers) else t.decoder_layers
    lt: LayerTrace = stack[layer]
    norm = "RMSNorm" if t.norm == "rmsnorm" else "LayerNorm"
    where = f"pre-LN: x + sublayer({norm}(x))" if t.norm_first else f"post-LN: {norm}(x + sublayer(x))"
    blocks = [("attention", lt.self_block), ("feed-forward", lt.ff_block)]
    rows = []
    for i, tok in enumerate(lt.self_attn.query_tokens):
        cells = "".join(
            f"<td>{b.input[i].norm():.2f}</td><td>{b.fn_output[i].norm():.2f}</td><td>{b.output[i].norm():.2f}</td>"
            for _, b in blocks
        )
        rows.append(f"<tr><th>{esc(tok)}</th>{cells}</tr>")
    head = "".join(f"<th>‖x‖ in</th><th>‖{name}‖</th><th>‖x‖ out</th>" for name, _ in blocks)
    hidden = lt.ff.hidden
    active = float((hidden > 0).float().mean())
    return (
        f"<h2>6. Feed-forward and residual stream ({lt.stack} layer {layer})</h2>"
        "<p>After attention, every position goes through the same two-layer network on its own. "
        f"Each sublayer adds its output to the residual stream ({esc(where)}).</p>"
        f"<p class='eq'>{_FFN_EQ.get(t.activation, _FFN_EQ['relu'])}</p>"
        f"<p>Hidden layer: {hidden.size(-1)} units, {active:.0%} of them active (positive) on average.</p>"
        f"<table class='m'><tr><th>token</th>{head}</tr>{''.join(rows)}</table>"
        "<p class='caption'>Vector lengths (L2 norms) going into and out of each sublayer."
        f"{_NORM_NOTE if not t.norm_first else ''}</p>{_rmsnorm_note(lt)}"
    )


def _rmsnorm_note(lt: LayerTrace) -> str:
    """With RMSNorm: the formula and each token's RMS, the number its stream was divided by."""
    blocks = [(name, b) for name, b in (("attention", lt.self_block), ("feed-forward", lt.ff_block)) if b.rms is not None]
    if not blocks:
        return ""
    cells = "".join(f"<th>{esc(name)}</th>" for name, _ in blocks)
    rows = "".join(
        f"<tr><th>{esc(tok)}</th>" + "".join(f"<td>{float(b.rms[i]):.3f}</td>" for _, b in blocks) + "</tr>"
        for i, tok in enumerate(lt.self_attn.query_tokens)
    )
    return (
        "<h3>RMSNorm</h3><p>This model normalises with RMSNorm (Zhang &amp; Sennrich, 2019): no mean is "
        "subtracted and no bias added; each vector is divided by its root mean square and multiplied by a "
        "learned gain g.</p><p class='eq'>RMSNorm(x) = x / √(mean(x²) + ε) · g</p>"
        f"<table class='m'><tr><th>token</th>{cells}</tr>{rows}</table>"
        "<p class='caption'>RMS of the vector each sublayer's norm divided by.</p>"
    )


_FFN_EQ = {
    "relu": "FFN(x) = max(0, x W₁ + b₁) W₂ + b₂",
    "gelu": "FFN(x) = GELU(x W₁ + b₁) W₂ + b₂",
    "swiglu": "FFN(x) = (SiLU(x W₁) ⊙ x W₃) W₂   (SwiGLU, Shazeer 2020: a gate, 2/3 d_ff wide)",
}

_NORM_NOTE = (" With post-LN every sublayer ends in LayerNorm, so the stream leaves it with length "
              "≈ √d_model (times the norm's gain) whatever the sublayer added.")


def _predictions_section(t: Trace, k: int) -> str:
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
        "<h2>7. Next-token probabilities</h2>"
        "<p>The last layer's output goes through the output projection and softmax: a probability "
        "for every token of the vocabulary. Green marks the token that actually comes next.</p>"
        f"<p class='eq'>{_output_equation(t)}</p>"
        f"{_final_norm(t)}{_softcap(t)}"
        f"<table class='m'><tr><th>step</th><th>input token</th>{head}<th>actual next</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _final_norm(t: Trace) -> str:
    """h, the vector the output layer reads: with pre-LN the last layer's stream through one more norm."""
    n = t.final_norm
    if n is None:
        return ("<p>h is the last layer's output as it is: with post-LN every layer already ends in "
                "LayerNorm.</p>")
    name = "RMSNorm" if n.kind == "rmsnorm" else "LayerNorm"
    return (f"<div data-final-norm='1'><h3>The final norm</h3><p>With pre-LN the residual stream is never "
            f"normalized inside the layers, so one more {name} turns the last layer's output into h.</p>"
            f"<p class='eq'>{esc(norm_equation(n))}</p>"
            f"<div class='mats'>{''.join(_norm_tables(n, t.tgt.tokens, 'final_', 'h = the norm output'))}</div></div>")


def _output_equation(t: Trace) -> str:
    if t.raw_logits is None:
        return "p(next | prefix) = softmax(h W_vocab)"
    cap = f"{t.logit_softcap:g}"
    return f"p(next | prefix) = softmax({cap} · tanh(h W_vocab / {cap}))"


def _softcap(t: Trace) -> str:
    """With model.logit_softcap: the output layer's logits z and the capped logits cap · tanh(z / cap) that
    softmax reads, for the tokens most likely at some step (at most MAX_COLS of them, in id order)."""
    if t.raw_logits is None:
        return ""
    cap = t.logit_softcap
    shown = sorted(torch.topk(t.probs.max(dim=0).values, min(MAX_COLS, t.probs.size(-1))).indices.tolist())
    cols = [t.label(i) for i in shown]
    return (f"<div data-softcap='{cap!r}'><h3>The logit soft-cap</h3><p>The output layer's logits z = h W_vocab are "
            f"squashed into (−{cap:g}, {cap:g}) by cap · tanh(z / cap) (Gemma 2, Gemma Team 2024): small logits pass "
            "almost unchanged, large ones bend towards ±cap, so no token can be pushed to an ever larger logit. "
            "Softmax reads the capped logits. The tokens below are those most likely at some step.</p>"
            f"<p class='eq'>logits = {cap:g} · tanh(z / {cap:g})</p><div class='mats'>"
            f"{matrix_table(t.raw_logits[:, shown], t.tgt.tokens, cols, 'z = h W_vocab', name='raw_logits')}"
            f"{matrix_table(t.logits[:, shown], t.tgt.tokens, cols, 'capped logits', name='logits')}</div></div>")


def check_focus(n_layers: int, n_heads: int, layer: int, head: int) -> None:
    """The layer and head to zoom in on must exist."""
    if not 0 <= layer < n_layers:
        raise ConfigError(f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}")
    if not 0 <= head < n_heads:
        raise ConfigError(f"head {head} does not exist: the model has heads 0..{n_heads - 1}")


def render_html(t: Trace, layer: int = 0, head: int = 0, k: int = 5, title: str = "How the Transformer read this",
                warnings: Sequence[str] = ()) -> str:
    """The whole page for trace `t`, zooming in on `layer` and `head` (0-based)."""
    check_focus(max(len(t.encoder_layers), len(t.decoder_layers)), t.attentions()[0].n_heads, layer, head)
    body = "".join([
        _header(t, title, warnings),
        _tokens_section(t),
        _embedding_section(t),
        _attention_section(t, layer, head),
        _ffn_section(t, layer),
        _predictions_section(t, k),
    ])
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


# ---------------------------------------------------------------------------------------------
# From a run directory
# ---------------------------------------------------------------------------------------------


def report_notes(run, explained) -> list[str]:
    """What the report says about the run and the output besides the input's warnings: an
    untrained model, and which output is explained when no target was given."""
    notes = []
    if not run.dir.has_metrics():
        notes.append(f"{run.path} has no training log ({run.dir.metrics.name}): the model may be untrained, "
                     "so its attention and predictions are close to random")
    if explained.own_output:
        what = "continuation" if run.cfg.arch == "decoder-only" else "translation"
        notes.append(f"no --target given: explaining the model's own greedy {what} "
                     f"{run.tgt_tokenizer.decode(explained.output)!r}")
    return notes


def explain_run(run, text: str, target: str | None = None, layer: int = 0, head: int = 0,
                max_new_tokens: int | None = None) -> tuple[Trace, list[str], str]:
    """What the report of `text` shows (`qkv.explain.text.explain_text`): the trace, its warnings
    (the input's and `report_notes`) and the page's title; `layer` and `head` must exist."""
    from qkv.explain.text import explain_text

    cfg = run.cfg
    check_focus(max(cfg.n_decoder_layers, cfg.n_encoder_layers if cfg.arch == "encoder-decoder" else 0),
                cfg.n_heads, layer, head)
    explained = explain_text(run, text, target, max_new_tokens,
                             name="the source" if cfg.arch == "encoder-decoder" else "the text")
    shown = f"“{text}”" + (f" → “{target}”" if target is not None else "")
    return explained.trace, report_notes(run, explained) + explained.warnings, f"How {run.path.name} reads {shown}"


def write_report(path: str | os.PathLike, run, text: str, target: str | None = None, layer: int = 0,
                 head: int = 0, k: int = 5, max_new_tokens: int | None = None) -> list[str]:
    """Write the HTML report for `text` and the model's output (or `target`) through a loaded run
    (`explain_run`); return its warnings."""
    t, warnings, title = explain_run(run, text, target, layer, head, max_new_tokens)
    page = render_html(t, layer, head, k, title=title, warnings=warnings)
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a file name such as {path / 'explain.html'}")
    atomic_write_bytes(path, page.encode("utf-8"))
    return warnings
