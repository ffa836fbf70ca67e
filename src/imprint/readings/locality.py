"""The first layer's locality readings (:mod:`imprint.analysis.locality` computes them),
stored with every round by the round loop."""

from __future__ import annotations

from imprint.analysis.locality import (
    MASS_RADIUS,
    mass_within_r,
    neighbour_enrichment,
    neighbour_locality,
    pair_distance_locality,
)
from imprint.readings.base import TABLES, ReadingSpec

LOCALITY_INDEX = ReadingSpec(
    name="locality_index",
    label="locality index",
    compute=lambda r: neighbour_locality(r.mask, r.shape),
    null="random masks of equal C_in: 0",
    missing="too few pairs",
)

NEIGHBOUR_ENRICHMENT = ReadingSpec(
    name="neighbour_enrichment",
    label="neighbour enrichment",
    compute=lambda r: neighbour_enrichment(r.mask, r.shape),
    null="random masks of equal C_in: 1",
    missing="too few pairs",
    show=TABLES - {"console"},
)

MASS_WITHIN_R = ReadingSpec(
    name="mass_within_r",
    label=f"S_sc mass < {MASS_RADIUS:g} px",
    compute=lambda r: mass_within_r(r.mask, r.shape),
    null="random masks of equal C_in: the exact fraction of pixel pairs that close",
    digits=3,
    missing="too few pairs",
    show=TABLES - {"console"},
)

LOCALITY_RATIO = ReadingSpec(
    name="locality_ratio",
    label="pair-distance ratio",
    compute=lambda r: pair_distance_locality(r.mask, r.shape).ratio,
    null="random masks of equal C_in: 1",
    spread=False,
    show=TABLES - {"console"},
)
