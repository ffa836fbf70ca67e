"""imprint: iterative magnitude pruning of fully connected networks on images, and the
local, convolution-like connectivity that survives (Pellegrini & Biroli, ICML 2022).

In Python: ``imprint.open(PATH)`` reads a run, group or sweep folder
(:mod:`imprint.notebook`); ``imprint.FCN`` is the network (:mod:`imprint.model`).
Both are imported on first use, so that ``import imprint`` stays light."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["FCN", "Group", "Run", "Sweep", "open"]

_LAZY = {
    "open": "imprint.notebook",
    "Run": "imprint.notebook",
    "Group": "imprint.notebook",
    "Sweep": "imprint.notebook",
    "FCN": "imprint.model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imprint' has no attribute {name!r}")
