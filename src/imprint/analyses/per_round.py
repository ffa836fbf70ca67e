"""The entries that run on each analysed round (:data:`ROUND_ANALYSES`): compute (a
:class:`Round` -> a :class:`Result`) and plot (the result -> its figures) functions,
and one ``Analysis(...)`` line each."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from imprint.analyses.base import (
    ABLATION,
    CLASS_RESPONSE,
    CONNECTIVITY,
    CURVES,
    GALLERIES,
    INVARIANCE,
    LOCALITY_MAPS,
    NON_GAUSSIANITY,
    PIXEL_MAP,
    Analysis,
    Figure,
    Result,
    Round,
    binomial_sd,
    finite_value,
    no_data,
    no_geometry,
    skip,
    unit_labels,
)
from imprint.analyses.pooled import (
    pool_ablation,
    pool_connectivity,
    pool_curves,
    pool_locality_maps,
    pool_pixel_map,
    quiet_share,
)
from imprint.analysis.ablation import ABLATION_MODES, node_ablation
from imprint.analysis.activity import kurtosis_reading
from imprint.analysis.connectivity import QUIET_FRACTION, ipr_reading, pixel_map, quiet_pixels
from imprint.analysis.invariance import translational_invariance
from imprint.analysis.locality import to_image_space
from imprint.analysis.maps import connection_resolved_maps, locality_maps, resolved_edges
from imprint.analysis.response import class_response
from imprint.analysis.units import select_units, unit_images
from imprint.plots import (
    plot_cin_histogram,
    plot_connection_resolved,
    plot_curves,
    plot_displacement_maps,
    plot_enrichment_map,
    plot_gallery,
    plot_pixel_map,
)
from imprint.readings import (
    READINGS,
    ReadingInputs,
    compute_readings,
    json_safe,
    reading_columns,
)
from imprint.readings.pixel_usage import pixel_usage_map
from imprint.train import evaluate
from imprint.unit_plots import plot_ablation, plot_class_response

__all__ = [
    "ROUND_ANALYSES",
]


# ----------------------------------------------------------------- per-round analyses


def _curves(r: Round, layer: int) -> Result:
    return Result(shown={"curves": r.curves, "title": f"round {r.index}"})


def _plot_curves(res: Result) -> list[Any]:
    s = res.shown
    return [plot_curves(s["curves"], title=s["title"], spread=s.get("spread"))]


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


QUIET_SAMPLE = 20000  # training images the pixels' sd is taken over


def _pixel_map(r: Round, layer: int) -> Result:
    if reason := no_geometry(r):
        return skip(reason)
    pmap = pixel_map(r.layer(0).image, r.shape, binary=True)
    arrays = {"pixel_map": pmap.numpy()}
    shown: dict[str, Any] = {"map": pmap}
    numbers: dict[str, Any] = {}
    if r.data is not None and r.data.x_train.shape[0] >= 2:
        images = to_image_space(r.data.x_train[:QUIET_SAMPLE].cpu(), r.perm)
        quiet = quiet_pixels(images, r.shape).numpy()
        share = quiet_share(pmap.numpy(), quiet)
        numbers["pixel_map"] = {
            "quiet_threshold": f"sd below {QUIET_FRACTION:.0%} of the median pixel's",
            "quiet_pixels": int(quiet.sum()),
            "pixels": int(quiet.size),
            "quiet_share": finite_value(share),
        }
        arrays["quiet_pixels"] = quiet
        shown |= {"quiet": quiet, "share": share}
    return Result(numbers, arrays, shown)


def _plot_pixel_map(res: Result) -> list[Any]:
    s = res.shown
    title = s.get("title", "connections per input pixel")
    return [plot_pixel_map(s["map"], title, quiet=s.get("quiet"), share=s.get("share"))]


def _locality_maps(r: Round, layer: int) -> Result:
    if reason := no_geometry(r):
        return skip(reason)
    connected = r.layer(layer).image > 0
    maps = locality_maps(connected, r.shape)
    stored = [spec.name for spec in READINGS.values() if spec.stage == "round"]
    if layer == 0 and all(name in r.metrics for name in stored):
        readings = reading_columns(r.metrics, stored)  # the loop's, read back: not redone
    else:  # a deeper layer's effective connectivity, or a folder from before the registry
        readings = compute_readings(ReadingInputs(connected, r.shape), "round")
    expected = pixel_usage_map(connected, r.shape)
    return Result(
        json_safe(readings),
        {
            f"s_sc_l{layer}": maps.s_sc.numpy(),
            f"s_dc_l{layer}": maps.s_dc.numpy(),
            f"s_sc_pixel_usage_l{layer}": expected.numpy(),
        },
        {
            "s_sc": maps.s_sc,
            "s_dc": maps.s_dc if r.shape[0] > 1 else None,
            "expected": expected,
            "title": f"layer {layer}, round {r.index}",
        },
    )


def _plot_locality_maps(res: Result) -> list[Any]:
    s = res.shown
    return [
        plot_displacement_maps(s["s_sc"], s["s_dc"], title=s["title"]),
        plot_enrichment_map(s["s_sc"], s["expected"], f"S_sc over pixel usage, {s['title']}"),
    ]


def _connection_resolved(r: Round, layer: int) -> Result:
    if reason := no_geometry(r):
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
    if reason := no_geometry(r):
        return skip(reason)
    one = r.layer(layer)
    top = select_units(one.conn.c_in, "most", r.options.gallery_size)
    return Result(
        shown={
            "masks": unit_images(one.image.double(), r.shape, top),
            "weights": unit_images(one.weights_image, r.shape, top),
            "labels": unit_labels(top, one.conn.c_in),
            "masks_title": f"layer {layer}: {_of(len(top), int((one.conn.c_in > 0).sum()))} "
            f"connected units, most connected first (unit: C_in), round {r.index}",
            "weights_title": f"layer {layer}: weighted masks of the {len(top)} most connected "
            "units",
        }
    )


def _of(shown: int, total: int) -> str:
    """How many a figure shows of how many there are: "24 of 117", or "all 117"."""
    return f"all {total}" if shown >= total else f"{shown} of {total}"


def _plot_galleries(res: Result) -> list[Any]:
    s = res.shown
    return [
        plot_gallery(s["masks"], s["masks_title"], s["labels"]),
        plot_gallery(s["weights"], s["weights_title"], s["labels"], signed=True),
    ]


def _more_galleries(r: Round, layer: int) -> Result:
    if reason := no_geometry(r):
        return skip(reason)
    one = r.layer(0)
    shown = {}
    pool = {"least": int((one.conn.c_in >= 2).sum()), "sample": int((one.conn.c_in > 0).sum())}
    for mode, what in (("least", "least connected (C_in >= 2)"), ("sample", "sampled")):
        picked = select_units(one.conn.c_in, mode, r.options.gallery_size, r.options.seed)
        shown[mode] = (
            unit_images(one.image.double(), r.shape, picked),
            f"layer 0: {_of(len(picked), pool[mode])} {what} units",
            unit_labels(picked, one.conn.c_in),
        )
    return Result(shown=shown)


def _plot_more_galleries(res: Result) -> list[Any]:
    return [plot_gallery(*res.shown["least"]), plot_gallery(*res.shown["sample"])]


INVARIANCE_ROWS, INVARIANCE_COLUMNS = 8, 12  # clusters shown, members shown of each


def _invariance(r: Round, layer: int) -> Result:
    if reason := no_geometry(r):
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
    shifted = [c for c in inv.clusters if c.n_positions >= 2]
    rows = shifted[:INVARIANCE_ROWS]
    members = [m for c in rows for m in c.members[:INVARIANCE_COLUMNS]]
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
            f"{inv.null_fraction_shifted:.0%})\nshown: the {len(rows)} largest of "
            f"{len(shifted)} clusters, up to {INVARIANCE_COLUMNS} members each (of "
            f"{', '.join(str(len(c.members)) for c in rows)})",
            "labels": [
                f"c{i} u{m}" for i, c in enumerate(rows) for m in c.members[:INVARIANCE_COLUMNS]
            ],
        }
    return Result({"invariance": _invariance_json(inv)}, shown=shown)


def _plot_invariance(res: Result) -> list[Any]:
    s = res.shown
    if s["labels"] is None:
        return [plot_gallery(s["images"], s["title"])]
    return [plot_gallery(s["images"], s["title"], s["labels"], columns=INVARIANCE_COLUMNS)]


def _invariance_json(inv: Any) -> dict[str, Any]:
    n = max(len(inv.units), 1)
    return {
        "units": list(inv.units),
        "threshold": inv.threshold,
        "fraction_shifted": finite_value(inv.fraction_shifted),
        # binomial sd of a fraction of n analysed units
        "fraction_shifted_sd": finite_value(binomial_sd(inv.fraction_shifted, n)),
        "null_fraction_shifted": finite_value(inv.null_fraction_shifted),
        "null_fraction_shifted_sd": finite_value(binomial_sd(inv.null_fraction_shifted, n)),
        "mean_best_similarity": finite_value(inv.mean_best_similarity),
        "null_mean_best_similarity": finite_value(inv.null_mean_best_similarity),
        "weight_similarity": finite_value(inv.weight_similarity),
        "weight_similarity_null": finite_value(inv.weight_similarity_null),
        "clusters": [
            {
                "members": list(c.members),
                "positions": [list(p) for p in c.positions],
                "n_positions": c.n_positions,
                "spread": c.spread,
                "weight_similarity": finite_value(c.weight_similarity),
                "weight_similarity_null": finite_value(c.weight_similarity_null),
            }
            for c in inv.clusters
        ],
    }


def _ablation_points(n_units: int, points: int) -> list[int]:
    raw = np.unique(np.round(np.linspace(0, n_units, points)).astype(int))
    return [int(v) for v in raw]


def _ablation(r: Round, layer: int) -> Result:
    if reason := no_data(r, "node ablation"):
        return skip(reason)
    data = r.data
    assert data is not None
    c_in0 = r.c_in0
    points = _ablation_points(c_in0.numel(), r.options.ablation_points)
    curves = [
        node_ablation(
            r.model,
            lambda model: evaluate(model, data, r.config.train.eval_batch_size).top1,
            c_in0,
            points,
            mode,
            r.options.seed,
        )
        for mode in ABLATION_MODES
    ]
    n_val = data.x_val.shape[0]
    numbers = {
        c.mode: {
            "removed": c.removed,
            "top1": c.top1,
            # binomial sd of an accuracy over n_val validation images
            "top1_sd": [math.sqrt(max(p * (1 - p), 0.0) / n_val) for p in c.top1],
        }
        for c in curves
    }
    shown = {"curves": curves, "units": c_in0.numel(), "chance": 1 / data.num_classes}
    return Result({"ablation": numbers, "ablation_chance": 1 / data.num_classes}, shown=shown)


def _plot_ablation(res: Result) -> list[Any]:
    s = res.shown
    return [
        plot_ablation(
            s["curves"],
            s["units"],
            baseline=s["chance"],
            spread=s.get("spread"),
            difference=s.get("difference"),
            seeds=s.get("seeds"),
        )
    ]


def _kurtosis(r: Round, layer: int) -> Result:
    if reason := no_data(r, "the pre-activation kurtosis"):
        return skip(reason)
    connected = r.c_in0 > 0
    reading, kurt = kurtosis_reading(r.activity, connected, r.shuffled_activity)
    if kurt is None:
        return Result({"kurtosis": None})
    columns = json_safe(reading.columns("mean"))
    return Result(
        {"kurtosis": {**columns, "median": finite_value(kurt.median), "null": reading.null}}
    )


def _class_response(r: Round, layer: int) -> Result:
    if reason := no_data(r, "the class response"):
        return skip(reason)
    assert r.data is not None
    pre = r.activity
    labels = r.data.y_val[: pre.shape[0]].cpu()
    post = torch.relu(pre).double()  # (n, units): what the next layer sees
    response = class_response(post, labels, r.data.num_classes, seed=r.options.seed)
    top = select_units(r.c_in0, "most", 24)
    numbers = {
        "class_response": {
            "mean_independence": finite_value(response.mean_independence),
            "null_mean_independence": finite_value(response.null_mean_independence),
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
        pool=pool_curves,
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
        pool=pool_connectivity,
    ),
    Analysis("ipr", CONNECTIVITY, (), _ipr, _no_figures, every_layer=True),
    Analysis(
        "pixel_map",
        PIXEL_MAP,
        (
            Figure(
                "pixel_map",
                "Connections per input pixel: where the first layer still looks. With the "
                "data at hand, x marks quiet pixels (sd over the training images below "
                "10% of the median pixel's: they barely vary, so a connection to one acts "
                "like a bias) and the title gives their share of the connections beside "
                "their share of the pixels (what connections spread evenly would give).",
            ),
        ),
        _pixel_map,
        _plot_pixel_map,
        pool=pool_pixel_map,
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
            Figure(
                "pixel_usage_map_l{l}",
                "S_sc(d) of layer {l} over what its pixel usage alone gives (the "
                "configuration model: each unit's C_in and each pixel's connections kept), "
                "log2: a red centre is locality beyond the pixels the layer uses.",
            ),
        ),
        _locality_maps,
        _plot_locality_maps,
        every_layer=True,
        pool=pool_locality_maps,
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
        pool=pool_ablation,
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
