"""One head's attention, step by step, as data: what the `qkv explain` page prints and the explorer draws.

    for step in attention_steps(t.attention("enc", 0), head=1):
        step.title, step.text, step.equation      # messages (qkv.explain.i18n), said in any language
        step.tables                                # the numbers, as the pages show them (big ones cut)
    to_json(final_norm_step(t))                    # what the server sends the explorer
    softcap_step(t)                                # with model.logit_softcap: the logits and the capped ones

Every step is built once, here, from a trace (`qkv.explain.trace`): the report renders it as HTML
(`qkv.explain.report`), the server sends it as JSON (`qkv.serve.explain_view`), so both pages show
the same steps with the same numbers. Layers and heads are counted from 0, as `qkv explain
--layer/--head` counts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from qkv.explain.i18n import Msg, msg, raw
from qkv.explain.trace import AttentionTrace, NormTrace, Trace

MAX_ROWS = 8        # matrices larger than this are cut, with an ellipsis row/column
MAX_COLS = 8


def number(x: float) -> str:
    """A number as the pages print it: 3 decimals, −∞ for masked scores, 0 for an exact 0."""
    if x == float("-inf"):
        return "−∞"
    if x == 0:
        return "0"
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.2e}"


def cut(n: int, limit: int) -> list[int | None]:
    """Indices to show out of n: all, or the first limit-1, an ellipsis (None) and the last."""
    if n <= limit:
        return list(range(n))
    return list(range(limit - 1)) + [None, n - 1]


@dataclass
class Table:
    """A 2-D tensor as the pages show it: labels and printed numbers, big ones cut to their first
    rows/columns and the last ("⋮" marks a cut row, "…" a cut column); `masked` cells are hidden by
    the mask; `name` tags the tensor (data-tensor="name") for a reader or a test."""

    caption: Msg | None
    rows: list[str]
    cols: list[str]
    cells: list[list[str]]
    masked: list[list[bool]]
    shape: list[int]
    name: str | None = None


def table(m: torch.Tensor, row_labels: Sequence[str], col_labels: Sequence[str] | None = None,
          caption: Msg | None = None, hidden: torch.Tensor | None = None, name: str | None = None) -> Table:
    """`m` (2-D) as a Table; `hidden` (bool, same shape) marks masked cells."""
    rows, cols = cut(m.size(0), MAX_ROWS), cut(m.size(1), MAX_COLS)
    col_labels = list(col_labels) if col_labels is not None else [str(j) for j in range(m.size(1))]
    keep_r, keep_c = [i for i in rows if i is not None], [j for j in cols if j is not None]
    values = m.detach()[keep_r][:, keep_c].tolist()
    shown = hidden[keep_r][:, keep_c].tolist() if hidden is not None else None
    cells: list[list[str]] = []
    masked: list[list[bool]] = []
    r = 0
    for i in rows:
        if i is None:
            cells.append(["⋮"] * len(cols))
            masked.append([False] * len(cols))
            continue
        row, row_masked, c = [], [], 0
        for j in cols:
            if j is None:
                row.append("…")
                row_masked.append(False)
                continue
            row.append(number(values[r][c]))
            row_masked.append(bool(shown[r][c]) if shown is not None else False)
            c += 1
        cells.append(row)
        masked.append(row_masked)
        r += 1
    return Table(caption, ["⋮" if i is None else str(row_labels[i]) for i in rows],
                 ["…" if j is None else str(col_labels[j]) for j in cols], cells, masked, list(m.shape), name)


@dataclass
class Step:
    """One step: its title, what it does (sentences), its equation, its tables; `norm` is a norm
    step's {"kind", "eps"} (and "per_head": True for QK-norm, a norm of each head's Q and K rows)."""

    title: Msg
    text: list[Msg]
    equation: Msg
    tables: list[Table]
    norm: dict[str, Any] | None = None


def to_json(step: Step) -> dict[str, Any]:
    """The step as JSON-able dicts (its lists are shared, not copied)."""
    return {"title": step.title, "text": step.text, "equation": step.equation,
            "tables": [dict(t.__dict__) for t in step.tables], "norm": step.norm}


def norm_name(n: NormTrace) -> str:
    return "RMSNorm" if n.kind == "rmsnorm" else "LayerNorm"


def norm_equation(n: NormTrace) -> Msg:
    return msg("step.eq.rmsnorm" if n.kind == "rmsnorm" else "step.eq.layernorm", eps=f"{n.eps:g}")


def norm_tables(n: NormTrace, tokens: Sequence[str], prefix: str, what: str) -> list[Table]:
    """A norm's input, parameters and output, named prefix + stream/gain/bias/x; `what` names the output."""
    dims = [str(j) for j in range(n.input.size(-1))]
    tables = [table(n.input, tokens, dims, msg("step.table.stream"), name=f"{prefix}stream"),
              table(n.gain[None], ["g"], dims, msg("step.table.gain"), name=f"{prefix}gain")]
    if n.bias is not None:
        tables.append(table(n.bias[None], ["b"], dims, msg("step.table.bias"), name=f"{prefix}bias"))
    tables.append(table(n.output, tokens, dims, msg(what), name=f"{prefix}x"))
    return tables


