"""Facts of the machine a run runs on: the memory a new allocation may take, and what
decides a float result's last bits (CPU model, torch's CPU capability, threads, CUDA
device). Nothing of imprint is imported here."""

from __future__ import annotations

import platform
import sys
from typing import Any

import torch

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass


__all__ = ["machine_record", "host_available_bytes"]


def machine_record() -> dict[str, Any]:
    """What decides a float32 result's last bits: the CPU model, the kernels torch
    picked for it (its CPU capability, which ATEN_CPU_CAPABILITY can lower) and the
    thread count."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def host_available_bytes() -> int | None:
    """Memory a new allocation may take on this host: MemAvailable, capped by this
    process's address-space limit (ulimit -v); None when unknown."""
    import resource

    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        found.append(soft)
    return min(found) if found else None
