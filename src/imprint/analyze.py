"""`imprint analyze RUN`: every analysis of a run's rounds, written into the run folder.

This is the layer that reads run folders; the analyses themselves (imprint.analysis)
work on masks and weights only, and the figures (imprint.plots) are drawn from their
results. Layout written here (owned by this module)::

    RUN/analysis/
      rounds.csv              per round: density, accuracy, scalar locality with nulls,
                              IPR with its null, pre-activation kurtosis
      accuracy.png|svg        best top-1 against weights left, best round marked
      locality.png|svg        pair-distance locality ratio over rounds (null = 1)
      mass_within.png|svg     fraction of S_sc mass within radius r over rounds, with null
      kurtosis.png|svg        excess kurtosis of first-layer pre-activations over rounds
      evolution.gif           the same units' masks across rounds
      round_NNN/
        results.json          the round's numbers
        arrays.npz            C_in, pixel maps, S maps, ablation curves, class means
        *.png|svg             the round's figures (see FIGURES)
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imprint.analysis.ablation import ABLATION_MODES, node_ablation
from imprint.analysis.activity import excess_kurtosis, hidden_activity
from imprint.analysis.connectivity import (
    connectivity,
    effective_mask,
    effective_weights,
    ipr,
    ipr_null,
    pixel_map,
)
from imprint.analysis.invariance import class_response, translational_invariance
from imprint.analysis.locality import MASS_RADIUS, locality_readings, to_image_space
from imprint.analysis.maps import connection_resolved_maps, locality_maps
from imprint.analysis.uncertainty import across_seeds, mean_reading
from imprint.analysis.units import select_units, unit_images
from imprint.config import Config
from imprint.data import DataError, ImageData, load_dataset, pixel_permutation
from imprint.model import FCN, build_model
from imprint.plots import (
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
    save_figure,
    write_evolution_gif,
)
from imprint.runs import (
    RunFolder,
    RunFolderError,
    group_members,
    is_group,
    write_bytes,
    write_csv,
    write_text,
)

__all__ = ["AnalysisOptions", "analyze_run", "resolve_rounds", "round_readings", "RADIUS"]

RADIUS = MASS_RADIUS  # pixels: "local" for the mass-within-radius figure (a 5x5 neighbourhood)
ROUND_CHOICES = "study, best, last, all or a round number"

# Figures of one round, by file stem (a caption each, for reports).
FIGURES = {
    "curves": "training loss and validation accuracy over the round's SGD steps",
    "cin_hist_l{l}": "C_in of layer {l}'s units (effective masks beyond layer 0), log counts",
    "pixel_map": "connections per input pixel: where the first layer still looks",
    "locality_maps_l{l}": "S_sc(d), S_dc(d): a bright centre means connected inputs are neighbours",
    "connection_resolved_l0": "S_sc for units binned by C_in: locality at every connectivity",
    "gallery_most_l{l}": "masks of the most connected units (layer {l})",
    "gallery_weighted_most_l{l}": "weighted masks (aggregated weights beyond layer 0)",
    "gallery_least_l0": "masks of the least connected units with C_in >= 2",
    "gallery_sample_l0": "masks of a random sample of connected units",
    "ablation": "accuracy after removing first-layer units, no retraining",
    "invariance": "clusters of masks equal up to a shift, at different positions",
    "class_response": "class-averaged activations of the most connected units",
}


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


def resolve_rounds(
    folder: RunFolder, which: str, metrics: Sequence[dict[str, Any]] | None = None
) -> list[int]:
    """'study', 'best', 'last', 'all' or a round number -> completed round indices.

    'study' is :func:`imprint.imp.study_round` (the sparsest round keeping >= 97% of the
    dense top-1) of ``metrics`` (default: the folder's own; a group passes the mean over
    its seeds, so that every seed is read at one density)."""
    from imprint.imp import study_round

    done = folder.completed_rounds()
    if not done:
        raise RunFolderError(f"{folder.root} has no completed round to analyse.")
    if which == "all":
        return done
    if which == "last":
        return [done[-1]]
    if which in ("best", "study"):
        metrics = metrics or [folder.round_metrics(r) for r in done]
        if which == "study":
            index = study_round(metrics)
            return [index] if index in done else [done[-1]]
        return [max(metrics, key=lambda m: m["best_val_top1"])["round"]]
    try:
        index = int(which)
    except ValueError:
        raise RunFolderError(
            f"The '--round' option must be {ROUND_CHOICES}. Got {which!r}."
        ) from None
    if index not in done:
        raise RunFolderError(
            f"The '--round' option names round {index}; {folder.root} has rounds 0..{done[-1]}."
        )
    return [index]


def _hidden_layers(masks: dict[str, torch.Tensor]) -> list[int]:
    """Linear layers whose units are features (all but the output layer)."""
    n = sum(1 for name in masks if name.startswith("layers.") and name.endswith(".weight"))
    return list(range(max(1, n - 1)))


def _has_geometry(shape: tuple[int, int, int]) -> bool:
    return shape[1] >= 2 and shape[2] >= 2


def _model(config: Config, data: ImageData, state: dict[str, torch.Tensor], device: str) -> FCN:
    model = build_model(config.model, data.input_dim, data.num_classes, seed=0)
    model.load_state_dict(state)
    return model.to(device).eval()


def _ablation_points(n_units: int, points: int) -> list[int]:
    raw = np.unique(np.round(np.linspace(0, n_units, points)).astype(int))
    return [int(v) for v in raw]


def _save(fig: Any, stem: Path, options: AnalysisOptions, written: list[Path]) -> None:
    written.extend(save_figure(fig, stem, options.formats))


def _finite(value: float) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) else None


def analyze_round(
    folder: RunFolder,
    config: Config,
    index: int,
    data: ImageData | None,
    options: AnalysisOptions,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every per-round analysis of round ``index``; writes results, arrays and figures."""
    out = folder.root / "analysis" / f"round_{index:03d}"
    masks = folder.round_masks(index)
    state = folder.round_state(index, "final")
    metrics = folder.round_metrics(index)
    shape = _input_shape(folder, masks)
    perm = _permutation(config, masks)
    written: list[Path] = []
    arrays: dict[str, np.ndarray] = {}
    results: dict[str, Any] = {
        "round": index,
        "density": metrics["density"],
        "best_val_top1": metrics["best_val_top1"],
        "layers": {},
    }

    curves = _read_curves(folder, index)
    _save(plot_curves(curves, title=f"round {index}"), out / "curves", options, written)

    geometry = _has_geometry(shape)
    if not geometry:
        log(f"Inputs of shape {shape} have no 2-D geometry: spatial analyses skipped.")
    for layer in _hidden_layers(masks):
        eff = effective_mask(masks, layer)  # (units, D) path counts
        eff_image = to_image_space(eff, perm)
        conn = connectivity(eff)
        arrays[f"c_in_l{layer}"] = conn.c_in.numpy()
        layer_result: dict[str, Any] = {
            "units": conn.n_units,
            "disconnected": conn.n_disconnected,
            "c_in_mean": float(conn.c_in.double().mean()),
            "c_in_max": int(conn.c_in.max()),
        }
        _save(
            plot_cin_histogram(
                conn.c_in,
                title=f"layer {layer}: C_in "
                f"({conn.n_units - conn.n_disconnected} connected, "
                f"{conn.n_disconnected} disconnected)",
            ),
            out / f"cin_hist_l{layer}",
            options,
            written,
        )
        weights = effective_weights(state, masks, layer)  # (units, D) aggregated
        layer_result.update(
            _json_safe(
                mean_reading(ipr(weights[conn.c_in > 0]), null=ipr_null(eff.shape[1])).columns(
                    "ipr_mean"
                )
            )
        )
        if geometry:
            maps = locality_maps(eff_image > 0, shape)
            arrays[f"s_sc_l{layer}"] = maps.s_sc.numpy()
            arrays[f"s_dc_l{layer}"] = maps.s_dc.numpy()
            layer_result.update(_json_safe(locality_readings(eff_image > 0, shape)))
            _save(
                plot_displacement_maps(
                    maps.s_sc,
                    maps.s_dc if shape[0] > 1 else None,
                    title=f"layer {layer}, round {index}",
                ),
                out / f"locality_maps_l{layer}",
                options,
                written,
            )
            images_of = eff_image.double()
            weights_of = to_image_space(weights, perm)
            top = select_units(conn.c_in, "most", options.gallery_size)
            labels = [f"{int(u)}: {int(conn.c_in[u])}" for u in top]
            _save(
                plot_gallery(
                    unit_images(images_of, shape, top),
                    f"layer {layer}: the "
                    f"{len(top)} most connected units (unit: C_in), round {index}",
                    labels,
                ),
                out / f"gallery_most_l{layer}",
                options,
                written,
            )
            _save(
                plot_gallery(
                    unit_images(weights_of, shape, top),
                    f"layer {layer}: weighted masks of the {len(top)} most connected units",
                    labels,
                    signed=True,
                ),
                out / f"gallery_weighted_most_l{layer}",
                options,
                written,
            )
            if layer == 0:
                for mode, what in (("least", "least connected (C_in >= 2)"), ("sample", "sampled")):
                    picked = select_units(conn.c_in, mode, options.gallery_size, options.seed)
                    _save(
                        plot_gallery(
                            unit_images(images_of, shape, picked),
                            f"layer 0: {len(picked)} {what} units",
                            [f"{int(u)}: {int(conn.c_in[u])}" for u in picked],
                        ),
                        out / f"gallery_{mode}_l0",
                        options,
                        written,
                    )
                resolved = connection_resolved_maps(eff_image > 0, shape, options.bin_width)
                arrays["resolved_s_sc_l0"] = resolved.s_sc.numpy()
                arrays["resolved_edges_l0"] = np.asarray(resolved.edges)
                shown = [i for i in range(len(resolved.n_units)) if int(resolved.n_units[i]) > 0]
                _save(
                    plot_connection_resolved(
                        [resolved.s_sc[i] for i in shown],
                        [
                            f"C_in {resolved.edges[i]}-{resolved.edges[i + 1] - 1}: "
                            f"{int(resolved.n_units[i])} units"
                            for i in shown
                        ],
                    ),
                    out / "connection_resolved_l0",
                    options,
                    written,
                )
                pmap = pixel_map(eff_image, shape, binary=True)
                arrays["pixel_map"] = pmap.numpy()
                _save(plot_pixel_map(pmap), out / "pixel_map", options, written)
                inv = translational_invariance(
                    eff_image > 0,
                    weights_of,
                    shape,
                    threshold=options.invariance_threshold,
                    max_units=options.invariance_units,
                    seed=options.seed,
                )
                results["invariance"] = _invariance_json(inv)
                _save(
                    _invariance_figure(inv, images_of, shape), out / "invariance", options, written
                )
        results["layers"][str(layer)] = layer_result

    if data is not None:
        model = _model(config, data, state, options.device)
        c_in0 = connectivity(masks["layers.0.weight"]).c_in
        points = _ablation_points(c_in0.numel(), options.ablation_points)
        curves_abl = [
            node_ablation(
                model, data, c_in0, points, mode, options.seed, config.train.eval_batch_size
            )
            for mode in ABLATION_MODES
        ]
        n_val = data.x_val.shape[0]
        results["ablation"] = {
            c.mode: {
                "removed": c.removed,
                "top1": c.top1,
                # binomial sd of an accuracy over n_val validation images
                "top1_sd": [math.sqrt(max(p * (1 - p), 0.0) / n_val) for p in c.top1],
            }
            for c in curves_abl
        }
        _save(
            plot_ablation(curves_abl, c_in0.numel(), baseline=1 / data.num_classes),
            out / "ablation",
            options,
            written,
        )
        pre = hidden_activity(model, data, layer=0)  # (n, units)
        kurt = excess_kurtosis(pre[:, c_in0 > 0]) if bool((c_in0 > 0).any()) else None
        results["kurtosis"] = (
            None
            if kurt is None
            else {
                **_json_safe(mean_reading(torch.tensor(kurt.per_unit), null=0.0).columns("mean")),
                "median": _finite(kurt.median),
                "null": 0.0,
            }
        )
        labels = data.y_val[: pre.shape[0]].cpu()
        post = torch.relu(pre).double()  # (n, units): what the next layer sees
        response = class_response(post, labels, data.num_classes, seed=options.seed)
        arrays["class_means_l0"] = response.class_means.numpy()
        results["class_response"] = {
            "mean_independence": _finite(response.mean_independence),
            "null_mean_independence": _finite(response.null_mean_independence),
        }
        top = select_units(c_in0, "most", 24)
        _save(
            plot_class_response(
                response.class_means[top],
                post.std(dim=0)[top],
                response.independence[top].tolist(),
                top.tolist(),
            ),
            out / "class_response",
            options,
            written,
        )

    write_text(out / "results.json", json.dumps(results, indent=2, default=_json_default) + "\n")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(out / "arrays.npz", buffer.getvalue())
    results["figures"] = [str(p.relative_to(folder.root)) for p in written]
    return results


