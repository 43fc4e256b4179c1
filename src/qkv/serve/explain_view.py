"""What the explorer page draws: one forward pass with every attention map and next-token
distribution kept, shaped as `ExplainResponse` JSON.

The model is run once with teacher forcing over the source and its own (greedy) output, so
each decoder position shows what the model attended to and which tokens it considered when
it chose the next one. Attention weights are captured with forward hooks that ask every
`MultiHeadAttention` for its per-head weights (the layers themselves discard them).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from qkv.model.attention import MultiHeadAttention

TITLES = {
    "encoder": "Encoder self-attention",
    "decoder": "Decoder masked self-attention",
    "cross": "Cross-attention (decoder → encoder)",
}
DIGITS = 4  # weights and probabilities are rounded: the page needs no more, the JSON stays small


def attention_kind(name: str) -> str | None:
    """'encoder.layers.0.self_attn' -> 'encoder'; '...cross_attn' -> 'cross'; else 'decoder'."""
    if name.endswith("cross_attn"):
        return "cross"
    if name.endswith("self_attn"):
        return "encoder" if name.startswith("encoder.") else "decoder"
    return None


@contextmanager
def captured_attention(model: torch.nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Inside the block, every attention module stores its weights (H, T_q, T_k) of batch row 0,
    in layer order, under its kind ("encoder", "decoder", "cross")."""
    maps: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        kind = attention_kind(name)
        if kind is None or not isinstance(module, MultiHeadAttention):
            continue
        handles.append(module.register_forward_pre_hook(_ask_for_weights, with_kwargs=True))
        handles.append(module.register_forward_hook(_keep_weights(maps.setdefault(kind, []))))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()


def _ask_for_weights(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return args, {**kwargs, "need_weights": True}


def _keep_weights(store: list[torch.Tensor]):
    def hook(module: torch.nn.Module, args: tuple, output: tuple) -> None:
        store.append(output[1][0].float())                      # (H, T_q, T_k)

    return hook


def rounded(t: torch.Tensor) -> Any:
    return torch.round(t, decimals=DIGITS).tolist()


def attention_json(maps: dict[str, list[torch.Tensor]], labels: dict[str, tuple[list[str], list[str]]]) -> list[dict]:
    """The captured maps as `AttentionMap` dicts, in the order encoder, decoder, cross."""
    out = []
    for kind in ("encoder", "decoder", "cross"):
        if kind in maps:
            queries, keys = labels[kind]
            weights = [rounded(w) for w in maps[kind]]            # [layer][head][query][key]
            out.append({"kind": kind, "title": TITLES[kind], "queries": queries, "keys": keys, "weights": weights})
    return out


def steps_json(logits: torch.Tensor, inputs: list[str], chosen: list[str], top_k: int, label) -> list[dict]:
    """One `Step` per row of `logits` (T, V): the top-k next tokens after reading inputs[:t+1]."""
    probs = torch.softmax(logits.float(), dim=-1)
    top = probs.topk(min(top_k, probs.size(-1)), dim=-1)
    steps = []
    for t in range(logits.size(0)):
        candidates = [
            {"token": label(int(i)), "prob": round(float(p), DIGITS)}
            for p, i in zip(top.values[t], top.indices[t])
        ]
        steps.append({"position": t, "context": inputs[t], "chosen": chosen[t], "candidates": candidates})
    return steps
