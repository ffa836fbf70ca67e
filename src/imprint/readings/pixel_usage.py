"""The neighbour locality index over pixel usage (lambda_pix): locality beyond what the
pixels a mask uses explain.

The locality index compares the fraction f of a layer's same-channel input pairs that
are neighbours (<= 1.5 px) with f0, that of random masks drawing every pixel alike. Real
masks do not use pixels alike: a blob of used pixels in the centre raises f with no
pairing of neighbours at all. The null here keeps each unit's C_in *and* each pixel's
number of connections d_p (the bipartite configuration model, within a channel for
same-channel pairs). Its expected f is approximated, as for sparse random graphs of given
degrees, by drawing a unit's inputs independently with probability proportional to d_p:

    f_pix = sum_{p ~ q} d_p d_q / sum_{p != q, same channel} d_p d_q,

the same for every unit (p ~ q: distinct pixels of one channel within the radius); with
equal degrees it is f0 exactly. The readings are lambda_pix = (f - f_pix) / (1 - f_pix):
0 for masks of the configuration model, 1 when every pair is a neighbour pair, and the
enrichment over pixel usage f / f_pix (1: no more than pixel usage explains). Its
spread is a bootstrap over units that redraws the degrees with the units (the null moves
with the resample). tests/test_pixel_usage.py holds the approximation against a
degree-preserving randomisation (curveball trades) of real-looking masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imprint.analysis.locality import (
    MIN_PAIRS,
    MIN_UNITS,
    NEIGHBOUR_RADIUS,
    neighbour_kernel,
    neighbour_pairs,
)
from imprint.analysis.uncertainty import N_BOOT, Reading, bootstrap_counts
from imprint.readings.base import TABLES, ReadingInputs, ReadingSpec

__all__ = [
    "LOCALITY_INDEX_PIX",
    "ENRICHMENT_PIX",
    "pixel_usage_null",
    "pixel_usage_locality",
    "pixel_usage_enrichment",
    "pixel_usage_map",
]


def pixel_usage_null(
    degrees: torch.Tensor, shape: tuple[int, int, int], radius: float = NEIGHBOUR_RADIUS
) -> torch.Tensor:
    """f_pix of pixel degrees ``degrees`` ((B, C*H*W) or (C*H*W,), channel-major): the
    expected neighbour fraction of same-channel pairs under the configuration model
    (module docstring); NaN where no pair exists."""
    channels, height, width = shape
    d = degrees.to(torch.float64).reshape(-1, channels, height * width)  # (B, C, HW)
    kernel = neighbour_kernel(radius)
    images = d.reshape(-1, 1, height, width)
    around = F.conv2d(images, kernel[None, None], padding=kernel.shape[0] // 2)
    near = (images * around).reshape(d.shape[0], -1).sum(dim=1)  # sum_{p~q} d_p d_q
    total = d.sum(dim=2)  # (B, C)
    every = (total**2 - (d**2).sum(dim=2)).sum(dim=1)  # sum_{p != q, same channel}
    return (near / every).reshape(degrees.shape[:-1]) if degrees.dim() > 1 else near[0] / every[0]


def pixel_usage_map(mask: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """The S_sc map that the configuration model expects of ``mask`` (units, C*H*W):
    its pairs spread over displacements d != 0 as the products d_p d_{p+d} of the
    pixel degrees (the same-channel autocorrelation of the degree image), float64
    (2H-1, 2W-1). Observed S_sc over this map is the enrichment map: 1 where pixel
    usage explains the pairs."""
    channels, height, width = shape
    m = (mask != 0).to(torch.float64).cpu()
    d = m.sum(dim=0).reshape(1, channels, height, width)
    auto = F.conv2d(
        d, d.reshape(channels, 1, height, width), padding=(height - 1, width - 1), groups=channels
    ).sum(dim=(0, 1))  # (2H-1, 2W-1): sum_p d_p d_{p+dy,dx}
    auto[height - 1, width - 1] = 0.0  # distinct inputs only
    n = m.reshape(m.shape[0], channels, -1).sum(dim=2)
    pairs = (n * (n - 1)).sum()
    total = auto.sum()
    return auto * (pairs / total) if total > 0 else torch.zeros_like(auto)


def pixel_usage_locality(
    mask: torch.Tensor,
    shape: tuple[int, int, int],
    radius: float = NEIGHBOUR_RADIUS,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Reading:
    """lambda_pix = (f - f_pix) / (1 - f_pix) of ``mask`` (units, C*H*W) in image space,
    bootstrapped over units (degrees redrawn with them); "too few pairs" as the
    locality index."""
    return _LAMBDA.reading(_statistics(mask, shape, radius, n_boot, seed))


def pixel_usage_enrichment(
    mask: torch.Tensor,
    shape: tuple[int, int, int],
    radius: float = NEIGHBOUR_RADIUS,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Reading:
    """f / f_pix: how many times more often a same-channel pair is a neighbour pair than
    under the configuration model (1: no more than pixel usage explains)."""
    return _ENRICHMENT.reading(_statistics(mask, shape, radius, n_boot, seed))


@dataclass(frozen=True)
class _Statistics:
    """What both readings rest on: f and f_pix, and their bootstrap samples (B,)."""

    units: int
    reason: str = ""
    f: torch.Tensor | None = None
    f_pix: torch.Tensor | None = None
    f_b: torch.Tensor | None = None
    f_pix_b: torch.Tensor | None = None


def _statistics(
    mask: torch.Tensor, shape: tuple[int, int, int], radius: float, n_boot: int, seed: int
) -> _Statistics:
    m = (mask != 0).to(torch.float64).cpu()
    near, pairs = neighbour_pairs(mask, shape, radius)
    units, total = int((pairs > 0).sum()), pairs.sum().item()
    if units < MIN_UNITS or total < MIN_PAIRS:
        needs = f"needs {MIN_PAIRS:g} over {MIN_UNITS}"
        return _Statistics(units, f"too few pairs ({total:g} over {units} units; {needs})")
    f_pix = pixel_usage_null(m.sum(dim=0), shape, radius)
    if not f_pix.item() < 1:
        return _Statistics(units, "every used pair is a neighbour pair")
    weights = bootstrap_counts(m.shape[0], n_boot, seed)  # (B, units): all units use pixels
    f_b = (weights @ near) / (weights @ pairs)
    f_pix_b = pixel_usage_null(weights @ m, shape, radius)
    return _Statistics(units, "", near.sum() / total, f_pix, f_b, f_pix_b)


@dataclass(frozen=True)
class _OverPixelUsage:
    """A reading of (f, f_pix): its transform and its null."""

    transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    null: float

    def reading(self, stats: _Statistics) -> Reading:
        if stats.reason:
            return Reading(math.nan, null=self.null, n=stats.units, reason=stats.reason)
        assert stats.f is not None and stats.f_pix is not None
        assert stats.f_b is not None and stats.f_pix_b is not None
        value = self.transform(stats.f, stats.f_pix).item()
        f_b, f_pix_b = stats.f_b, stats.f_pix_b
        finite = torch.isfinite(f_b) & torch.isfinite(f_pix_b) & (f_pix_b < 1) & (f_pix_b > 0)
        samples = self.transform(f_b, f_pix_b)[finite]
        if samples.numel() < 2:
            return Reading(value, null=self.null, n=stats.units)
        low, high = torch.quantile(samples, torch.tensor([0.025, 0.975], dtype=samples.dtype))
        return Reading(value, samples.std().item(), low.item(), high.item(), self.null, stats.units)


_LAMBDA = _OverPixelUsage(lambda f, f_pix: (f - f_pix) / (1 - f_pix), 0.0)
_ENRICHMENT = _OverPixelUsage(lambda f, f_pix: f / f_pix, 1.0)


def _shared(r: ReadingInputs) -> _Statistics:
    """The statistics of a round's mask, computed once for both readings."""
    return r.shared(
        "pixel_usage", lambda: _statistics(r.mask, r.shape, NEIGHBOUR_RADIUS, N_BOOT, 0)
    )


LOCALITY_INDEX_PIX = ReadingSpec(
    name="locality_index_pix",
    label="pixel-usage locality",
    compute=lambda r: _LAMBDA.reading(_shared(r)),
    null="masks keeping each unit's C_in and each pixel's connections: 0",
    missing="too few pairs",
)

ENRICHMENT_PIX = ReadingSpec(
    name="neighbour_enrichment_pix",
    label="enrichment over pixel usage",
    compute=lambda r: _ENRICHMENT.reading(_shared(r)),
    null="masks keeping each unit's C_in and each pixel's connections: 1",
    missing="too few pairs",
    show=TABLES - {"console"},
)
