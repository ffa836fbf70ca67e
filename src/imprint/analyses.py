"""The analyses that `imprint analyze` runs and `imprint report` shows: registry entries.

An entry is a name, a compute function (one round's masks, weights and data -> a
:class:`Result`: numbers for results.json, arrays for arrays.npz, what the figures
draw, or the reason it cannot run), a plot function (the result -> its figures, drawn
without recomputing anything), a file stem and a caption per figure, and the report
section it belongs to. :data:`ROUND_ANALYSES` run on each analysed round (into
``round_NNN/``); :data:`OVER_ROUNDS` draw every completed round of a run or a group
(into ``analysis/``). `imprint.analyze` writes from these entries and `imprint.report`
lays out :data:`SECTIONS` from the same entries, so the two cannot disagree.

To add an analysis: write its compute and plot functions (here, or in a module of your
own) and add one ``Analysis(...)`` line to :data:`ROUND_ANALYSES` (``OverRounds(...)``
to :data:`OVER_ROUNDS`). Its figures then appear in RUN/analysis and in report.html; a
compute that returns ``skip("why")`` puts that reason in the report instead. A section
not in :data:`SECTIONS` is placed after them.

This module works on masks, weights and data; it never reads run folders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from imprint.analysis.ablation import ABLATION_MODES, node_ablation
from imprint.analysis.activity import hidden_activity, kurtosis_reading
from imprint.analysis.connectivity import (
    Connectivity,
    connectivity,
    effective_mask,
    effective_weights,
    ipr_reading,
    pixel_map,
)
from imprint.analysis.invariance import class_response, translational_invariance
from imprint.analysis.locality import MASS_RADIUS, to_image_space
from imprint.analysis.maps import connection_resolved_maps, locality_maps, resolved_edges
from imprint.analysis.units import select_units, unit_images
from imprint.config import Config
from imprint.data import ImageData
from imprint.model import FCN, build_model
from imprint.plots import (
    Animation,
    plot_ablation,
    plot_accuracy_vs_remaining,
    plot_cin_histogram,
    plot_class_response,
    plot_connection_resolved,
    plot_curves,
    plot_displacement_maps,
    plot_gallery,
    plot_pixel_map,
    plot_scalar_over_rounds,
)
from imprint.readings import ReadingInputs, compute_readings, json_safe

__all__ = [
    "COMPARE_PANELS",
    "Panel",
    "AnalysisOptions",
    "Analysis",
    "Figure",
    "History",
    "OverRounds",
    "OVER_ROUNDS",
    "Result",
    "Round",
    "ROUND_ANALYSES",
    "Section",
    "SECTIONS",
    "hidden_layers",
    "skip",
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
    metrics: dict[str, Any]  # the round's metrics.json
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
        assert self.data is not None
        model = build_model(self.config.model, self.data.input_dim, self.data.num_classes, seed=0)
        model.load_state_dict(self.state)
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


@dataclass(frozen=True)
class Analysis:
    """A per-round analysis. ``compute(round, layer)`` runs for every hidden layer when
    ``every_layer``, else once with layer 0; ``plot(result)`` returns one figure per
    entry of ``figures``, in order."""

    name: str
    section: Section
    figures: tuple[Figure, ...]
    compute: Callable[[Round, int], Result]
    plot: Callable[[Result], Sequence[Any]]
    every_layer: bool = False

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


def _finite(value: float) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) else None


def _binomial_sd(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if math.isfinite(p) and 0 <= p <= 1 else math.nan


def _no_geometry(r: Round) -> str:
    return f"inputs of shape {r.shape} have no 2-D geometry" if not r.geometry else ""


def _no_data(r: Round, what: str) -> str:
    return f"no data: {what} needs the dataset ({r.data_note})" if r.data is None else ""


def _labels(units: torch.Tensor, c_in: torch.Tensor) -> list[str]:
    return [f"{int(u)}: {int(c_in[u])}" for u in units]


# ----------------------------------------------------------------- per-round analyses


def _curves(r: Round, layer: int) -> Result:
    return Result(shown={"curves": r.curves, "title": f"round {r.index}"})


def _plot_curves(res: Result) -> list[Any]:
    return [plot_curves(res.shown["curves"], title=res.shown["title"])]


def _connectivity(r: Round, layer: int) -> Result:
    conn = r.layer(layer).conn
    numbers = {
        "units": conn.n_units,
        "disconnected": conn.n_disconnected,
        "c_in_mean": float(conn.c_in.double().mean()),
        "c_in_max": int(conn.c_in.max()),
    }
    title = (
        f"layer {layer}: C_in ({conn.n_units - conn.n_disconnected} connected, "
        f"{conn.n_disconnected} disconnected)"
    )
    return Result(
        numbers, {f"c_in_l{layer}": conn.c_in.numpy()}, {"c_in": conn.c_in, "title": title}
    )


def _plot_connectivity(res: Result) -> list[Any]:
    return [plot_cin_histogram(res.shown["c_in"], title=res.shown["title"])]


def _ipr(r: Round, layer: int) -> Result:
    one = r.layer(layer)
    return Result(json_safe(ipr_reading(one.weights, one.conn.c_in).columns("ipr_mean")))


def _no_figures(res: Result) -> list[Any]:
    return []


def _pixel_map(r: Round, layer: int) -> Result:
    if reason := _no_geometry(r):
        return skip(reason)
    pmap = pixel_map(r.layer(0).image, r.shape, binary=True)
    return Result(arrays={"pixel_map": pmap.numpy()}, shown={"map": pmap})


def _plot_pixel_map(res: Result) -> list[Any]:
    return [plot_pixel_map(res.shown["map"])]


def _locality_maps(r: Round, layer: int) -> Result:
    if reason := _no_geometry(r):
        return skip(reason)
    connected = r.layer(layer).image > 0
    maps = locality_maps(connected, r.shape)
    return Result(
        json_safe(compute_readings(ReadingInputs(connected, r.shape), "round")),
        {f"s_sc_l{layer}": maps.s_sc.numpy(), f"s_dc_l{layer}": maps.s_dc.numpy()},
        {
            "s_sc": maps.s_sc,
            "s_dc": maps.s_dc if r.shape[0] > 1 else None,
            "title": f"layer {layer}, round {r.index}",
        },
    )


def _plot_locality_maps(res: Result) -> list[Any]:
    s = res.shown
    return [plot_displacement_maps(s["s_sc"], s["s_dc"], title=s["title"])]


def _connection_resolved(r: Round, layer: int) -> Result:
    if reason := _no_geometry(r):
        return skip(reason)
    mask = r.layer(0).image > 0
    edges = resolved_edges(mask.sum(dim=1), r.options.bin_width)
    if len(edges) < 2:
        return skip("no unit has two inputs: there is no pair to map")
    resolved = connection_resolved_maps(mask, r.shape, list(edges))
    shown = [i for i in range(len(resolved.n_units)) if int(resolved.n_units[i]) > 0]
    return Result(
        arrays={
            "resolved_s_sc_l0": resolved.s_sc.numpy(),
            "resolved_edges_l0": np.asarray(resolved.edges),
        },
        shown={
            "maps": [resolved.s_sc[i] for i in shown],
            "labels": [
                f"C_in {_span(resolved.edges[i], resolved.edges[i + 1] - 1)}: "
                f"{int(resolved.n_units[i])} unit{'s' if int(resolved.n_units[i]) != 1 else ''}"
                for i in shown
            ],
        },
    )


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def _plot_connection_resolved(res: Result) -> list[Any]:
    return [plot_connection_resolved(res.shown["maps"], res.shown["labels"])]


def _galleries(r: Round, layer: int) -> Result:
    if reason := _no_geometry(r):
        return skip(reason)
    one = r.layer(layer)
    top = select_units(one.conn.c_in, "most", r.options.gallery_size)
    return Result(
        shown={
            "masks": unit_images(one.image.double(), r.shape, top),
            "weights": unit_images(one.weights_image, r.shape, top),
            "labels": _labels(top, one.conn.c_in),
            "masks_title": f"layer {layer}: the "
            f"{len(top)} most connected units (unit: C_in), round {r.index}",
            "weights_title": f"layer {layer}: weighted masks of the {len(top)} most connected "
            "units",
        }
    )


def _plot_galleries(res: Result) -> list[Any]:
    s = res.shown
    return [
        plot_gallery(s["masks"], s["masks_title"], s["labels"]),
        plot_gallery(s["weights"], s["weights_title"], s["labels"], signed=True),
    ]


def _more_galleries(r: Round, layer: int) -> Result:
    if reason := _no_geometry(r):
        return skip(reason)
    one = r.layer(0)
    shown = {}
    for mode, what in (("least", "least connected (C_in >= 2)"), ("sample", "sampled")):
        picked = select_units(one.conn.c_in, mode, r.options.gallery_size, r.options.seed)
        shown[mode] = (
            unit_images(one.image.double(), r.shape, picked),
            f"layer 0: {len(picked)} {what} units",
            _labels(picked, one.conn.c_in),
        )
    return Result(shown=shown)


def _plot_more_galleries(res: Result) -> list[Any]:
    return [plot_gallery(*res.shown["least"]), plot_gallery(*res.shown["sample"])]


def _invariance(r: Round, layer: int) -> Result:
    if reason := _no_geometry(r):
        return skip(reason)
    one = r.layer(0)
    options = r.options
    inv = translational_invariance(
        one.image > 0,
        one.weights_image,
        r.shape,
        threshold=options.invariance_threshold,
        max_units=options.invariance_units,
        seed=options.seed,
    )
    # the largest clusters, one row each: members' masks side by side
    rows = [c for c in inv.clusters if c.n_positions >= 2][:8]
    members = [m for c in rows for m in c.members[:12]]
    if not members:
        shown = {
            "images": torch.zeros((1, *r.shape)),
            "title": f"no cluster of shifted copies found (threshold {inv.threshold})",
            "labels": None,
        }
    else:
        shown = {
            "images": unit_images(one.image.double(), r.shape, torch.tensor(members)),
            "title": f"masks equal up to a shift: {inv.fraction_shifted:.0%} of "
            f"{len(inv.units)} units in shifted clusters (random masks: "
            f"{inv.null_fraction_shifted:.0%})",
            "labels": [f"c{i} u{m}" for i, c in enumerate(rows) for m in c.members[:12]],
        }
    return Result({"invariance": _invariance_json(inv)}, shown=shown)


def _plot_invariance(res: Result) -> list[Any]:
    s = res.shown
    if s["labels"] is None:
        return [plot_gallery(s["images"], s["title"])]
    return [plot_gallery(s["images"], s["title"], s["labels"], columns=12)]


def _invariance_json(inv: Any) -> dict[str, Any]:
    n = max(len(inv.units), 1)
    return {
        "units": list(inv.units),
        "threshold": inv.threshold,
        "fraction_shifted": _finite(inv.fraction_shifted),
        # binomial sd of a fraction of n analysed units
        "fraction_shifted_sd": _finite(_binomial_sd(inv.fraction_shifted, n)),
        "null_fraction_shifted": _finite(inv.null_fraction_shifted),
        "null_fraction_shifted_sd": _finite(_binomial_sd(inv.null_fraction_shifted, n)),
        "mean_best_similarity": _finite(inv.mean_best_similarity),
        "null_mean_best_similarity": _finite(inv.null_mean_best_similarity),
        "weight_similarity": _finite(inv.weight_similarity),
        "weight_similarity_null": _finite(inv.weight_similarity_null),
        "clusters": [
            {
                "members": list(c.members),
                "positions": [list(p) for p in c.positions],
                "n_positions": c.n_positions,
                "spread": c.spread,
                "weight_similarity": _finite(c.weight_similarity),
                "weight_similarity_null": _finite(c.weight_similarity_null),
            }
            for c in inv.clusters
        ],
    }


def _ablation_points(n_units: int, points: int) -> list[int]:
    raw = np.unique(np.round(np.linspace(0, n_units, points)).astype(int))
    return [int(v) for v in raw]


def _ablation(r: Round, layer: int) -> Result:
    if reason := _no_data(r, "node ablation"):
        return skip(reason)
    assert r.data is not None
    c_in0 = r.c_in0
    points = _ablation_points(c_in0.numel(), r.options.ablation_points)
    curves = [
        node_ablation(
            r.model, r.data, c_in0, points, mode, r.options.seed, r.config.train.eval_batch_size
        )
        for mode in ABLATION_MODES
    ]
    n_val = r.data.x_val.shape[0]
    numbers = {
        c.mode: {
            "removed": c.removed,
            "top1": c.top1,
            # binomial sd of an accuracy over n_val validation images
            "top1_sd": [math.sqrt(max(p * (1 - p), 0.0) / n_val) for p in c.top1],
        }
        for c in curves
    }
    shown = {"curves": curves, "units": c_in0.numel(), "chance": 1 / r.data.num_classes}
    return Result({"ablation": numbers}, shown=shown)


def _plot_ablation(res: Result) -> list[Any]:
    s = res.shown
    return [plot_ablation(s["curves"], s["units"], baseline=s["chance"])]


def _kurtosis(r: Round, layer: int) -> Result:
    if reason := _no_data(r, "the pre-activation kurtosis"):
        return skip(reason)
    connected = r.c_in0 > 0
    reading, kurt = kurtosis_reading(r.activity, connected)
    if kurt is None:
        return Result({"kurtosis": None})
    columns = json_safe(reading.columns("mean"))
    return Result({"kurtosis": {**columns, "median": _finite(kurt.median), "null": 0.0}})


def _class_response(r: Round, layer: int) -> Result:
    if reason := _no_data(r, "the class response"):
        return skip(reason)
    assert r.data is not None
    pre = r.activity
    labels = r.data.y_val[: pre.shape[0]].cpu()
    post = torch.relu(pre).double()  # (n, units): what the next layer sees
    response = class_response(post, labels, r.data.num_classes, seed=r.options.seed)
    top = select_units(r.c_in0, "most", 24)
    numbers = {
        "class_response": {
            "mean_independence": _finite(response.mean_independence),
            "null_mean_independence": _finite(response.null_mean_independence),
        }
    }
    shown = {
        "means": response.class_means[top],
        "spread": post.std(dim=0)[top],
        "scores": response.independence[top].tolist(),
        "units": top.tolist(),
    }
    return Result(numbers, {"class_means_l0": response.class_means.numpy()}, shown)


def _plot_class_response(res: Result) -> list[Any]:
    s = res.shown
    return [plot_class_response(s["means"], s["spread"], s["scores"], s["units"])]


# ------------------------------------------------------------------ over-round figures


def _accuracy(h: History) -> Result:
    return Result(shown={"metrics": h.metrics, "study": h.study})


def _plot_accuracy(res: Result) -> list[Any]:
    return [plot_accuracy_vs_remaining(res.shown["metrics"], study=res.shown["study"])]


def _column(h: History, name: str) -> list[float]:
    values = []
    for row in h.rows:
        try:
            values.append(float(row.get(name)))  # type: ignore[arg-type]
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
    return Result(shown={"frames": frames, "titles": titles})


def _plot_evolution(res: Result) -> list[Any]:
    return [Animation(res.shown["frames"], res.shown["titles"])]


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

ROUND_ANALYSES: tuple[Analysis, ...] = (
    Analysis(
        "curves",
        CURVES,
        (
            Figure(
                "curves",
                "Loss and accuracy over the analysed round's SGD steps: look for "
                "convergence within the round and no overfitting.",
            ),
        ),
        _curves,
        _plot_curves,
    ),
    Analysis(
        "connectivity",
        CONNECTIVITY,
        (
            Figure(
                "cin_hist_l{l}",
                "C_in of layer {l}'s units, log counts (beyond layer 0 through effective "
                "masks M1 M2 ... Ml): a mode at a few inputs and a tail, as in the paper.",
            ),
        ),
        _connectivity,
        _plot_connectivity,
        every_layer=True,
    ),
    Analysis("ipr", CONNECTIVITY, (), _ipr, _no_figures, every_layer=True),
    Analysis(
        "pixel_map",
        PIXEL_MAP,
        (
            Figure(
                "pixel_map",
                "Connections per input pixel: where the first layer still looks.",
            ),
        ),
        _pixel_map,
        _plot_pixel_map,
    ),
    Analysis(
        "locality_maps",
        LOCALITY_MAPS,
        (
            Figure(
                "locality_maps_l{l}",
                "S_sc(d) (pairs in the same channel){dc} of layer {l} (in input space "
                "through effective masks beyond layer 0): a bright centre means connected "
                "inputs are neighbours.",
            ),
        ),
        _locality_maps,
        _plot_locality_maps,
        every_layer=True,
    ),
    Analysis(
        "connection_resolved",
        LOCALITY_MAPS,
        (
            Figure(
                "connection_resolved_l0",
                "S_sc for layer-0 units binned by C_in (units with two inputs or more; bins "
                "of 10 inputs as the paper, or, when C_in is small, bins of about equal "
                "numbers of units): locality at every connectivity, not only for sparse units.",
            ),
        ),
        _connection_resolved,
        _plot_connection_resolved,
    ),
    Analysis(
        "galleries",
        GALLERIES,
        (
            Figure(
                "gallery_most_l{l}",
                "Masks of the most connected units of layer {l} (beyond layer 0 aggregated "
                "features, effective masks M1 ... Ml): look for compact blobs, bars and "
                "repeated shapes.",
            ),
            Figure(
                "gallery_weighted_most_l{l}",
                "The same units carrying their weights (beyond layer 0 aggregated weights "
                "(W1 M1) ... (Wl Ml)); red positive, blue negative.",
            ),
        ),
        _galleries,
        _plot_galleries,
        every_layer=True,
    ),
    Analysis(
        "least_and_sampled",
        GALLERIES,
        (
            Figure("gallery_least_l0", "Least connected layer-0 units (C_in >= 2)."),
            Figure("gallery_sample_l0", "A random sample of connected layer-0 units."),
        ),
        _more_galleries,
        _plot_more_galleries,
    ),
    Analysis(
        "invariance",
        INVARIANCE,
        (
            Figure(
                "invariance",
                "Masks equal up to a 2-D shift, one cluster per row: the same pattern at "
                "different positions, like a convolution filter.",
            ),
        ),
        _invariance,
        _plot_invariance,
    ),
    Analysis(
        "ablation",
        ABLATION,
        (
            Figure(
                "ablation",
                "Accuracy after removing first-layer units without retraining: if the most "
                "connected go first and accuracy drops fastest, they carry the task.",
            ),
        ),
        _ablation,
        _plot_ablation,
    ),
    Analysis("kurtosis", NON_GAUSSIANITY, (), _kurtosis, _no_figures),
    Analysis(
        "class_response",
        CLASS_RESPONSE,
        (
            Figure(
                "class_response",
                "Class-averaged activations: near-zero rows are units that respond alike "
                "to every class (generic features).",
            ),
        ),
        _class_response,
        _plot_class_response,
    ),
)

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
    plot: Callable[[Result, str], Any]


def _compare_map(r: Round) -> Result:
    if reason := _no_geometry(r):
        return skip(reason)
    return Result(shown={"s_sc": locality_maps(r.layer(0).image > 0, r.shape).s_sc})


def _compare_gallery(r: Round) -> Result:
    if reason := _no_geometry(r):
        return skip(reason)
    one = r.layer(0)
    top = select_units(one.conn.c_in, "most", r.options.gallery_size)
    return Result(shown={"images": unit_images((one.image > 0).double(), r.shape, top)})


COMPARE_PANELS: tuple[Panel, ...] = (
    Panel(
        "maps",
        "S_sc maps",
        "S_sc",
        _compare_map,
        lambda res, title: plot_displacement_maps(res.shown["s_sc"], None, title=title),
    ),
    Panel(
        "galleries",
        "Galleries",
        "most connected units",
        _compare_gallery,
        lambda res, title: plot_gallery(res.shown["images"], title, columns=9),
    ),
)
