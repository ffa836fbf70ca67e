"""What a reading is, once: its declaration, what it is computed from, its columns,
and its mean ± sd over seeds.

A reading is a scalar measured on one round of one run (:class:`imprint.analysis.
uncertainty.Reading`: value, within-run spread, interval, null, n, or the reason it has
no value). Each is declared once as a :class:`ReadingSpec`; the tables (the console
table, summary.csv of a run and of a group, analysis/rounds.csv, collect's
results.csv, the report's, group report's and comparison page's tables) list the
registered readings that are shown there, in registry order. A name that is not
registered is an error (:class:`UnknownReading`), never a silent drop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from imprint.analysis.uncertainty import (
    Reading,
    across_seeds,
    as_number,
    format_spread,
    reading_from_columns,
)

__all__ = [
    "ReadingSpec",
    "ReadingInputs",
    "UnknownReading",
    "TABLES",
    "COLUMN_SUFFIXES",
    "aggregate_over_seeds",
    "has_geometry",
    "json_safe",
]

# Where a reading can be shown (ReadingSpec.show): the end-of-run console table; RUN/ and
# GROUP/summary.csv; analysis/rounds.csv (run and group) and the report tables built from
# it; collect's results.csv; the group report's readings table; the comparison page's
# table at equal density.
TABLES = frozenset({"console", "summary", "rounds", "collect", "group", "compare"})
# The columns of a reading named x: x, x_sd, x_low, x_high, x_null, x_n, x_reason.
COLUMN_SUFFIXES = ("_sd", "_low", "_high", "_null", "_n", "_reason")


class UnknownReading(KeyError):
    """A reading name that no registered ReadingSpec declares."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown reading"


@dataclass(frozen=True)
class ReadingInputs:
    """What a reading may be computed from, for one round of one run.

    ``mask`` is the first layer's mask (units, C*H*W) in image space (un-permuted),
    ``shape`` the input shape (C, H, W). The analysis stage adds ``weights`` (the first
    layer's final weights, in the run's input order) and ``activity`` (a call that
    returns the first hidden layer's pre-activations on the validation data, (n,
    units), given optionally other first-layer weights than the final ones; None
    without data)."""

    mask: torch.Tensor
    shape: tuple[int, int, int]
    weights: torch.Tensor | None = None
    activity: Callable[..., torch.Tensor] | None = None
    # Intermediates several readings of one round share (:meth:`shared`).
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per round and key: what two readings rest on is computed once."""
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]


Stage = Literal["round", "analysis"]


def has_geometry(shape: Sequence[int]) -> bool:
    """Whether inputs of ``shape`` (C, H, W) are images with a 2-D neighbourhood."""
    return len(shape) == 3 and shape[1] >= 2 and shape[2] >= 2


@dataclass(frozen=True)
class ReadingSpec:
    """One reading, declared once.

    ``compute`` turns a round's :class:`ReadingInputs` into a Reading (or a bare float
    for a reading without a within-run spread). ``stage`` says when it is computed:
    "round" readings by the round loop, stored in the round's metrics.json (from masks
    alone); "analysis" readings by ``imprint analyze`` into analysis/rounds.csv (they may
    use weights and data). ``needs`` lists what compute cannot do without:
    "geometry" (2-D images), "weights", "data"; a round that lacks one has no columns
    for the reading. ``show`` names the tables it appears in (:data:`TABLES`)."""

    name: str
    label: str  # a column heading a reader understands
    compute: Callable[[ReadingInputs], Reading | float]
    null: str  # what the reading is compared with, in words
    stage: Stage = "round"
    needs: frozenset[str] = frozenset({"geometry"})
    digits: int = 2
    spread: bool = True  # carries a within-run spread (bootstrap over units)
    missing: str = "n/a"  # shown where the value is NaN without a stored reason
    show: frozenset[str] = field(default=TABLES)

    def __post_init__(self) -> None:
        unknown = set(self.show) - TABLES
        if unknown:
            raise ValueError(f"reading {self.name!r}: unknown tables {sorted(unknown)}")
        if not self.name.isidentifier() or self.name.endswith(COLUMN_SUFFIXES):
            raise ValueError(
                f"reading name {self.name!r} must be an identifier without a "
                f"column suffix ({', '.join(COLUMN_SUFFIXES)})"
            )

    def columns(self, reading: Reading | float) -> dict[str, Any]:
        """The flat columns of one value of this reading."""
        if isinstance(reading, Reading):
            return reading.columns(self.name)
        return {self.name: float(reading)}

    def read(self, row: Mapping[str, Any]) -> Reading:
        """This reading as stored in a row of flat columns (NaN when absent)."""
        return reading_from_columns(row, self.name)

    def format(self, row: Mapping[str, Any]) -> str:
        """One run's cell: ``value ± within-run sd``, or the reason there is no value."""
        reading = self.read(row)
        if reading.reason:
            return reading.reason
        if not math.isfinite(reading.value):
            return self.missing
        if not self.spread:
            return f"{reading.value:.{self.digits}f}"
        return reading.format(self.digits)

    def format_mean(self, row: Mapping[str, Any]) -> str:
        """A group's cell: ``mean ± sd over seeds`` from an :func:`aggregate_over_seeds`
        row (``missing`` where no seed has a value)."""
        mean = as_number(row.get(self.name))
        if not math.isfinite(mean):
            return self.missing
        return format_spread(mean, as_number(row.get(f"{self.name}_sd")), self.digits)


def aggregate_over_seeds(
    rows: Sequence[Mapping[str, Any]], names: Iterable[str]
) -> dict[str, float | int]:
    """Mean, sample sd and count over seeds of each of ``names`` in ``rows`` (one row a
    seed, flat columns): ``name``, ``name_sd``, ``name_n``. The one place a mean ± sd
    over seeds is made; values that are absent or NaN ("too few pairs") do not count,
    and a single seed has sd NaN."""
    out: dict[str, float | int] = {}
    for name in names:
        mean, sd, n = across_seeds(as_number(row.get(name)) for row in rows)
        out[name], out[f"{name}_sd"], out[f"{name}_n"] = mean, sd, n
    return out


def json_safe(columns: Mapping[str, Any]) -> dict[str, Any]:
    """NaN and infinities become None: JSON has no NaN."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in columns.items()
    }
