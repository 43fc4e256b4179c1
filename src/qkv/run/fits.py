"""Whether a model fits the memory left, read from the model itself before it is built.

The model is built on PyTorch's `meta` device (which allocates nothing) to count its tensors; the
trainer and `load_run` call `check_model_fits` first, so a model that could never run is one line.
"""

from __future__ import annotations

from qkv import machine
from qkv.config import ModelConfig

_SMALLER = "make model.d_model, d_ff, the layer counts, max_len or the vocabulary smaller"


def model_footprint(cfg: ModelConfig) -> tuple[int, int, str]:
    """A model's parameter count, the bytes of its buffers (position tables) and its largest tensor
    named with its shape, read from the model itself built on PyTorch's "meta" device (shapes only:
    nothing is allocated, so a config too large to build is measured, not attempted).
    Raises ConfigError where the sizes overflow PyTorch's size arithmetic."""
    import torch

    from qkv.errors import ConfigError
    from qkv.model import build_model

    try:
        with torch.device("meta"):
            model = build_model(cfg)
    except RuntimeError as exc:
        raise ConfigError(f"the model is too large to build ({str(exc).splitlines()[0]}): {_SMALLER}") from None
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    params = sum(p.numel() for p in model.parameters())                   # tied weights counted once
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    name, largest = max(tensors.items(), key=lambda item: item[1].numel())
    return params, buffers, f"{name} ({' x '.join(map(str, largest.shape))})"


def check_model_fits(cfg: ModelConfig, device: object = "cpu", training: bool = False, copies: int = 1) -> None:
    """Refuse, with one line, a model that cannot fit in the memory `device` has left: its fp32
    weights and position tables, and to train it also the gradients and AdamW's two moments (4x the
    weights; activations come on top), times `copies` (processes on this machine, e.g. DDP ranks).
    A model that passes may still run out of memory later; one that fails could never have run."""
    from qkv.errors import ConfigError

    params, buffers, largest = model_footprint(cfg)
    need = (params * 4 * (4 if training else 1) + buffers) * copies
    free = machine.available_memory(device)
    if free is not None and need > free:
        what = "weights, gradients and AdamW moments" if training else "weights"
        each = f" in each of {copies} processes" if copies > 1 else ""
        raise ConfigError(
            f"the model needs at least {need / 2**30:,.1f} GiB ({params:,} parameters: {what}, and "
            f"position tables{each}) but {device} has {free / 2**30:,.1f} GiB free; its largest tensor "
            f"is {largest}: {_SMALLER}"
        )
