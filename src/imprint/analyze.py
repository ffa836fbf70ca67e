"""`imprint analyze RUN`: every analysis of a run's rounds, written into the run folder.

This is the layer that reads run folders. The analyses it runs are the entries of
:mod:`imprint.analyses` (compute on masks, weights and data; plot from the results),
so a new analysis is an entry there, not code here. Layout written here (owned by
this module; file stems from the registry)::

    RUN/analysis/
      rounds.csv              per round: density, accuracy, scalar locality with nulls,
                              IPR with its null, pre-activation kurtosis
      summary.json            the analysed rounds' results, the figures written, and
                              why an over-round figure was not drawn ("skipped")
      accuracy.png|svg        OVER_ROUNDS: best top-1 against weights left, best round
      locality.png|svg          marked; locality index, S_sc mass within 2 px and
      mass_within.png|svg       kurtosis over rounds (nulls, ± 1 sd bands); the same
      kurtosis.png|svg          units' masks across rounds
      round_NNN/
        evolution.gif         round NNN's most connected units across every round
        results.json          the round's numbers; "skipped": analysis -> why it could
                              not run on this round (no data, no 2-D geometry, ...)
        arrays.npz            C_in, pixel maps, S maps, ablation curves, class means
        *.png|svg             the round's figures (ROUND_ANALYSES)
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imprint import analyses
from imprint.analyses import AnalysisOptions, History, Round
from imprint.analysis.activity import hidden_activity
from imprint.analysis.locality import MASS_RADIUS, to_image_space
from imprint.analysis.uncertainty import as_number
from imprint.config import Config
from imprint.data import DataError, ImageData, load_dataset
from imprint.model import FCN, build_model
from imprint.plots import save_figure
from imprint.readings import (
    COLUMN_SUFFIXES,
    ReadingInputs,
    aggregate_over_seeds,
    compute_readings,
    json_safe,
    shown_in,
)
from imprint.results import (
    input_shape,
    read_curves,
    read_group,
    resolve_rounds,
    round_readings,
    study_round,
)
from imprint.runs import RunFolder, is_group
from imprint.safeio import (
    RunFolderError,
    read_file,
    read_text,
    write_bytes,
    write_csv,
    write_text,
)

__all__ = [
    "AnalysisOptions",
    "analyze_round",
    "load_round",
    "analyze_run",
    "RADIUS",
]

RADIUS = MASS_RADIUS  # pixels: "local" for the mass-within-radius figure (a 5x5 neighbourhood)


def _model(config: Config, data: ImageData, state: dict[str, torch.Tensor], device: str) -> FCN:
    model = build_model(config.model, data.input_dim, data.num_classes, seed=0)
    model.load_state_dict(state)
    return model.to(device).eval()


def _draw(
    entry: analyses.Analysis | analyses.OverRounds,
    result: analyses.Result,
    layer: int,
    out: Path,
    options: AnalysisOptions,
) -> list[Path]:
    """Plot ``result`` and save one file per figure of ``entry``."""
    figures = list(entry.plot(result))
    if len(figures) != len(entry.figures):
        raise RuntimeError(
            f"The plot function of analysis '{entry.name}' drew {len(figures)} figures; "
            f"its entry declares {len(entry.figures)}."
        )
    written: list[Path] = []
    for spec, fig in zip(entry.figures, figures):
        written += save_figure(fig, out / spec.file_stem(layer), options.formats)
    return written


def load_round(
    folder: RunFolder,
    config: Config,
    index: int,
    options: AnalysisOptions,
    data: ImageData | None = None,
    data_note: str = "not loaded",
) -> Round:
    """Round ``index`` of a run folder as the analyses registry's entries read it."""
    masks = folder.round_masks(index)
    return Round(
        index=index,
        masks=masks,
        state=folder.round_state(index, "final"),
        metrics=folder.round_metrics(index),
        curves=read_curves(folder, index),
        shape=input_shape(folder, masks),
        perm=folder.permutation(),
        config=config,
        data=data,
        data_note=data_note,
        options=options,
    )