def _binomial_sd(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if math.isfinite(p) and 0 <= p <= 1 else math.nan


def _json_safe(columns: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become None: JSON has no NaN."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in columns.items()
    }


_STORED_READINGS = ("locality_index", "neighbour_enrichment", "mass_within_r", "locality_ratio")


def round_readings(folder: RunFolder, index: int) -> dict[str, Any]:
    """The locality readings of round ``index`` (:func:`imprint.analysis.locality.
    locality_readings` columns): as stored in its metrics.json by the round loop, or,
    for a folder written before the loop stored them, computed from its mask."""
    metrics = folder.round_metrics(index)
    if all(key in metrics for key in _STORED_READINGS):
        return {
            k: v for k, v in metrics.items() if k.split("_")[0] in ("locality", "mass", "neighbour")
        }
    masks = folder.round_masks(index)
    shape = _input_shape(folder, masks)
    if not _has_geometry(shape):
        return {}
    first = to_image_space(masks["layers.0.weight"], _permutation(folder.read_config(), masks))
    return _json_safe(locality_readings(first, shape))


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


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


def _invariance_figure(inv: Any, images: torch.Tensor, shape: tuple[int, int, int]) -> Any:
    """The largest clusters, one row each: members' masks side by side."""
    rows = [c for c in inv.clusters if c.n_positions >= 2][:8]
    members = [m for c in rows for m in c.members[:12]]
    if not members:
        return plot_gallery(
            torch.zeros((1, *shape)),
            f"no cluster of shifted copies found (threshold {inv.threshold})",
        )
    picked = torch.tensor(members)
    labels = []
    for i, c in enumerate(rows):
        labels += [f"c{i} u{m}" for m in c.members[:12]]
    title = (
        f"masks equal up to a shift: {inv.fraction_shifted:.0%} of {len(inv.units)} units "
        f"in shifted clusters (random masks: {inv.null_fraction_shifted:.0%})"
    )
    return plot_gallery(unit_images(images, shape, picked), title, labels, columns=12)


def _read_curves(folder: RunFolder, index: int) -> list[dict[str, float]]:
    path = folder.round_file(index, "curves")
    try:
        with path.open() as handle:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path} is not a readable curves file: {error}.") from None


