"""Scalar locality of first-layer masks in input space.

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

__all__ = ["PairDistanceLocality", "null_pair_distance", "pair_distance_locality", "to_image_space"]


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