def analyze_round(
    folder: RunFolder,
    config: Config,
    index: int,
    data: ImageData | None,
    options: AnalysisOptions,
    log: Callable[[str], None] = print,
    data_note: str = "unavailable",
) -> dict[str, Any]:
    """Every entry of :data:`imprint.analyses.ROUND_ANALYSES` on round ``index``; writes
    results.json (with "skipped": each entry that could not run, and why), arrays.npz
    and the figures into RUN/analysis/round_NNN."""
    out = folder.root / "analysis" / f"round_{index:03d}"
    one = load_round(folder, config, index, options, data, data_note)
    metrics = one.metrics
    if not one.geometry:
        log(f"Inputs of shape {one.shape} have no 2-D geometry: spatial analyses skipped.")
    results: dict[str, Any] = {
        "round": index,
        "density": metrics["density"],
        "best_val_top1": metrics["best_val_top1"],
        "layers": {str(layer): {} for layer in one.hidden_layers},
    }
    arrays: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    written: list[Path] = []
    started = time.perf_counter()
    for entry in analyses.ROUND_ANALYSES:
        for layer in one.hidden_layers if entry.every_layer else [0]:
            result = entry.compute(one, layer)
            if result.skip:
                skipped[entry.key(layer)] = result.skip
                continue
            target = results["layers"][str(layer)] if entry.every_layer else results
            target.update(result.numbers)
            arrays.update(result.arrays)
            written += _draw(entry, result, layer, out, options)
    log(
        f"round {index}: {len(written)} figures, {len(skipped)} analyses skipped "
        f"({time.perf_counter() - started:.0f} s)"
    )
    results["skipped"] = skipped
    write_text(out / "results.json", json.dumps(results, indent=2, default=_json_default) + "\n")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub: bool kwargs
    write_bytes(out / "arrays.npz", buffer.getvalue())
    results["figures"] = [str(p.relative_to(folder.root)) for p in written]
    return results


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _round_scalars(
    folder: RunFolder, config: Config, index: int, data: ImageData | None, device: str
) -> dict[str, Any]:
    """The per-round numbers of rounds.csv (cheap: masks, weights, one forward pass)."""
    masks = folder.round_masks(index)
    metrics = folder.round_metrics(index)
    shape = input_shape(folder, masks)
    row: dict[str, Any] = {
        "round": index,
        "density": metrics["density"],
        "density_l0": metrics["layer_density"][0],
        "best_val_top1": metrics["best_val_top1"],
        "connected_l0": metrics["connected_units"][0],
    }
    row.update(round_readings(folder, index))
    state = folder.round_state(index, "final")

    def activity(weights: torch.Tensor | None = None) -> torch.Tensor:
        """Layer 0's pre-activations, of the final weights or of ``weights``."""
        assert data is not None
        held = state if weights is None else {**state, "layers.0.weight": weights}
        return hidden_activity(_model(config, data, held, device), data, layer=0)

    inputs = ReadingInputs(
        to_image_space(masks["layers.0.weight"], folder.permutation()),
        shape,
        weights=state["layers.0.weight"],
        activity=activity if data is not None else None,
    )
    row.update(json_safe(compute_readings(inputs, "analysis")))
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
    with folder.lock():  # no run or other analysis writes this folder meanwhile
        return _analyze_locked(folder, which, options, log, metrics)


