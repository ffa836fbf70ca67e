"""Readings of the first hidden layer's activity on the data, computed by ``imprint
analyze`` when the data can be loaded."""

from __future__ import annotations

from imprint.analysis.activity import kurtosis_reading
from imprint.readings.base import ReadingInputs, ReadingSpec


def _kurtosis(r: ReadingInputs):
    assert r.activity is not None  # needs = {"data"}
    reading, _ = kurtosis_reading(r.activity(), r.mask.sum(dim=1).cpu() > 0)
    return reading


KURTOSIS = ReadingSpec(
    name="kurtosis_l0",
    label="excess kurtosis, layer 0",
    compute=_kurtosis,
    null="0: Gaussian pre-activations",
    stage="analysis",
    needs=frozenset({"data"}),
    show=frozenset({"rounds", "group"}),
)
