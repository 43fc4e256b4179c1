"""What the explorer page draws: `qkv.explain.trace` of one sentence, reshaped for the page.

The trace's JSON summary lists attentions one per (kind, layer); the page wants one map per
kind holding every layer, `weights[layer][head][query][key]`, so its layer and head selectors
index straight into it. Steps keep the top-k next tokens and the token the model chose.
"""

from __future__ import annotations

from typing import Any

from qkv.explain.trace import Trace

KINDS = {"enc": "encoder", "dec": "decoder", "cross": "cross"}
TITLES = {
    "encoder": "Encoder self-attention",
    "decoder": "Decoder masked self-attention",
    "cross": "Cross-attention (decoder → encoder)",
}


def explain_json(tr: Trace, top_k: int, first_step: int = 0) -> dict[str, Any]:
    """`attention` (one map per kind) and `steps` (from `first_step` on) of an ExplainResponse."""
    summary = tr.to_dict(top_k)
    return {"attention": attention_maps(summary["attention"]), "steps": steps(summary["top_k"][first_step:])}


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
    """The trace's top-k per step as `Step` dicts. Greedy decoding chose the most probable token."""
    return [
        {
            "position": s["step"],
            "context": s["input"],
            "chosen": s["top"][0]["token"],
            "candidates": [{"token": c["token"], "prob": round(c["prob"], 4)} for c in s["top"]],
        }
        for s in top_k
    ]