def _norm(n: NormTrace) -> dict[str, Any]:
    return {"kind": n.kind, "eps": n.eps}


def input_step(a: AttentionTrace) -> Step:
    """Step 0: the x the queries come from (with pre-LN: the norm that made it) and, for
    cross-attention, the encoder output m that keys and values come from."""
    dims = [str(j) for j in range(a.x.size(-1))]
    memory = ([table(a.memory, a.key_tokens, dims, msg("step.table.memory"), name="memory")]
              if a.kind == "cross" else [])
    m_text = [msg("step.input.cross")] if a.kind == "cross" else []
    if a.norm is not None:
        text = "step.input.norm_text_bias" if a.norm.bias is not None else "step.input.norm_text"
        return Step(msg("step.input.norm_title"), [msg(text, norm=norm_name(a.norm)), *m_text], norm_equation(a.norm),
                    [*norm_tables(a.norm, a.query_tokens, "norm_", "step.table.norm_x"), *memory], _norm(a.norm))
    first = a.layer == 0 and a.kind != "cross"
    return Step(msg("step.input.title"), [msg("step.input.text_first" if first else "step.input.text"), *m_text],
                msg("step.input.eq"), [table(a.x, a.query_tokens, dims, raw("x"), name="x"), *memory])


def projection_step(a: AttentionTrace, head: int) -> Step:
    """Step 1: the slices of W_Q, W_K, W_V that make this head's Q, K, V, and the results."""
    d, model_dims = a.d_head, [str(j) for j in range(a.x.size(-1))]
    dims = [str(j) for j in range(d)]
    kv = a.kv_head(head)
    q_cols, kv_cols = f"{head * d}..{(head + 1) * d - 1}", f"{kv * d}..{(kv + 1) * d - 1}"
    source = "x" if a.kind != "cross" else "m"
    if a.n_kv_heads is not None and a.n_kv_heads < a.n_heads:
        group = a.n_heads // a.n_kv_heads
        shared = msg("step.proj.gqa", kv_heads=a.n_kv_heads, heads=a.n_heads, first=kv * group,
                     last=kv * group + group - 1, kv=kv, head=head, kv_cols=kv_cols)
    else:
        shared = msg("step.proj.own", head=head, kv_cols=kv_cols)
    rope, normed = a.q_before_rope is not None, a.q_norm is not None and a.k_norm is not None
    tables = []
    u = a.weights_used
    if u is not None:
        for letter, w, b, cols, j in (("Q", u.w_q, u.b_q, q_cols, head), ("K", u.w_k, u.b_k, kv_cols, kv),
                                      ("V", u.w_v, u.b_v, kv_cols, kv)):
            tables.append(table(w[j], model_dims, dims, raw(f"W_{letter}[:, {cols}]"), name=f"w_{letter.lower()}"))
            if b is not None:
                tables.append(table(b[j][None], ["b"], dims, raw(f"b_{letter}[{cols}]"), name=f"b_{letter.lower()}"))
    q_cap: Msg
    k_cap: Msg
    if a.q_norm is not None and a.k_norm is not None:                    # QK-norm (and RoPE) come next
        q, k, suffix = a.q_norm.input[head], a.k_norm.input[head], "_before_norm"
        q_cap, k_cap = msg("step.table.q_before_norm"), msg("step.table.k_before_norm")
    elif a.q_before_rope is not None and a.k_before_rope is not None:    # RoPE comes next
        q, k, suffix = a.q_before_rope[head], a.k_before_rope[head], "_before_rope"
        q_cap, k_cap = msg("step.table.q_before"), msg("step.table.k_before")
    else:
        q, k, suffix, q_cap, k_cap = a.q[head], a.k[head], "", raw("Q"), raw("K")
    v_table = (table(a.v[head], a.key_tokens, dims, raw("V"), name="v") if a.v_before_embed is None else
               table(a.v_before_embed[head], a.key_tokens, dims, msg("step.table.v_before_embed"), name="v_before_embed"))
    tables += [table(q, a.query_tokens, dims, q_cap, name="q" + suffix),
               table(k, a.key_tokens, dims, k_cap, name="k" + suffix), v_table]
    bias = " + b" if u is not None and u.b_q is not None else ""
    text = [msg("step.proj.from_cross" if a.kind == "cross" else "step.proj.from_self"),
            msg("step.proj.cols", head=head, cols=q_cols, d=d), shared]
    then = {(True, True): "step.proj.normed_rotated_next", (True, False): "step.proj.normed_next",
            (False, True): "step.proj.rotated_next"}.get((normed, rope))
    if then is not None:
        text.append(msg(then))
    if a.v_before_embed is not None:
        text.append(msg("step.proj.embed_next"))
    return Step(msg("step.proj.title"), text,
                raw(f"Q = x W_Q{bias},   K = {source} W_K{bias},   V = {source} W_V{bias}"), tables)


