"""Readings as registry entries.

A reading (:class:`imprint.readings.base.ReadingSpec`) is declared once: its name, the
function that computes it from a round's masks (and, at the analysis stage, weights and
data), its label, its null, whether it carries a within-run spread, and the tables it
is shown in. The round loop stores the "round" readings in each round's metrics.json;
``imprint analyze`` adds the "analysis" readings to analysis/rounds.csv; every table is
generated from this registry, in its order.

To add one: a module here declaring a ``ReadingSpec``, and one line in ``READINGS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from imprint.analysis.uncertainty import as_number, format_spread
from imprint.readings import activity, locality, pixel_usage, weights
from imprint.readings.base import (
    COLUMN_SUFFIXES,
    TABLES,
    ReadingInputs,
    ReadingSpec,
    UnknownReading,
    aggregate_over_seeds,
    has_geometry,
    json_safe,
)

__all__ = [
    "READINGS",
    "ReadingSpec",
    "ReadingInputs",
    "UnknownReading",
    "aggregate_over_seeds",
    "has_geometry",
    "json_safe",
    "as_number",
    "format_spread",
    "get_reading",
    "shown_in",
    "compute_readings",
    "reading_columns",
    "is_reading_column",
    "COLUMN_SUFFIXES",
]

READINGS: dict[str, ReadingSpec] = {
    r.name: r
    for r in (
        locality.LOCALITY_INDEX,
        locality.NEIGHBOUR_ENRICHMENT,
        locality.MASS_WITHIN_R,
        locality.LOCALITY_RATIO,
        pixel_usage.LOCALITY_INDEX_PIX,
        pixel_usage.ENRICHMENT_PIX,
        weights.IPR,
        weights.IPR_EXCESS,
        activity.KURTOSIS,
    )
}


def get_reading(name: str) -> ReadingSpec:
    try:
        return READINGS[name]
    except KeyError:
        raise UnknownReading(
            f"{name!r} is not a registered reading (imprint.readings.READINGS has "
            f"{', '.join(READINGS)})."
        ) from None


def shown_in(table: str, stage: str | None = None) -> list[ReadingSpec]:
    """The registered readings shown in ``table`` (one of base.TABLES), in registry order;
    only those of ``stage`` ("round" or "analysis") when given."""
    if table not in TABLES:
        raise ValueError(f"no table {table!r}; tables: {', '.join(sorted(TABLES))}")
    return [r for r in READINGS.values() if table in r.show and (stage is None or r.stage == stage)]


def compute_readings(inputs: ReadingInputs, stage: str) -> dict[str, Any]:
    """The flat columns of every registered reading of ``stage`` that ``inputs`` can
    give: a reading that needs 2-D geometry, weights or data that are not there has no
    columns."""
    have = {"geometry"} if has_geometry(inputs.shape) else set()
    if inputs.weights is not None:
        have.add("weights")
    if inputs.activity is not None:
        have.add("data")
    columns: dict[str, Any] = {}
    for spec in READINGS.values():
        if spec.stage == stage and spec.needs <= have:
            columns.update(spec.columns(spec.compute(inputs)))
    return columns


def is_reading_column(key: str) -> bool:
    """Whether ``key`` is a column of a registered reading (x or x_sd, x_low, ...)."""
    if key in READINGS:
        return True
    for suffix in COLUMN_SUFFIXES:
        if key.endswith(suffix) and key.removesuffix(suffix) in READINGS:
            return True
    return False


def reading_columns(row: Mapping[str, Any], names: Iterable[str] | None = None) -> dict[str, Any]:
    """The columns of the registered readings (all, or ``names``) present in ``row``."""
    keep = set(READINGS) if names is None else {get_reading(n).name for n in names}
    return {
        k: v
        for k, v in row.items()
        if is_reading_column(k) and (k if k in READINGS else _stem(k)) in keep
    }


def _stem(key: str) -> str:
    for suffix in COLUMN_SUFFIXES:
        if key.endswith(suffix):
            return key.removesuffix(suffix)
    return key
