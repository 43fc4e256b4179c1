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


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one (what SLURM's
    --cpus-per-task, taskset or a container's cpuset grant), else every core of the machine. On a
    cluster node os.cpu_count() counts cores that belong to other jobs."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def describe() -> dict[str, object]:
    """The machine beside a measurement: CPU, SIMD flags, cores, torch (and CTranslate2) versions."""

    import torch

    flags = cpu_flags()
    info: dict[str, object] = {
        "cpu": cpu_name(), "vendor": cpu_vendor(), "arch": platform.machine(),
        "flags": [f for f in SIMD_FLAGS if f in flags],
        "cores": usable_cores(),
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