def qk_norm_step(a: AttentionTrace, head: int) -> list[Step]:
    """Step 1a with QK-norm: each head's queries and keys through an RMSNorm over d_head, with gains
    (its `norm` says `per_head`)."""
    if a.q_norm is None or a.k_norm is None:
        return []
    dims = [str(j) for j in range(a.d_head)]
    rope = a.q_before_rope is not None
    suffix, later = ("_before_rope", "_rope") if rope else ("", "")
    eps = a.q_norm.eps
    return [Step(
        msg("step.qk_norm.title"),
        [msg("step.qk_norm.text"), *([msg("step.qk_norm.rope_after")] if rope else [])],
        msg("step.qk_norm.eq", eps=f"{eps:g}"),
        [table(a.q_norm.gain[None], ["g_Q"], dims, msg("step.table.gain_q"), name="q_norm_gain"),
         table(a.k_norm.gain[None], ["g_K"], dims, msg("step.table.gain_k"), name="k_norm_gain"),
         table(a.q_norm.output[head], a.query_tokens, dims, msg("step.table.q_normed" + later), name="q" + suffix),
         table(a.k_norm.output[head], a.key_tokens, dims, msg("step.table.k_normed" + later), name="k" + suffix)],
        {"kind": a.q_norm.kind, "eps": eps, "per_head": True},
    )]


