"""What every analysis entry is made of: options, report sections, figures, results,
one round and the history of all rounds as the entries read them, and the comparison
page's panels."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from imprint.analysis.activity import hidden_activity, shuffle_within_units
from imprint.analysis.connectivity import (
    Connectivity,
    connectivity,
    effective_mask,
    effective_weights,
)
from imprint.analysis.locality import to_image_space
from imprint.config import Config
from imprint.data import ImageData
from imprint.model import FCN, build_model

__all__ = [
    "CONNECTIVITY",
    "binomial_sd",
    "AnalysisOptions",
    "INVARIANCE",
    "skip",
    "Layer",
    "hidden_layers",
    "PIXEL_MAP",
    "CLASS_RESPONSE",
    "Section",
    "Result",
    "ACCURACY",
    "EVOLUTION",
    "CURVES",
    "Analysis",
    "Panel",
    "NON_GAUSSIANITY",
    "SCALAR_LOCALITY",
    "Round",
    "ABLATION",
    "Figure",
    "GALLERIES",
    "no_data",
    "finite_value",
    "LOCALITY_MAPS",
    "History",
    "SECTIONS",
    "no_geometry",
    "unit_labels",
    "OverRounds",
    "Seeds",
]


@dataclass(frozen=True)
class AnalysisOptions:
    gallery_size: int = 120  # the paper shows the 120 most connected units
    evolution_units: int = 225  # the paper's movies show 225
    bin_width: int = 10  # C_in bins of the connection-resolved maps (the paper: 10)
    ablation_points: int = 12
    invariance_units: int = 128
    invariance_threshold: float = 0.9
    formats: tuple[str, ...] = ("png", "svg")
    device: str = "cpu"
    seed: int = 0


@dataclass(frozen=True)
class Section:
    """A section of report.html: its HTML id and its title."""

    id: str
    title: str


@dataclass(frozen=True)
class Figure:
    """One figure file of an entry: ``stem`` (``round_NNN/<stem>.png|svg`` for a
    per-round entry, ``analysis/<stem>.*`` over rounds) and its report caption; in
    both, ``{l}`` stands for the layer of an ``every_layer`` entry; in the caption,
    ``{dc}`` for the words on different-channel pairs, said only of images with several
    channels."""

    stem: str
    caption: str

    def file_stem(self, layer: int) -> str:
        return self.stem.replace("{l}", str(layer))

    def caption_for(self, layer: int, channels: int = 1) -> str:
        dc = " and S_dc(d) (pairs in different channels)" if channels > 1 else ""
        return self.caption.replace("{l}", str(layer)).replace("{dc}", dc)


@dataclass(frozen=True)
class Result:
    """What a compute function returns. ``numbers`` go into results.json (an
    ``every_layer`` entry's into ``layers[l]``), ``arrays`` into arrays.npz, ``shown``
    is all the plot function reads; ``skip`` (then nothing else) says why the analysis
    cannot run on this round."""

    numbers: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    shown: dict[str, Any] = field(default_factory=dict)
    skip: str = ""


def skip(reason: str) -> Result:
    return Result(skip=reason)


@dataclass(frozen=True, eq=False)
class Layer:
    """One hidden layer through its effective mask (deeper layers in input space)."""

    eff: torch.Tensor  # (units, D) path counts M1 M2 ... Ml, network input order
    image: torch.Tensor  # the same, the pixel permutation undone
    conn: Connectivity
    weights: torch.Tensor  # (units, D) aggregated weights, network input order
    weights_image: torch.Tensor


@dataclass(eq=False)
class Round:
    """One round as its analyses read it (imprint.analyze builds it from a run folder).
    The layers, the model and the first layer's activity are computed once, on first
    use, and shared by the entries that need them."""

    index: int
    masks: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]  # the final weights
    metrics: Mapping[str, Any]  # the round's metrics.json
    curves: list[dict[str, float]]  # the round's curves.csv
    shape: tuple[int, int, int]  # input (C, H, W)
    perm: torch.Tensor | None  # the pixel permutation to undo (None: not permuted)
    config: Config
    data: ImageData | None  # None: unavailable, ``data_note`` says why
    data_note: str
    options: AnalysisOptions
    _layers: dict[int, Layer] = field(default_factory=dict, repr=False)

    @property
    def geometry(self) -> bool:
        return self.shape[1] >= 2 and self.shape[2] >= 2

    @cached_property
    def hidden_layers(self) -> list[int]:
        return hidden_layers(self.masks)

    def layer(self, index: int) -> Layer:
        if index not in self._layers:
            eff = effective_mask(self.masks, index)
            weights = effective_weights(self.state, self.masks, index)
            self._layers[index] = Layer(
                eff,
                to_image_space(eff, self.perm),
                connectivity(eff),
                weights,
                to_image_space(weights, self.perm),
            )
        return self._layers[index]

    @cached_property
    def model(self) -> FCN:
        return self._model_of(self.state)

    def _model_of(self, state: dict[str, torch.Tensor]) -> FCN:
        """The net holding ``state``, in evaluation mode on the analysis device."""
        assert self.data is not None
        model = build_model(self.config.model, self.data.input_dim, self.data.num_classes, seed=0)
        model.load_state_dict(state)
        return model.to(self.options.device).eval()

    @cached_property
    def c_in0(self) -> torch.Tensor:
        """C_in of the first layer's units (from its own mask)."""
        return connectivity(self.masks["layers.0.weight"]).c_in

    @cached_property
    def activity(self) -> torch.Tensor:
        """First-layer pre-activations on the validation images, (n, units)."""
        assert self.data is not None
        return hidden_activity(self.model, self.data, layer=0)

    @cached_property
    def shuffled_activity(self) -> torch.Tensor:
        """The same with each unit's first-layer weights shuffled within its inputs
        (:func:`shuffle_within_units`): the null of the activity readings that keeps
        the mask."""
        assert self.data is not None
        shuffled = shuffle_within_units(self.state["layers.0.weight"])
        model = self._model_of({**self.state, "layers.0.weight": shuffled})
        return hidden_activity(model, self.data, layer=0)


@dataclass(frozen=True)
class Seeds:
    """One analysed round of every seed of a group, as the analysis of each seed wrote
    it (what a pooled figure reads): each seed's results.json, arrays.npz and curves."""

    index: int
    seeds: Sequence[int]
    results: Sequence[Mapping[str, Any]]
    arrays: Sequence[Mapping[str, np.ndarray]]
    curves: Sequence[Sequence[Mapping[str, float]]]

    def stacked(self, name: str) -> np.ndarray | None:
        """Array ``name`` of every seed, stacked on a leading seed axis (None when a
        seed lacks it, or when the seeds' shapes differ)."""
        found = [a.get(name) for a in self.arrays]
        if any(f is None for f in found) or len({f.shape for f in found}) != 1:  # type: ignore[union-attr]  # None excluded first
            return None
        return np.stack(found)  # type: ignore[arg-type]  # None excluded above

    @property
    def label(self) -> str:
        return f"{len(self.seeds)} seeds"


@dataclass(frozen=True)
class Analysis:
    """A per-round analysis. ``compute(round, layer)`` runs for every hidden layer when
    ``every_layer``, else once with layer 0; ``plot(result)`` returns one figure per
    entry of ``figures``, in order. ``pool(seeds, layer)``, when given, makes the same
    figures for a group from every seed's results (sums, or means with their sd over
    seeds); a group's report shows an entry without one as one seed's, labelled."""

    name: str
    section: Section
    figures: tuple[Figure, ...]
    compute: Callable[[Round, int], Result]
    plot: Callable[[Result], Sequence[Any]]
    every_layer: bool = False
    pool: Callable[[Seeds, int], Result] | None = None

    def key(self, layer: int) -> str:
        """Its name in results.json's "skipped" (``name_l{layer}`` for every_layer)."""
        return f"{self.name}_l{layer}" if self.every_layer else self.name


@dataclass(frozen=True)
class History:
    """What the over-round figures read: every completed round of a run, or of a group
    (metrics and rows are then means over seeds)."""

    metrics: Sequence[Mapping[str, Any]]  # metrics.json of each round
    rows: Sequence[Mapping[str, Any]]  # rounds.csv
    study: int  # the study round
    spread_label: str  # what the bands show: a run's bootstrap, a group's seeds
    options: AnalysisOptions
    # A run's own (None for a group): its round masks, input shape, pixel permutation,
    # and the analysed round (the evolution follows that round's units).
    round_masks: Callable[[int], dict[str, torch.Tensor]] | None = None
    shape: tuple[int, int, int] | None = None
    perm: torch.Tensor | None = None
    anchor: int = 0


@dataclass(frozen=True)
class OverRounds:
    """A figure over rounds. ``groups``: drawn for a group too (bands over seeds);
    when False, a group's report shows one seed's."""

    name: str
    section: Section
    figures: tuple[Figure, ...]
    compute: Callable[[History], Result]
    plot: Callable[[Result], Sequence[Any]]
    groups: bool = True
    # Written with the analysed round (analysis/round_NNN/), not in analysis/: a figure
    # that belongs to the round it follows (the evolution of that round's units).
    in_round_folder: bool = False


def hidden_layers(masks: Mapping[str, torch.Tensor]) -> list[int]:
    """Linear layers whose units are features (all but the output layer)."""
    n = sum(1 for name in masks if name.startswith("layers.") and name.endswith(".weight"))
    return list(range(max(1, n - 1)))


def finite_value(value: float) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) else None


