"""Choosing units and turning their input rows into images (mask galleries)."""

from __future__ import annotations

import torch

from imprint.analysis.locality import to_image_space

__all__ = ["select_units", "unit_images", "GALLERY_MODES"]

GALLERY_MODES = ("most", "least", "sample")


def select_units(c_in: torch.Tensor, mode: str, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of up to ``n`` units: the most connected, the least connected with
    C_in >= 2, or a seeded sample of connected units. Ties break by unit index."""
    if mode not in GALLERY_MODES:
        raise ValueError(f"The 'mode' parameter must be one of {GALLERY_MODES}. Got {mode!r}.")
    if n < 0:
        raise ValueError(f"The 'n' parameter must be >= 0. Got {n}.")
    c_in = c_in.long().cpu()
    units = torch.arange(c_in.numel())
    if mode == "most":
        keep = units[c_in > 0]
        order = torch.argsort(-c_in[keep], stable=True)
    elif mode == "least":
        keep = units[c_in >= 2]
        order = torch.argsort(c_in[keep], stable=True)
    else:
        keep = units[c_in > 0]
        order = torch.randperm(keep.numel(), generator=torch.Generator().manual_seed(seed))
    return keep[order[:n]]


def unit_images(
    rows: torch.Tensor,
    shape: tuple[int, int, int],
    units: torch.Tensor,
    permutation: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows (units_total, D) of a mask or weighted mask -> (n, C, H, W) images of ``units``,
    in image space (the pixel-permutation control undone)."""
    picked = to_image_space(rows[units], permutation)  # (n, D)
    return picked.reshape(len(units), *shape)
