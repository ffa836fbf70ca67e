"""Readings of the first layer's trained weights, computed by ``imprint analyze``."""

from __future__ import annotations

from imprint.analysis.connectivity import ipr_reading
from imprint.readings.base import ReadingInputs, ReadingSpec


def _ipr(r: ReadingInputs):
    assert r.weights is not None  # needs = {"weights"}
    return ipr_reading(r.weights, r.mask.sum(dim=1))


IPR = ReadingSpec(
    name="ipr_l0",
    label="weight IPR, layer 0",
    compute=_ipr,
    null="3/(D+2): Gaussian weights over all D inputs",
    stage="analysis",
    needs=frozenset({"weights"}),
    digits=3,
    show=frozenset({"rounds", "group"}),
)
