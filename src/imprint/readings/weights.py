"""Readings of the first layer's trained weights, computed by ``imprint analyze``."""

from __future__ import annotations

from imprint.analysis.connectivity import ipr_excess_reading, ipr_reading
from imprint.readings.base import ReadingInputs, ReadingSpec


def _ipr(r: ReadingInputs):
    assert r.weights is not None  # needs = {"weights"}
    return ipr_reading(r.weights, r.mask.sum(dim=1))


IPR = ReadingSpec(
    name="ipr_l0",
    label="weight IPR, layer 0",
    compute=_ipr,
    null="the mean over the same units of 3/(C_in+2): Gaussian weights on each unit's inputs",
    stage="analysis",
    needs=frozenset({"weights"}),
    digits=3,
    show=frozenset({"rounds", "group"}),
)


def _ipr_excess(r: ReadingInputs):
    assert r.weights is not None  # needs = {"weights"}
    return ipr_excess_reading(r.weights, r.mask.sum(dim=1))


IPR_EXCESS = ReadingSpec(
    name="ipr_excess_l0",
    label="weight IPR over its null, layer 0",
    compute=_ipr_excess,
    null="0: each unit's IPR against 3/(C_in+2), paired, bootstrapped over units",
    stage="analysis",
    needs=frozenset({"weights"}),
    digits=3,
    show=frozenset({"rounds", "group"}),
)
