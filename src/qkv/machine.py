"""What machine a measurement ran on: recipes and benchmarks record it next to their numbers."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 / AMX, through oneDNN). Without it,
    PyTorch emulates bf16 matmuls at a few GFLOP/s, far slower than fp32."""
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _cpuinfo_field(name: str) -> str:
    """The first `name : value` of /proc/cpuinfo (Linux), or "" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them (avx2, avx512f, avx512_vnni, avx_vnni, ...);
    empty where /proc/cpuinfo is not available."""
    return frozenset((_cpuinfo_field("flags") or _cpuinfo_field("Features")).split())


def cpu_vendor() -> str:
    """GenuineIntel, AuthenticAMD, ... ("" where unknown)."""
    return _cpuinfo_field("vendor_id")


def cpu_has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU multiplies int8 with 32-bit sums in one instruction (AVX-512 VNNI, AVX-VNNI or
    AMX-INT8). Without it, x86 int8 kernels either saturate 16-bit partial sums or run slowly."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def describe() -> dict[str, object]:
    """The machine beside a measurement: CPU, SIMD flags, cores, torch (and CTranslate2) versions."""
    import os

    import torch

    flags = cpu_flags()
    info: dict[str, object] = {
        "cpu": cpu_name(), "vendor": cpu_vendor(), "arch": platform.machine(),
        "flags": [f for f in SIMD_FLAGS if f in flags],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    }
    try:
        import ctranslate2

        info["ctranslate2"] = ctranslate2.__version__
    except ImportError:
        pass
    return info


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_memory(device: object = "cpu") -> int | None:
    """Bytes this process can still allocate on `device`: MemAvailable of /proc/meminfo for the CPU
    (Linux), free memory for a CUDA device; None where it cannot be known."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_SMALLER = "make model.d_model, d_ff, the layer counts, max_len or the vocabulary smaller"


def model_footprint(cfg) -> tuple[int, int, str]:
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


def check_model_fits(cfg, device: object = "cpu", training: bool = False, copies: int = 1) -> None:
    """Refuse, with one line, a model that cannot fit in the memory `device` has left: its fp32
    weights and position tables, and to train it also the gradients and AdamW's two moments (4x the
    weights; activations come on top), times `copies` (processes on this machine, e.g. DDP ranks).
    A model that passes may still run out of memory later; one that fails could never have run."""
    from qkv.errors import ConfigError

    params, buffers, largest = model_footprint(cfg)
    need = (params * 4 * (4 if training else 1) + buffers) * copies
    free = available_memory(device)
    if free is not None and need > free:
        what = "weights, gradients and AdamW moments" if training else "weights"
        each = f" in each of {copies} processes" if copies > 1 else ""
        raise ConfigError(
            f"the model needs at least {need / 2**30:,.1f} GiB ({params:,} parameters: {what}, and "
            f"position tables{each}) but {device} has {free / 2**30:,.1f} GiB free; its largest tensor "
            f"is {largest}: {_SMALLER}"
        )
