"""Facts of the machine a run runs on: the memory a new allocation may take, and what
decides a float result's last bits (CPU model, torch's CPU capability, threads, CUDA
device). and the environment a manifest records. Nothing of imprint is imported here."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass


__all__ = ["environment_record", "machine_record", "host_available_bytes"]


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


def environment_record() -> dict[str, Any]:
    """What a run's manifest records of its environment: imprint's, Python's, torch's
    and numpy's versions, the git revision of imprint's code (+dirty when changed),
    the platform and :func:`machine_record`."""
    from imprint import __version__

    return {
        "imprint": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": _module_version("numpy"),
        "git_revision": _git_revision(),
        "platform": platform.platform(),
        **machine_record(),
    }


def _git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    revision = out.stdout.strip()
    if out.returncode != 0 or not revision:
        return "unknown"
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return revision + ("+dirty" if dirty else "")


def _module_version(name: str) -> str:
    module = sys.modules.get(name)
    if module is None:
        try:
            module = __import__(name)
        except ImportError:
            return "absent"
    return getattr(module, "__version__", "unknown")