def _analyze_locked(
    folder: RunFolder,
    which: str,
    options: AnalysisOptions,
    log: Callable[[str], None],
    metrics: Sequence[dict[str, Any]] | None,
) -> dict[str, Any]:
    config = folder.read_config()
    folder.check_model(config)
    selected = resolve_rounds(folder, which, metrics)
    done = folder.completed_rounds()
    try:
        data = load_dataset(config.data).to(options.device)
        data_note = ""
    except DataError as error:
        log(f"Data unavailable ({error}); ablation, kurtosis and class response skipped.")
        data, data_note = None, str(error)

    out = folder.root / "analysis"
    log(f"{folder.root}: readings of {len(done)} rounds (rounds.csv)...")
    rows = [_round_scalars(folder, config, r, data, options.device) for r in done]
    write_csv(out / "rounds.csv", rows, _columns(rows))
    round_metrics = [folder.round_metrics(r) for r in done]
    masks = folder.round_masks(selected[-1])
    history = History(
        round_metrics,
        rows,
        study_round(round_metrics),
        "within-run bootstrap",
        options,
        round_masks=folder.round_masks,
        shape=input_shape(folder, masks),
        perm=folder.permutation(),
        anchor=selected[-1],
    )
    written, skipped = _over_round_figures(history, out, options, group=False)
    per_round = [analyze_round(folder, config, r, data, options, log, data_note) for r in selected]
    summary = {
        "rounds": selected,
        "which": which,
        "figures": [str(p.relative_to(folder.root)) for p in written],
        "skipped": skipped,
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
    history: History, out: Path, options: AnalysisOptions, group: bool
) -> tuple[list[Path], dict[str, str]]:
    """The entries of :data:`imprint.analyses.OVER_ROUNDS` (for a group, those drawn over
    seeds): the files written, and why each entry that could not draw did not."""
    written: list[Path] = []
    skipped: dict[str, str] = {}
    for entry in analyses.OVER_ROUNDS:
        if group and not entry.groups:
            continue
        result = entry.compute(history)
        if result.skip:
            skipped[entry.name] = result.skip
        else:
            folder = out / f"round_{history.anchor:03d}" if entry.in_round_folder else out
            written += _draw(entry, result, 0, folder, options)
    return written, skipped


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
    options = options or AnalysisOptions()
    members, folders, per_seed, mean_metrics = read_group(group_dir, "analyse")
    summaries = []
    for (seed, path), metrics in zip(members, per_seed):
        log(f"Analysing seed {seed} ({path})...")
        shared = mean_metrics[: len(metrics)]
        summaries.append(analyze_run(path, which, options, log, metrics=shared))
    out = Path(group_dir) / "analysis"
    seed_rows = [
        list(csv.DictReader(io.StringIO(read_text(f.root / "analysis" / "rounds.csv"))))
        for f in folders
    ]
    rows = _mean_rows(seed_rows)
    write_csv(out / "rounds.csv", rows, _columns(rows))
    history = History(mean_metrics, rows, study_round(mean_metrics), "over seeds", options)
    written, skipped = _over_round_figures(history, out, options, group=True)
    seeds = [seed for seed, _ in members]
    for position, index in enumerate(summaries[0]["rounds"]):
        per_seed_round = [s["per_round"][position] for s in summaries]
        written += _pooled_figures(folders, seeds, index, per_seed_round, out, options)
    readings = _mean_readings(summaries, seed_rows)
    record = {
        "seeds": [seed for seed, _ in members],
        "which": which,
        "rounds": summaries[0]["rounds"],
        "readings": readings,
        "figures": [str(p.relative_to(Path(group_dir))) for p in written],
        "skipped": skipped,
    }
    write_text(out / "readings.json", json.dumps(record, indent=2, default=_json_default) + "\n")
    return {**record, "per_seed": summaries, "per_round": summaries[0]["per_round"]}