def _input_shape(folder: RunFolder, masks: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in folder.read_data_record()["shape"])
    n_inputs = masks["layers.0.weight"].shape[1]
    if len(shape) != 3 or shape[0] * shape[1] * shape[2] != n_inputs:
        raise RunFolderError(
            f"{folder.data_path} gives input shape {shape}; the masks have {n_inputs} inputs."
        )
    return shape  # type: ignore[return-value]


def _permutation(config: Config, masks: dict[str, torch.Tensor]) -> torch.Tensor | None:
    if not config.data.permute_pixels:
        return None
    return pixel_permutation(masks["layers.0.weight"].shape[1], config.data.seed)


def _round_scalars(
    folder: RunFolder, config: Config, index: int, data: ImageData | None, device: str
) -> dict[str, Any]:
    """The per-round numbers of rounds.csv (cheap: masks, weights, one forward pass)."""
    masks = folder.round_masks(index)
    metrics = folder.round_metrics(index)
    shape = _input_shape(folder, masks)
    first = to_image_space(masks["layers.0.weight"], _permutation(config, masks))
    row: dict[str, Any] = {
        "round": index,
        "density": metrics["density"],
        "density_l0": metrics["layer_density"][0],
        "best_val_top1": metrics["best_val_top1"],
        "connected_l0": metrics["connected_units"][0],
    }
    if _has_geometry(shape):
        row.update(round_readings(folder, index))
    state = folder.round_state(index, "final")
    connected = masks["layers.0.weight"].any(dim=1)  # (units,)
    weights = state["layers.0.weight"][connected]  # (connected units, D)
    row.update(mean_reading(ipr(weights), null=ipr_null(first.shape[1])).columns("ipr_l0"))
    if data is not None:
        model = _model(config, data, state, device)
        pre = hidden_activity(model, data, layer=0)[:, connected.cpu()]
        per_unit = torch.tensor(excess_kurtosis(pre).per_unit if pre.shape[1] else [])
        row.update(mean_reading(per_unit, null=0.0).columns("kurtosis_l0"))
    return row


