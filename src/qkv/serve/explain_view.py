"""What the explorer page draws: `qkv.explain.trace` of one sentence, reshaped for the page.

The trace's JSON summary lists attentions one per (kind, layer); the page wants one map per
kind holding every layer, `weights[layer][head][query][key]`, so its layer and head selectors
index straight into it, and `walk[layer][head]`: that head's steps as the `qkv explain` page shows
them (`qkv.explain.steps`, built once for both pages; their words are keys of `qkv.explain.i18n`,
said by the page in its language). Layers and heads count from 0 everywhere. Steps keep the top-k
next tokens and the token the model chose.
With rotary positions, `rope` holds every self-attention's queries and keys before and after
their rotation; with RMSNorm, `rmsnorm` holds what each norm divided by and what it gave out
(both None for a model without them).
"""

from __future__ import annotations

from typing import Any

import torch

from qkv.explain.steps import attention_steps, final_norm_step, to_json
from qkv.explain.trace import LayerTrace, RMSNormTrace, Trace, rounded

KINDS = {"enc": "encoder", "dec": "decoder", "cross": "cross"}
TITLES = {
    "encoder": "Encoder self-attention",
    "decoder": "Decoder masked self-attention",
    "cross": "Cross-attention (decoder → encoder)",
}


def explain_json(tr: Trace, top_k: int, first_step: int = 0) -> dict[str, Any]:
    """`attention` (one map per kind) and `steps` (from `first_step` on) of an ExplainResponse."""
    summary = tr.to_dict(top_k)
    maps = attention_maps(summary["attention"])
    for m in maps:
        m["walk"] = walk(tr, m["kind"])
    final = final_norm_step(tr)
    return {"attention": maps, "steps": steps(summary["top_k"][first_step:]),
            "rope": rope_json(tr), "rmsnorm": rmsnorm_json(tr), "final_norm": None if final is None else to_json(final)}


def walk(tr: Trace, kind: str) -> list[list[list[dict[str, Any]]]]:
    """Every head's steps of the attention `kind` ("encoder", "decoder", "cross"), [layer][head][step]."""
    short = {v: k for k, v in KINDS.items()}[kind]
    layers = tr.encoder_layers if short == "enc" else tr.decoder_layers
    out = []
    for i in range(len(layers)):
        a = tr.attention(short, i)
        out.append([[to_json(s) for s in attention_steps(a, h, tr.rope_theta)] for h in range(a.n_heads)])
    return out


def _stacks(tr: Trace) -> list[tuple[str, list[LayerTrace]]]:
    return [(name, layers) for name, layers in (("encoder", tr.encoder_layers), ("decoder", tr.decoder_layers)) if layers]


def _r(t: torch.Tensor) -> list:
    return rounded(t, 4)                    # 4 decimals: Q, K and norms are many numbers


def rope_json(tr: Trace) -> dict[str, Any] | None:
    """Each stack's self-attention queries and keys, before and after RoPE turned them:
    `stacks[s].layers[layer].q_before[head][position][dim]` (likewise q, k_before, k)."""
    if tr.positional != "rope":
        return None
    stacks = []
    for name, layers in _stacks(tr):
        attns = [layer.self_attn for layer in layers]
        stacks.append({
            "kind": name, "tokens": attns[0].query_tokens,
            "layers": [{"q_before": _r(a.q_before_rope), "q": _r(a.q),
                        "k_before": _r(a.k_before_rope), "k": _r(a.k)} for a in attns],
        })
    return {"theta": tr.rope_theta, "d_head": tr.attentions()[0].d_head, "stacks": stacks}


def _norm_json(block: str, norm: RMSNormTrace) -> dict[str, Any]:
    return {"block": block, "input": _r(norm.input), "rms": _r(norm.rms[:, 0]),
            "gain": _r(norm.gain), "output": _r(norm.output)}


def rmsnorm_json(tr: Trace) -> dict[str, Any] | None:
    """Every RMSNorm of every layer, in forward order: `stacks[s].layers[layer][n]` is
    {block, input[position][dim], rms[position], gain[dim], output[position][dim]}; the decoder's
    final norm (pre-LN) is `final`."""
    if tr.norm != "rmsnorm":
        return None
    stacks = []
    for name, layers in _stacks(tr):
        stacks.append({"kind": name, "tokens": layers[0].self_attn.query_tokens, "layers": [
            [_norm_json(block, sub.rmsnorm) for block, sub in
             (("attention", layer.self_block), ("cross-attention", layer.cross_block), ("feed-forward", layer.ff_block))
             if sub is not None and sub.rmsnorm is not None]
            for layer in layers]})
    final = None if tr.final_rmsnorm is None else _norm_json("final", tr.final_rmsnorm)
    return {"norm_first": tr.norm_first, "stacks": stacks, "final": final}


def attention_maps(attentions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group the trace's per-layer attentions by kind, layers in order: encoder, decoder, cross."""
    maps: dict[str, dict[str, Any]] = {}
    for a in sorted(attentions, key=lambda a: a["layer"]):
        kind = KINDS[a["kind"]]
        entry = maps.setdefault(kind, {
            "kind": kind, "title": TITLES[kind], "queries": a["query_tokens"], "keys": a["key_tokens"], "weights": [],
        })
        entry["weights"].append(a["weights"])                  # [head][query][key]
    return [maps[k] for k in ("encoder", "decoder", "cross") if k in maps]


def steps(top_k: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trace's top-k per step as `Step` dicts: the token the output has next (what the engine
    chose), or after its last token the most probable one."""
    return [
        {
            "position": s["step"],
            "context": s["input"],
            "chosen": (s["target"] or s["top"][0])["token"],
            "candidates": [{"token": c["token"], "prob": round(c["prob"], 4)} for c in s["top"]],
        }
        for s in top_k
    ]