def rope_angles(positions: int, d_head: int, theta: float) -> torch.Tensor:
    """(positions, d_head/2): the angle p · theta^(−2i/d_head) by which RoPE turns pair i at position p."""
    freq = torch.pow(theta, -torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    return torch.arange(positions, dtype=torch.float64)[:, None] * freq


def rope_step(a: AttentionTrace, head: int, theta: float) -> list[Step]:
    """Step 1b when the model uses rotary positions: the angles, then Q and K after their rotation."""
    if a.q_before_rope is None or a.k_before_rope is None:
        return []
    dims = [str(j) for j in range(a.d_head)]
    angles = rope_angles(max(len(a.query_tokens), len(a.key_tokens)), a.d_head, theta)
    labels = [f"{p}: {tok}" for p, tok in enumerate(a.key_tokens)]
    return [Step(
        msg("step.rope.title"), [msg("step.rope.text", theta=f"{theta:g}", d=a.d_head)],
        msg("step.rope.eq"),
        [table(angles[: len(labels)], labels, [f"i={i}" for i in range(a.d_head // 2)], msg("step.table.angle"),
               name="rope_angle"),
         table(a.q[head], a.query_tokens, dims, msg("step.table.q_rotated"), name="q"),
         table(a.k[head], a.key_tokens, dims, msg("step.table.k_rotated"), name="k")],
    )]


def value_embed_step(a: AttentionTrace, head: int) -> list[Step]:
    """Step 1c with value embeddings: the rows E_V[token] of the key tokens (this head's key/value
    head's columns) and V after they are added."""
    if a.v_before_embed is None or a.value_embedding is None:
        return []
    dims = [str(j) for j in range(a.d_head)]
    return [Step(
        msg("step.value_embed.title"), [msg("step.value_embed.text")], msg("step.value_embed.eq"),
        [table(a.value_embedding[head], a.key_tokens, dims, msg("step.table.value_embedding"), name="value_embedding"),
         table(a.v[head], a.key_tokens, dims, msg("step.table.v_embedded"), name="v")],
    )]


def attention_steps(a: AttentionTrace, head: int, rope_theta: float = 10000.0) -> list[Step]:
    """Every step of head `head` of one attention, with the numbers and the weights that made them."""
    d = a.d_head
    dims = [str(j) for j in range(d)]
    hidden = ~a.mask
    masked_scores = a.scaled[head].masked_fill(hidden, float("-inf"))
    w_o = ([] if a.weights_used is None else
           [table(a.weights_used.w_o[head], dims, None, raw(f"W_O[{head * d}..{(head + 1) * d - 1}, :]"), name="w_o")])
    bias = " + b_O" if a.weights_used is None or a.weights_used.b_o is not None else ""
    q, k = a.query_tokens, a.key_tokens
    return [
        input_step(a),
        projection_step(a, head),
        *qk_norm_step(a, head),
        *rope_step(a, head, rope_theta),
        *value_embed_step(a, head),
        Step(msg("step.scores.title"), [msg("step.scores.text")], raw("scores = Q Kᵀ"),
             [table(a.scores[head], q, k, raw("Q Kᵀ"), name="scores")]),
        Step(msg("step.scale.title"), [msg("step.scale.text", d=d, sqrt=f"{math.sqrt(d):.3f}")],
             raw("scaled = Q Kᵀ / √d_head"), [table(a.scaled[head], q, k, raw("Q Kᵀ / √d_head"), name="scaled")]),
        Step(msg("step.mask.title"), [msg(f"step.mask.{a.kind}")], msg("step.mask.eq"),
             [table(masked_scores, q, k, msg("step.table.masked"), hidden, name="masked")]),
        Step(msg("step.softmax.title"), [msg("step.softmax.text")], msg("step.softmax.eq"),
             [table(a.weights[head], q, k, msg("step.table.weights"), hidden, name="weights")]),
        Step(msg("step.mix.title"), [msg("step.mix.text")], raw("mixed = weights V"),
             [table(a.mixed[head], q, dims, raw("weights · V"), name="mixed")]),
        Step(msg("step.out.title"), [msg("step.out.text", head=head)], msg("step.out.eq", head=head, bias=bias),
             [*w_o, table(a.head_outputs[head], q, None, msg("step.table.head_out", head=head), name="head_out"),
              table(a.out, q, None, msg("step.table.out"), name="out")]),
    ]


def final_norm_step(t: Trace) -> Step | None:
    """With pre-LN: the norm that turns the last layer's output into h, what the output layer reads."""
    n = t.final_norm
    if n is None:
        return None
    return Step(msg("step.final.title"), [msg("step.final.text", norm=norm_name(n))], norm_equation(n),
                norm_tables(n, t.tgt.tokens, "final_", "step.table.norm_h"), _norm(n))


def softcap_step(t: Trace) -> Step | None:
    """With model.logit_softcap: the output layer's logits z and the capped logits cap · tanh(z / cap) that
    softmax reads, for the tokens most likely at some step (at most MAX_COLS of them, in id order)."""
    if t.raw_logits is None:
        return None
    cap = f"{t.logit_softcap:g}"
    shown = sorted(torch.topk(t.probs.max(dim=0).values, min(MAX_COLS, t.probs.size(-1))).indices.tolist())
    cols = [t.label(i) for i in shown]
    return Step(msg("step.softcap.title"), [msg("step.softcap.text", cap=cap)], msg("step.softcap.eq", cap=cap),
                [table(t.raw_logits[:, shown], t.tgt.tokens, cols, raw("z = h W_vocab"), name="raw_logits"),
                 table(t.logits[:, shown], t.tgt.tokens, cols, msg("step.table.capped"), name="logits")])
