"""The entries drawn over every completed round of a run or a group
(:data:`OVER_ROUNDS`, from a :class:`History`)."""

from __future__ import annotations

import math
from typing import Any

from imprint.analyses.base import (
    ACCURACY,
    EVOLUTION,
    NON_GAUSSIANITY,
    SCALAR_LOCALITY,
    Figure,
    History,
    OverRounds,
    Result,
    skip,
)
from imprint.analysis.connectivity import (
    connectivity,
)
from imprint.analysis.locality import MASS_RADIUS, to_image_space
from imprint.analysis.units import select_units, unit_images
from imprint.plots import (
    Animation,
    plot_accuracy_vs_remaining,
    plot_scalar_over_rounds,
)

__all__ = [
    "OVER_ROUNDS",
]


# ------------------------------------------------------------------ over-round figures


def _accuracy(h: History) -> Result:
    return Result(shown={"metrics": h.metrics, "study": h.study})


def _plot_accuracy(res: Result) -> list[Any]:
    return [plot_accuracy_vs_remaining(res.shown["metrics"], study=res.shown["study"])]


def _column(h: History, name: str) -> list[float]:
    values = []
    for row in h.rows:
        try:
            values.append(float(row.get(name)))  # type: ignore[arg-type]  # ValueError caught
        except (TypeError, ValueError):
            values.append(math.nan)
    return values


def _scalar(h: History, name: str, label: str, null: Any, null_label: str) -> Result:
    """``name`` of rounds.csv over rounds, with its null and a ± 1 sd band."""
    return Result(
        shown={
            "metrics": h.metrics,
            "values": _column(h, name),
            "label": label,
            "null": _column(h, null) if isinstance(null, str) else null,
            "null_label": null_label,
            "spread": _column(h, f"{name}_sd"),
            "spread_label": f"± 1 sd ({h.spread_label})",
        }
    )


def _plot_scalar(res: Result) -> list[Any]:
    s = res.shown
    return [
        plot_scalar_over_rounds(
            s["metrics"],
            s["values"],
            s["label"],
            null=s["null"],
            null_label=s["null_label"],
            spread=s["spread"],
            spread_label=s["spread_label"],
        )
    ]


_NO_READINGS = "no locality readings in rounds.csv: the inputs have no 2-D geometry"


def _locality(h: History) -> Result:
    if "locality_index" not in h.rows[0]:
        return skip(_NO_READINGS)
    label = "neighbour locality index (first layer)"
    return _scalar(h, "locality_index", label, 0.0, "random masks of equal C_in (= 0)")


def _mass_within(h: History) -> Result:
    if "mass_within_r" not in h.rows[0]:
        return skip(_NO_READINGS)
    label = f"fraction of S_sc mass within {MASS_RADIUS:g} px"
    return _scalar(h, "mass_within_r", label, "mass_within_r_null", "random masks of equal C_in")


def _kurtosis_over_rounds(h: History) -> Result:
    if "kurtosis_l0" not in h.rows[0]:
        return skip("no kurtosis_l0 in rounds.csv: it needs the dataset, which was unavailable")
    label = "excess kurtosis of layer-0 pre-activations"
    return _scalar(h, "kurtosis_l0", label, 0.0, "Gaussian (= 0)")


def _evolution(h: History) -> Result:
    """The most connected units of the analysed round, followed over every round."""
    if h.round_masks is None or h.shape is None:
        return skip("drawn for single runs only")
    if not (h.shape[1] >= 2 and h.shape[2] >= 2):
        return skip(f"inputs of shape {h.shape} have no 2-D geometry")
    c_in = connectivity(h.round_masks(h.anchor)["layers.0.weight"]).c_in
    units = select_units(c_in, "most", h.options.evolution_units)
    frames, titles = [], []
    for m in h.metrics:
        index = m["round"]
        image = to_image_space(h.round_masks(index)["layers.0.weight"], h.perm).double()
        frames.append(unit_images(image, h.shape, units))
        titles.append(
            f"round {index}: {m['layer_density'][0]:.2%} of layer 0 left "
            f"({len(units)} most connected units of round {h.anchor})"
        )
    # The GIF opens on the analysed round (what a still preview shows), not on round 0's
    # dense, all-connected masks; the rounds from 0 follow.
    at = [m["round"] for m in h.metrics].index(h.anchor)
    frames.insert(0, frames[at])
    titles.insert(0, titles[at].replace(":", " (analysed; then every round from 0):", 1))
    return Result(shown={"frames": frames, "titles": titles})


def _plot_evolution(res: Result) -> list[Any]:
    return [Animation(res.shown["frames"], res.shown["titles"])]


OVER_ROUNDS: tuple[OverRounds, ...] = (
    OverRounds(
        "accuracy",
        ACCURACY,
        (
            Figure(
                "accuracy",
                "Best validation top-1 per round; the star marks the best round, the "
                "dotted line the study round (the sparsest keeping >= 97% of the dense "
                "top-1). Look for accuracy holding or rising as weights go.",
            ),
        ),
        _accuracy,
        _plot_accuracy,
    ),
    OverRounds(
        "evolution",
        EVOLUTION,
        (
            Figure(
                "evolution",
                "The analysed round's most connected units, round by round: watch "
                "diffuse masks condense into local patterns.",
            ),
        ),
        _evolution,
        _plot_evolution,
        groups=False,
        in_round_folder=True,
    ),
    OverRounds(
        "locality",
        SCALAR_LOCALITY,
        (
            Figure(
                "locality",
                "Neighbour locality index of the first layer: the excess fraction of "
                "same-channel input pairs within 1.5 px, (f - f0) / (1 - f0); 0 for random "
                "masks of equal C_in, 1 when every pair is a neighbour pair. Band: ± 1 sd.",
            ),
        ),
        _locality,
        _plot_scalar,
    ),
    OverRounds(
        "mass_within",
        SCALAR_LOCALITY,
        (
            Figure(
                "mass_within",
                f"Fraction of S_sc mass within {MASS_RADIUS:g} px against its random-mask "
                "null. Band: ± 1 sd.",
            ),
        ),
        _mass_within,
        _plot_scalar,
    ),
    OverRounds(
        "kurtosis",
        NON_GAUSSIANITY,
        (
            Figure(
                "kurtosis",
                "Excess kurtosis of first-layer pre-activations (0 = Gaussian), after "
                "Redman et al.",
            ),
        ),
        _kurtosis_over_rounds,
        _plot_scalar,
    ),
)
