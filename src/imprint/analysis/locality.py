"""Scalar locality of first-layer masks in input space.

The reading imprint reports is the **neighbour locality index**
(:func:`neighbour_locality`). Over every unit k and every ordered pair p != q of its
inputs in the same channel (the pairs that S_sc counts), let f be the fraction of
pairs that are neighbours, |r_p - r_q| <= ``radius`` (default 1.5 px: the eight
neighbours of a 3 x 3 filter), and f0 the same fraction for random masks of equal
C_in, which is exact and independent of C_in (:func:`mass_within_radius_null`). The
index is

    lambda = (f - f0) / (1 - f0),

0 for random masks, 1 when every same-channel pair of every unit is a neighbour pair,
negative when inputs avoid each other. f is exactly the fraction of the S_sc map's mass
within ``radius`` of its centre, so the index says what the map shows. Its uncertainty
is a bootstrap over units; below ``MIN_PAIRS`` pooled pairs or ``MIN_UNITS`` units with a
pair there is no number, only the reason ("too few pairs").

For a unit k with input set P_k, the mean squared displacement |d|^2 between
ordered pairs p != q of P_k in the same channel measures how compact its
receptive field is. Pooled over units it is compared with the null of random
masks with the same C_in: a random same-channel pair is a uniform pair of distinct
pixels of the H x W grid, whose mean |d|^2 is exactly
2 HW/(HW-1) ((W^2-1)/12 + (H^2-1)/12) whatever the unit's C_in. The ratio
null / actual is 1 for no locality and grows as connectivity becomes local.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imprint.analysis.maps import mass_within_radius_null
from imprint.analysis.uncertainty import N_BOOT, Reading, ratio_reading

__all__ = [
    "PairDistanceLocality",
    "null_pair_distance",
    "pair_distance_locality",
    "to_image_space",
    "neighbour_pairs",
    "neighbour_kernel",
    "neighbour_locality",
    "NEIGHBOUR_RADIUS",
    "MIN_PAIRS",
    "MIN_UNITS",
    "MASS_RADIUS",
    "neighbour_enrichment",
    "mass_within_r",
]

NEIGHBOUR_RADIUS = 1.5  # px: the 8 neighbours of a pixel, a 3 x 3 filter's support
MIN_PAIRS = 40  # pooled ordered same-channel pairs (20 unordered) below which no number
MIN_UNITS = 5  # units with at least one same-channel pair
MASS_RADIUS = 2.0  # px: the radius of the "S_sc mass within r" reading


def to_image_space(mask: torch.Tensor, permutation: torch.Tensor | None) -> torch.Tensor:
    """Undo the pixel-permutation control: (units, D) in network order -> image order.

    Network input j holds image pixel permutation[j].
    """
    if permutation is None:
        return mask
    out = torch.empty_like(mask)
    out[:, permutation.to(mask.device)] = mask
    return out


def null_pair_distance(height: int, width: int) -> float:
    """Mean |d|^2 over ordered pairs of distinct pixels of an H x W grid."""
    n = height * width
    if n < 2:
        return float("nan")
    return 2.0 * n / (n - 1) * ((width**2 - 1) / 12.0 + (height**2 - 1) / 12.0)


@dataclass(frozen=True)
class PairDistanceLocality:
    actual: float  # pooled mean |d|^2 over same-channel pairs of the masks
    null: float  # the same for random masks of equal C_in
    n_pairs: int  # ordered same-channel pairs pooled
    per_unit: tuple[float, ...] = ()  # each unit's null / actual (NaN below 2 pairs' worth)

    @property
    def ratio(self) -> float:
        """null / actual: 1 = no locality, larger = more local."""
        if self.n_pairs == 0 or self.actual == 0:
            return float("nan")
        return self.null / self.actual


def pair_distance_locality(mask: torch.Tensor, shape: tuple[int, int, int]) -> PairDistanceLocality:
    """Exact pooled pair-distance locality of ``mask`` (units, C*H*W), channel-major.

    Uses sum_{p,q in P} |r_p - r_q|^2 = 2 n sum |r|^2 - 2 |sum r|^2 per unit and channel.
    """
    channels, height, width = shape
    m = mask.reshape(mask.shape[0], channels, height * width).double()  # (units, C, HW)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    xs, ys = xs.flatten().to(m.device), ys.flatten().to(m.device)  # (HW,)
    n = m.sum(-1)  # (units, C)
    sx, sy = m @ xs, m @ ys  # (units, C)
    sq = m @ (xs**2 + ys**2)  # (units, C)
    unit_total = (2 * n * sq - 2 * (sx**2 + sy**2)).sum(dim=1)  # (units,)
    unit_pairs = (n * (n - 1)).sum(dim=1)  # (units,)
    null = null_pair_distance(height, width)
    per_unit = torch.where(
        (unit_pairs > 0) & (unit_total > 0),
        null * unit_pairs / unit_total.clamp(min=1e-300),
        torch.full_like(unit_total, float("nan")),
    )
    total, pairs = unit_total.sum().item(), int(unit_pairs.sum().item())
    actual = total / pairs if pairs else float("nan")
    return PairDistanceLocality(actual, null, pairs, tuple(per_unit.tolist()))


def neighbour_kernel(radius: float) -> torch.Tensor:
    """(2r+1, 2r+1) float64, r = int(radius): 1 at the displacements 0 < |d| <= radius."""
    reach = int(radius)
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    kernel = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius
    kernel[reach, reach] = False  # distinct inputs only
    return kernel.to(torch.float64)


def neighbour_pairs(
    mask: torch.Tensor, shape: tuple[int, int, int], radius: float = NEIGHBOUR_RADIUS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit of ``mask`` (units, C*H*W), channel-major: (ordered same-channel pairs
    of its inputs at distance <= ``radius``, all ordered same-channel pairs), float64.

    Exact counts: a convolution of each channel's mask image with the indicator of
    the displacements 0 < |d| <= radius gives, at every input, its neighbours in the
    mask.
    """
    if not radius >= 0:
        raise ValueError(f"The 'radius' parameter must be a number >= 0. Got {radius!r}.")
    channels, height, width = shape
    units = mask.shape[0]
    m = (mask != 0).to(torch.float64).reshape(units * channels, 1, height, width).cpu()
    kernel = neighbour_kernel(radius)
    around = F.conv2d(m, kernel[None, None], padding=kernel.shape[0] // 2)
    near = (m * around).reshape(units, -1).sum(dim=1)  # (units,)
    n = m.reshape(units, channels, -1).sum(dim=2)  # (units, C)
    return near, (n * (n - 1)).sum(dim=1)


def neighbour_locality(
    mask: torch.Tensor,
    shape: tuple[int, int, int],
    radius: float = NEIGHBOUR_RADIUS,
    *,
    min_pairs: int = MIN_PAIRS,
    min_units: int = MIN_UNITS,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Reading:
    """The neighbour locality index (module docstring) of ``mask`` (units, C*H*W) in
    image space, with its bootstrap spread over units; ``null`` is 0 (random masks).
    """
    near, pairs = neighbour_pairs(mask, shape, radius)
    f0 = mass_within_radius_null(shape, radius)
    if not f0 < 1:  # every pair of this grid is a neighbour pair: nothing to measure
        return Reading(float("nan"), null=0.0, reason=f"radius {radius} covers the whole image")
    return ratio_reading(
        near,
        pairs,
        null=0.0,
        transform=lambda f: (f - f0) / (1 - f0),
        min_denominator=min_pairs,
        min_units=min_units,
        what="pairs",
        n_boot=n_boot,
        seed=seed,
    )


def neighbour_enrichment(
    mask: torch.Tensor, shape: tuple[int, int, int], *, n_boot: int = N_BOOT, seed: int = 0
) -> Reading:
    """The neighbour enrichment f / f0 of ``mask`` (units, C*H*W) in image space: how many
    times more often a same-channel pair is a neighbour pair than in random masks of
    equal C_in (the height of the S_sc map's central peak over its background; 1 =
    random), with its bootstrap spread over units."""
    near, pairs = neighbour_pairs(mask, shape, NEIGHBOUR_RADIUS)
    f0 = mass_within_radius_null(shape, NEIGHBOUR_RADIUS)
    return ratio_reading(
        near,
        pairs,
        null=1.0,
        transform=lambda f: f / f0,
        min_denominator=MIN_PAIRS if f0 > 0 else float("inf"),
        min_units=MIN_UNITS,
        what="pairs",
        n_boot=n_boot,
        seed=seed,
    )


def mass_within_r(
    mask: torch.Tensor,
    shape: tuple[int, int, int],
    radius: float = MASS_RADIUS,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Reading:
    """The fraction of the S_sc map's mass within ``radius`` px of its centre, with its
    bootstrap spread over units and the exact null of random masks of equal C_in."""
    near, pairs = neighbour_pairs(mask, shape, radius)
    return ratio_reading(
        near,
        pairs,
        null=mass_within_radius_null(shape, radius),
        min_denominator=MIN_PAIRS,
        min_units=MIN_UNITS,
        what="pairs",
        n_boot=n_boot,
        seed=seed,
    )
