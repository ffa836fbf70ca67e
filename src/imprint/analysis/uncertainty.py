"""Readings with their uncertainty.

A :class:`Reading` is a scalar measured on one run, with the spread that the run
itself supports: a bootstrap over the units it rests on (units are drawn with
replacement, ``n_boot`` times, from a seeded generator, so the spread is itself
reproducible). A reading that the data cannot support carries a reason instead of a
number ("too few pairs"). Across the seeds of a group, :func:`across_seeds` gives
mean and standard deviation.

Pooled readings (a sum over units divided by another, as the fraction of pairs
that are neighbours) are bootstrapped as ratios of resampled sums:
:func:`ratio_reading`; per-unit averages (IPR, kurtosis) as means: :func:`mean_reading`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Reading",
    "N_BOOT",
    "bootstrap_counts",
    "ratio_reading",
    "mean_reading",
    "across_seeds",
    "format_spread",
    "as_number",
]

N_BOOT = 1000  # bootstrap resamples: the sd is then known to about 2% of itself
_NAN = float("nan")


@dataclass(frozen=True)
class Reading:
    """One scalar reading: ``value`` with its within-run uncertainty and its null."""

    value: float
    sd: float = _NAN  # bootstrap standard deviation over units
    low: float = _NAN  # 2.5% bootstrap quantile
    high: float = _NAN  # 97.5% bootstrap quantile
    null: float = _NAN  # the same reading for random masks (or a Gaussian, ...)
    n: int = 0  # units the reading rests on
    reason: str = ""  # why there is no value (then value is NaN)

    @property
    def ok(self) -> bool:
        return not self.reason and math.isfinite(self.value)

    def format(self, digits: int = 2) -> str:
        """``0.41 ± 0.03`` (within-run sd), or the reason there is no number."""
        if not self.ok:
            return self.reason or "n/a"
        if not math.isfinite(self.sd):
            return _fixed(self.value, digits)
        digits = _digits(self.sd, digits)
        return f"{_fixed(self.value, digits)} ± {self.sd:.{digits}f}"

    def columns(self, name: str) -> dict[str, Any]:
        """Flat columns for tables and JSON: name, name_sd, name_low, name_high,
        name_null, name_n (and name_reason when there is no value)."""
        out: dict[str, Any] = {
            name: self.value,
            f"{name}_sd": self.sd,
            f"{name}_low": self.low,
            f"{name}_high": self.high,
            f"{name}_null": self.null,
            f"{name}_n": self.n,
        }
        if self.reason:
            out[f"{name}_reason"] = self.reason
        return out


def bootstrap_counts(n: int, n_boot: int = N_BOOT, seed: int = 0) -> torch.Tensor:
    """(n_boot, n) float64: how often each of n items is drawn in each resample of n
    draws with replacement. Row sums are n."""
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n, (n_boot, n), generator=gen)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    return counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))


def _summary(value: float, samples: torch.Tensor, null: float, n: int) -> Reading:
    samples = samples[torch.isfinite(samples)]
    if samples.numel() < 2:
        return Reading(value, null=null, n=n)
    low, high = torch.quantile(samples, torch.tensor([0.025, 0.975], dtype=samples.dtype))
    return Reading(value, samples.std().item(), low.item(), high.item(), null, n)


def ratio_reading(
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    *,
    null: float = _NAN,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    min_denominator: float = 1.0,
    min_units: int = 1,
    what: str = "data",
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Reading:
    """transform(sum numerator / sum denominator) over units, bootstrapped over units.

    Units with a zero denominator carry no information and are left out. Fewer than
    ``min_units`` such units, or a pooled denominator below ``min_denominator``, give
    a reading without value whose reason says "too few {what}".
    """
    num, den = numerator.double().flatten().cpu(), denominator.double().flatten().cpu()
    keep = den > 0
    num, den = num[keep], den[keep]
    n, total = int(keep.sum()), den.sum().item()
    if n < min_units or total < min_denominator:
        return Reading(
            _NAN,
            null=null,
            n=n,
            reason=f"too few {what} ({total:g} over {n} units; needs {min_denominator:g} "
            f"over {min_units})",
        )
    f = transform or (lambda t: t)
    value = f(num.sum() / den.sum()).item()
    weights = bootstrap_counts(n, n_boot, seed)  # (B, n)
    samples = f((weights @ num) / (weights @ den))  # (B,)
    return _summary(value, samples, null, n)


def mean_reading(
    values: torch.Tensor,
    *,
    null: float = _NAN,
    min_units: int = 1,
    what: str = "units",
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Reading:
    """The mean of the finite per-unit ``values``, bootstrapped over units."""
    v = values.double().flatten().cpu()
    v = v[torch.isfinite(v)]
    n = v.numel()
    if n < min_units or n == 0:
        return Reading(_NAN, null=null, n=n, reason=f"too few {what} ({n}; needs {min_units})")
    weights = bootstrap_counts(n, n_boot, seed)  # (B, n)
    return _summary(v.mean().item(), (weights @ v) / n, null, n)


def as_number(value: Any) -> float:
    """A reading as a float: NaN for None, "", text or a missing value (CSV cells and
    JSON nulls included)."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def across_seeds(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample sd, count) of the finite values of one reading over seeds;
    sd is NaN for a single seed."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return _NAN, _NAN, 0
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, _NAN, 1
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(var), len(finite)


def format_spread(mean: float, sd: float, digits: int = 2, percent: bool = False) -> str:
    """``mean ± sd`` (sd omitted when unknown; "n/a" without a mean)."""
    if not math.isfinite(mean):
        return "n/a"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    if not math.isfinite(sd):
        return f"{_fixed(mean * scale, digits)}{unit}"
    if sd <= 1e-9 * abs(mean):  # float rounding of equal values, not a spread
        sd = 0.0
    digits = _digits(sd * scale, digits)
    return f"{_fixed(mean * scale, digits)} ± {sd * scale:.{digits}f}{unit}"


def _fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, without the sign of a value that rounds to 0
    ("0.0000", not "-0.0000")."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _digits(sd: float, digits: int) -> int:
    """More decimals when the sd would print as zero (up to 4): 0.0063 ± 0.0010, not
    0.01 ± 0.00."""
    if 0 < sd < 0.5 * 10**-digits:
        return min(4, max(digits, 1 - math.floor(math.log10(sd))))
    return digits


def reading_from_columns(row: Mapping[str, Any], name: str) -> Reading:
    """The inverse of :meth:`Reading.columns` (missing entries are NaN)."""

    def number(key: str) -> float:
        value = row.get(key)
        try:
            return float(value) if value not in (None, "") else _NAN
        except (TypeError, ValueError):
            return _NAN

    n = number(f"{name}_n")
    return Reading(
        number(name),
        number(f"{name}_sd"),
        number(f"{name}_low"),
        number(f"{name}_high"),
        number(f"{name}_null"),
        int(n) if math.isfinite(n) else 0,
        str(row.get(f"{name}_reason") or ""),
    )
