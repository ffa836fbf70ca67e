"""Readings of the first hidden layer's activity on the data, computed by ``imprint
analyze`` when the data can be loaded."""

from __future__ import annotations

from imprint.analysis.activity import kurtosis_reading, shuffle_within_units
from imprint.readings.base import ReadingInputs, ReadingSpec


def _kurtosis(r: ReadingInputs):
    assert r.activity is not None and r.weights is not None  # needs data and weights
    shuffled = r.activity(shuffle_within_units(r.weights))
    reading, _ = kurtosis_reading(r.activity(), r.mask.sum(dim=1).cpu() > 0, shuffled)
    return reading


KURTOSIS = ReadingSpec(
    name="kurtosis_l0",
    label="excess kurtosis, layer 0",
    compute=_kurtosis,
    null="the same units with their weights shuffled within each unit's inputs",
    stage="analysis",
    needs=frozenset({"data", "weights"}),
    show=frozenset({"rounds", "group"}),
)