def analyze_run(
    run_dir: str | Path,
    which: str = "study",
    options: AnalysisOptions | None = None,
    log: Callable[[str], None] = print,
    metrics: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Analyse the rounds ``which`` (study, best, last, all, or a number) of a run folder,
    or of every seed of a group folder (:func:`analyze_group`).

    Over-round figures and rounds.csv always cover every completed round. Returns a
    summary with the paths written. ``metrics`` (a group's mean over seeds) decides
    the study and best rounds instead of the run's own.
    """
    options = options or AnalysisOptions()
    if is_group(run_dir):
        return analyze_group(run_dir, which, options, log)
    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        raise RunFolderError(f"{folder.root} is not an imprint run folder (no config.toml).")
    config = folder.read_config()
    selected = resolve_rounds(folder, which, metrics)
    done = folder.completed_rounds()
    try:
        data = load_dataset(config.data).to(options.device)
    except DataError as error:
        log(f"Data unavailable ({error}); ablation, kurtosis and class response skipped.")
        data = None

    out = folder.root / "analysis"
    rows = [_round_scalars(folder, config, r, data, options.device) for r in done]
    write_csv(out / "rounds.csv", rows, _columns(rows))
    written: list[Path] = []
    round_metrics = [folder.round_metrics(r) for r in done]
    written += _over_round_figures(round_metrics, rows, out, options, "within-run bootstrap")
    per_round = [analyze_round(folder, config, r, data, options, log) for r in selected]
    evolution = _evolution(folder, config, done, selected[-1], options)
    if evolution is not None:
        written.append(evolution)
    summary = {
        "rounds": selected,
        "which": which,
        "figures": [str(p.relative_to(folder.root)) for p in written],
        "per_round": per_round,
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    return summary


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def _over_round_figures(
    metrics: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    out: Path,
    options: AnalysisOptions,
    spread_label: str,
) -> list[Path]:
    """accuracy, locality (the neighbour index), mass_within and kurtosis over rounds,
    each with a ± 1 sd band (``spread_label``: a run's bootstrap or a group's seeds)."""
    from imprint.imp import study_round

    written: list[Path] = []
    band = f"± 1 sd ({spread_label})"
    fig = plot_accuracy_vs_remaining(metrics, study=study_round(metrics))
    _save(fig, out / "accuracy", options, written)

    def column(name: str) -> list[float]:
        return [_number(r.get(name)) for r in rows]

    if "locality_index" in rows[0]:
        _save(
            plot_scalar_over_rounds(
                metrics,
                column("locality_index"),
                "neighbour locality index (first layer)",
                null=0.0,
                null_label="random masks of equal C_in (= 0)",
                spread=column("locality_index_sd"),
                spread_label=band,
            ),
            out / "locality",
            options,
            written,
        )
        _save(
            plot_scalar_over_rounds(
                metrics,
                column("mass_within_r"),
                f"fraction of S_sc mass within {RADIUS:g} px",
                null=column("mass_within_r_null"),
                null_label="random masks of equal C_in",
                spread=column("mass_within_r_sd"),
                spread_label=band,
            ),
            out / "mass_within",
            options,
            written,
        )
    if "kurtosis_l0" in rows[0]:
        _save(
            plot_scalar_over_rounds(
                metrics,
                column("kurtosis_l0"),
                "excess kurtosis of layer-0 pre-activations",
                null=0.0,
                null_label="Gaussian (= 0)",
                spread=column("kurtosis_l0_sd"),
                spread_label=band,
            ),
            out / "kurtosis",
            options,
            written,
        )
    return written


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def analyze_group(
    group_dir: str | Path,
    which: str = "study",
    options: AnalysisOptions | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Analyse every seed of a group at the same round (the study round of the mean over
    seeds, by default), then write GROUP/analysis: rounds.csv (each reading's mean and
    sd over seeds per round), readings.json (the analysed rounds' readings, mean and sd
    over seeds) and the over-round figures with ± 1 sd bands over seeds."""
    from imprint.imp import summarize_seeds

    options = options or AnalysisOptions()
    members = group_members(group_dir)
    folders = [RunFolder(path) for _, path in members]
    per_seed = [[f.round_metrics(r) for r in f.completed_rounds()] for f in folders]
    if not all(per_seed):
        raise RunFolderError(f"{group_dir}: some seed has no completed round to analyse.")
    mean_metrics = summarize_seeds(per_seed)
    summaries = []
    for (seed, path), metrics in zip(members, per_seed):
        log(f"Analysing seed {seed} ({path})...")
        shared = mean_metrics[: len(metrics)]
        summaries.append(analyze_run(path, which, options, log, metrics=shared))
    out = Path(group_dir) / "analysis"
    seed_rows = [list(csv.DictReader((f.root / "analysis" / "rounds.csv").open())) for f in folders]
    rows = _mean_rows(seed_rows)
    write_csv(out / "rounds.csv", rows, _columns(rows))
    written = _over_round_figures(mean_metrics, rows, out, options, "over seeds")
    readings = _mean_readings(summaries)
    record = {
        "seeds": [seed for seed, _ in members],
        "which": which,
        "rounds": summaries[0]["rounds"],
        "readings": readings,
        "figures": [str(p.relative_to(Path(group_dir))) for p in written],
    }
    write_text(out / "readings.json", json.dumps(record, indent=2, default=_json_default) + "\n")
    return {**record, "per_seed": summaries, "per_round": summaries[0]["per_round"]}


def _mean_rows(seed_rows: Sequence[Sequence[dict[str, str]]]) -> list[dict[str, Any]]:
    """Per round: every numeric column's mean over the seeds that have it, and its sd
    over seeds (``_sd`` columns of a run hold its bootstrap sd; here they are replaced
    by the spread over seeds, the larger and the one that matters across runs)."""
    rows = []
    for index in range(max(len(r) for r in seed_rows)):
        reached = [r[index] for r in seed_rows if len(r) > index]
        row: dict[str, Any] = {"round": index, "seeds": len(reached)}
        for key in reached[0]:
            if key == "round" or key.endswith(("_sd", "_low", "_high", "_n", "_reason")):
                continue
            values = [_number(r.get(key)) for r in reached]
            if any(math.isfinite(v) for v in values):
                mean, sd, _ = across_seeds(values)
                row[key], row[f"{key}_sd"] = mean, sd
        rows.append(row)
    return rows


GROUP_READINGS = (
    ("locality_index", ("layers", "0", "locality_index")),
    ("mass_within_r", ("layers", "0", "mass_within_r")),
    ("locality_ratio", ("layers", "0", "locality_ratio")),
    ("ipr_mean", ("layers", "0", "ipr_mean")),
    ("fraction_shifted", ("invariance", "fraction_shifted")),
    ("null_fraction_shifted", ("invariance", "null_fraction_shifted")),
    ("kurtosis_mean", ("kurtosis", "mean")),
    ("best_val_top1", ("best_val_top1",)),
    ("density", ("density",)),
    # top-1 after removing the first k of the ablation points (about 9% and 27% of
    # the units with the default 12 points), most connected first and in random order
    ("ablation_most_top1_p1", ("ablation", "most", "top1", 1)),
    ("ablation_random_top1_p1", ("ablation", "random", "top1", 1)),
    ("ablation_most_top1_p3", ("ablation", "most", "top1", 3)),
    ("ablation_random_top1_p3", ("ablation", "random", "top1", 3)),
    ("ablation_removed_p1", ("ablation", "most", "removed", 1)),
    ("ablation_removed_p3", ("ablation", "most", "removed", 3)),
)


def _mean_readings(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each analysed round: each reading's mean and sd over seeds."""
    out = []
    for position, index in enumerate(summaries[0]["rounds"]):
        entry: dict[str, Any] = {"round": index}
        for name, path in GROUP_READINGS:
            values = []
            for summary in summaries:
                value: Any = summary["per_round"][position]
                for step in path:
                    if isinstance(value, dict):
                        value = value.get(step)
                    elif isinstance(value, list) and isinstance(step, int) and step < len(value):
                        value = value[step]
                    else:
                        value = None
                values.append(_number(value))
            entry[name], entry[f"{name}_sd"], entry[f"{name}_n"] = across_seeds(values)
        out.append(_json_safe(entry))
    return out


def _evolution(
    folder: RunFolder, config: Config, done: Sequence[int], anchor: int, options: AnalysisOptions
) -> Path | None:
    """The most connected units of round ``anchor``, followed over every round."""
    masks = folder.round_masks(anchor)
    shape = _input_shape(folder, masks)
    if not _has_geometry(shape):
        return None
    perm = _permutation(config, masks)
    c_in = connectivity(masks["layers.0.weight"]).c_in
    units = select_units(c_in, "most", options.evolution_units)
    frames, titles = [], []
    for r in done:
        m = folder.round_masks(r)
        image = to_image_space(m["layers.0.weight"], perm).double()
        frames.append(unit_images(image, shape, units))
        density = folder.round_metrics(r)["layer_density"][0]
        titles.append(
            f"round {r}: {density:.2%} of layer 0 left "
            f"({len(units)} most connected units of round {anchor})"
        )
    return write_evolution_gif(frames, titles, folder.root / "analysis" / "evolution.gif")