def binomial_sd(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if math.isfinite(p) and 0 <= p <= 1 else math.nan


def no_geometry(r: Round) -> str:
    return f"inputs of shape {r.shape} have no 2-D geometry" if not r.geometry else ""


def no_data(r: Round, what: str) -> str:
    return f"no data: {what} needs the dataset ({r.data_note})" if r.data is None else ""


def unit_labels(units: torch.Tensor, c_in: torch.Tensor) -> list[str]:
    return [f"{int(u)}: {int(c_in[u])}" for u in units]


# ------------------------------------------------------------- the comparison page


@dataclass(frozen=True)
class Panel:
    """A figure of the comparison page: one run's round beside the other runs' at about
    the same density. ``compute`` reads the round (masks only: no data is loaded);
    ``plot`` draws its result under a title that names the run and the round."""

    id: str
    title: str  # the page section's title
    caption: str  # what the figure shows, before the run's name
    compute: Callable[[Round], Result]
    # plot(result, title, scale): ``scale`` is the largest value any of the runs side by
    # side draws (from ``scale(result)``), so that they share one colour scale
    plot: Callable[[Result, str, float | None], Any]
    scale: Callable[[Result], float] | None = None


# ---------------------------------------------------------------------------- registry

ACCURACY = Section("accuracy", "Accuracy against remaining weights")
CURVES = Section("curves", "Training and validation curves")
CONNECTIVITY = Section("connectivity", "Connectivity")
PIXEL_MAP = Section("pixel-map", "Pixel map")
LOCALITY_MAPS = Section("locality-maps", "Locality maps")
GALLERIES = Section("galleries", "Mask galleries")
EVOLUTION = Section("evolution", "Evolution over rounds")
ABLATION = Section("ablation", "Node ablation")
INVARIANCE = Section("invariance", "Translational invariance")
CLASS_RESPONSE = Section("class-response", "Class response")
SCALAR_LOCALITY = Section("scalar-locality", "Scalar locality with its null")


NON_GAUSSIANITY = Section("non-gaussianity", "Non-Gaussianity")


# The report's figure sections, in page order.
SECTIONS: tuple[Section, ...] = (
    ACCURACY,
    CURVES,
    CONNECTIVITY,
    PIXEL_MAP,
    LOCALITY_MAPS,
    GALLERIES,
    EVOLUTION,
    ABLATION,
    INVARIANCE,
    CLASS_RESPONSE,
    SCALAR_LOCALITY,
    NON_GAUSSIANITY,
)