def _pooled_figures(
    folders: Sequence[RunFolder],
    seeds: Sequence[int],
    index: int,
    results: Sequence[dict[str, Any]],
    out: Path,
    options: AnalysisOptions,
) -> list[Path]:
    """Round ``index`` of every seed pooled (the entries with a ``pool``), into
    GROUP/analysis/round_NNN with a results.json that says which could not be drawn."""
    arrays = []
    for folder in folders:
        path = folder.root / "analysis" / f"round_{index:03d}" / "arrays.npz"
        with np.load(io.BytesIO(read_file(path)), allow_pickle=False) as stored:
            arrays.append({name: stored[name] for name in stored.files})
    pooled = analyses.Seeds(
        index, list(seeds), results, arrays, [read_curves(f, index) for f in folders]
    )
    target = out / f"round_{index:03d}"
    written: list[Path] = []
    skipped: dict[str, str] = {}
    layers = [int(layer) for layer in results[0].get("layers", {"0": {}})]
    for entry in analyses.ROUND_ANALYSES:
        if entry.pool is None:
            continue
        for layer in layers if entry.every_layer else [0]:
            result = entry.pool(pooled, layer)
            if result.skip:
                skipped[entry.key(layer)] = result.skip
            else:
                written += _draw(entry, result, layer, target, options)
    record = {"round": index, "seeds": list(seeds), "pooled": True, "skipped": skipped}
    write_text(target / "results.json", json.dumps(record, indent=2) + "\n")
    return written


def _mean_rows(seed_rows: Sequence[Sequence[dict[str, str]]]) -> list[dict[str, Any]]:
    """Per round: every numeric column's mean over the seeds that have it, and its sd
    over seeds (``_sd`` columns of a run hold its bootstrap sd; here they are replaced
    by the spread over seeds, the larger and the one that matters across runs)."""
    rows = []
    for index in range(max(len(r) for r in seed_rows)):
        reached = [r[index] for r in seed_rows if len(r) > index]
        row: dict[str, Any] = {"round": index, "seeds": len(reached)}
        numeric = [
            key
            for key in reached[0]
            if key != "round"
            and not key.endswith(COLUMN_SUFFIXES)
            and any(math.isfinite(as_number(r.get(key))) for r in reached)
        ]
        for key, value in aggregate_over_seeds(reached, numeric).items():
            if not key.endswith("_n"):  # rounds.csv's columns: value and sd
                row[key] = value
        rows.append(row)
    return rows


# Results of an analysed round that are not per-round readings (the registry's readings
# come from each seed's rounds.csv): the path to each in a round's results.json.
ROUND_RESULTS = (
    ("fraction_shifted", ("invariance", "fraction_shifted")),
    ("null_fraction_shifted", ("invariance", "null_fraction_shifted")),
    # top-1 after removing the first k of the ablation points (about 9% and 27% of
    # the units with the default 12 points), most connected first and in random order
    ("ablation_most_top1_p1", ("ablation", "most", "top1", 1)),
    ("ablation_random_top1_p1", ("ablation", "random", "top1", 1)),
    ("ablation_most_top1_p3", ("ablation", "most", "top1", 3)),
    ("ablation_random_top1_p3", ("ablation", "random", "top1", 3)),
    ("ablation_removed_p1", ("ablation", "most", "removed", 1)),
    ("ablation_removed_p3", ("ablation", "most", "removed", 3)),
)


def _result_at(result: Any, path: Sequence[Any]) -> Any:
    for step in path:
        if isinstance(result, dict):
            result = result.get(step)
        elif isinstance(result, list) and isinstance(step, int) and step < len(result):
            result = result[step]
        else:
            return None
    return result


def _mean_readings(
    summaries: Sequence[dict[str, Any]], seed_rows: Sequence[Sequence[dict[str, str]]]
) -> list[dict[str, Any]]:
    """For each analysed round: the mean and sd over seeds of density, accuracy, every
    registered reading shown in the group table (from the seeds' rounds.csv) and the
    round's other results (:data:`ROUND_RESULTS`)."""
    names = ["density", "best_val_top1", *(spec.name for spec in shown_in("group"))]
    out = []
    for position, index in enumerate(summaries[0]["rounds"]):
        rows = [next((r for r in seed if int(r["round"]) == index), {}) for seed in seed_rows]
        results = [
            {name: _result_at(s["per_round"][position], path) for name, path in ROUND_RESULTS}
            for s in summaries
        ]
        entry: dict[str, Any] = {"round": index}
        entry.update(aggregate_over_seeds(rows, names))
        entry.update(aggregate_over_seeds(results, [name for name, _ in ROUND_RESULTS]))
        out.append(json_safe(entry))
    return out
