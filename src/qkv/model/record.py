"""A record of what one forward pass computed, filled by the model's own modules as they run.

Explanations read the model, not a copy of it: inside `recording(model)`, every module that has a
`record` attribute (embeddings, attention, feed-forward, the residual sublayers, the encoder and
decoder stacks) appends the tensors it computed to its own list, one dict per call:

    with recording(model) as rec:
        logits = model(src, tgt_in)
    rec.of(model.encoder.layers[0].self_attn)[0]["weights"]     # (B, H, S, S) softmax weights

Outside `recording` the attribute is None and costs one `is None` check per module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn


Calls = list[dict[str, torch.Tensor]]        # one dict of named tensors per call of a module


class Record:
    """Per module, the list of its calls during the recorded pass (a module used twice, such as
    an embedding shared by the encoder and the decoder, has two entries)."""

    def __init__(self) -> None:
        self.calls: dict[int, Calls] = {}

    def of(self, module: nn.Module) -> Calls:
        return self.calls.get(id(module), [])


@contextmanager
def recording(model: nn.Module) -> Iterator[Record]:
    """Record the intermediates of every forward pass that runs inside the `with` block."""
    rec = Record()
    modules: list[Any] = [m for m in model.modules() if hasattr(m, "record")]   # their `record: Calls | None`
    for m in modules:
        m.record = rec.calls.setdefault(id(m), [])
    try:
        yield rec
    finally:
        for m in modules:
            m.record = None


def note(module: nn.Module, **tensors: torch.Tensor | None) -> None:
    """Append this call's tensors to `module.record` when a recording is on."""
    calls = cast("list[dict[str, torch.Tensor | None]] | None", module.record)   # nn.Module types it Tensor | Module
    if calls is not None:
        calls.append(tensors)
