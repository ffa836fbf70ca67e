"""The analyses that `imprint analyze` runs and `imprint report` shows: registry entries.

An entry is a name, a compute function (one round's masks, weights and data -> a
:class:`Result`: numbers for results.json, arrays for arrays.npz, what the figures
draw, or the reason it cannot run), a plot function (the result -> its figures, drawn
without recomputing anything), a file stem and a caption per figure, and the report
section it belongs to. :data:`ROUND_ANALYSES` run on each analysed round (into
``round_NNN/``); :data:`OVER_ROUNDS` draw every completed round of a run or a group
(into ``analysis/``). `imprint.analyze` writes from these entries and `imprint.report`
lays out :data:`SECTIONS` from the same entries, so the two cannot disagree.

To add an analysis: write its compute and plot functions (in per_round.py, or in a
module of your own) and add one ``Analysis(...)`` line to :data:`ROUND_ANALYSES` in
per_round.py (``OverRounds(...)`` to :data:`OVER_ROUNDS` in over_rounds.py). Its
figures then appear in RUN/analysis and in report.html; a compute that returns
``skip("why")`` puts that reason in the report instead. A section not in
:data:`SECTIONS` (base.py) is placed after them; the comparison page's panels are
:data:`COMPARE_PANELS` (panels.py).

This package works on masks, weights and data; it never reads run folders.
"""

from __future__ import annotations

from imprint.analyses.base import (
    ABLATION,
    ACCURACY,
    CLASS_RESPONSE,
    CONNECTIVITY,
    CURVES,
    EVOLUTION,
    GALLERIES,
    INVARIANCE,
    LOCALITY_MAPS,
    NON_GAUSSIANITY,
    PIXEL_MAP,
    SCALAR_LOCALITY,
    SECTIONS,
    Analysis,
    AnalysisOptions,
    Figure,
    History,
    Layer,
    OverRounds,
    Panel,
    Result,
    Round,
    Section,
    Seeds,
    binomial_sd,
    finite_value,
    hidden_layers,
    no_data,
    no_geometry,
    skip,
    unit_labels,
)
from imprint.analyses.over_rounds import OVER_ROUNDS
from imprint.analyses.panels import COMPARE_PANELS
from imprint.analyses.per_round import ROUND_ANALYSES

__all__ = [
    "ROUND_ANALYSES",
    "OVER_ROUNDS",
    "COMPARE_PANELS",
    "ABLATION",
    "ACCURACY",
    "Analysis",
    "AnalysisOptions",
    "CLASS_RESPONSE",
    "CONNECTIVITY",
    "CURVES",
    "EVOLUTION",
    "Figure",
    "GALLERIES",
    "History",
    "INVARIANCE",
    "LOCALITY_MAPS",
    "Layer",
    "NON_GAUSSIANITY",
    "OverRounds",
    "PIXEL_MAP",
    "Panel",
    "Result",
    "Round",
    "SCALAR_LOCALITY",
    "SECTIONS",
    "Section",
    "Seeds",
    "binomial_sd",
    "finite_value",
    "hidden_layers",
    "no_data",
    "no_geometry",
    "skip",
    "unit_labels",
]
