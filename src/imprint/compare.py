"""The comparison page (`imprint compare`): runs side by side, owned here at the path
`imprint compare --out` names. Accuracy and locality against remaining weights (the
seeds of one config grouped, ± 1 sd bands), the comparison panels of the analyses
registry (S_sc maps, galleries) at equal density, and a table of scalar results."""

from __future__ import annotations

import json
import math
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imprint import analyses
from imprint.analyze import load_round
from imprint.config import config_to_dict
from imprint.pages import figure, output_page, page, png, table
from imprint.plots import STYLE, density_axis, group_color, legend_below
from imprint.readings import aggregate_over_seeds, format_spread, shown_in
from imprint.results import RunResults, study_round
from imprint.safeio import RunFolderError, write_text

__all__ = ["build_comparison", "COMPARE_SECTIONS"]


COMPARE_SECTIONS = ("runs", "accuracy", "locality", "maps", "galleries", "table")


# ------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class _Run:
    results: RunResults
    label: str  # the config keys that differ from the other runs, seeds left out
    group: str  # runs of one group differ only in their seeds

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return self.results.metrics  # type: ignore[return-value]  # TypedDicts are dicts

    @property
    def seed(self) -> int:
        return self.results.config.seeds.init


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def _collect(run_dirs: Sequence[str | Path]) -> list[_Run]:
    runs = [RunResults(d) for d in run_dirs]
    configs = []
    for run in runs:
        if not run.rounds:
            raise RunFolderError(f"{run.root} has no completed round to compare.")
        configs.append(_flatten(config_to_dict(run.config)))
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({c.get(k) for c in configs}) > 1]
    out = []
    for run, flat in zip(runs, configs):
        group_keys = [k for k in varying if not k.startswith("seeds.")]
        group = ", ".join(f"{k}={flat.get(k)}" for k in group_keys) or "same config"
        label = ", ".join(f"{k}={flat.get(k)}" for k in varying) or run.root.name
        out.append(_Run(run, label, group))
    return out


def _overlay(runs: list[_Run], value: str, ylabel: str, log_y: bool = False) -> str:
    """Mean and spread (± 1 sample sd over seeds) of one per-round value against density."""
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.2, 3.9))
    groups: dict[str, list[_Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    for i, (group, members) in enumerate(groups.items()):
        n = min(len(r.metrics) for r in members)
        x = 100 * np.array([members[0].metrics[k]["density"] for k in range(n)])
        ys = np.array([[_value(r, k, value) for k in range(n)] for r in members])
        with warnings.catch_warnings():  # a round where no run has a value ("too few pairs")
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(ys, axis=0)
            sd = np.nanstd(ys, axis=0, ddof=1) if len(members) > 1 else None
        color = group_color(i, len(groups))
        ax.plot(
            x,
            mean,
            "o-",
            ms=3,
            color=color,
            label=f"{_legend_name(group, members)} ({_count(len(members), 'run')})",
        )
        if sd is not None:
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2)
    density_axis(ax, textwrap.fill(ylabel, 36), log_y)
    fig.set_size_inches(6.2, 3.9 + 0.09 * len(groups))  # room for the legend below
    legend_below(ax)
    return png(fig)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _legend_name(group: str, members: list[_Run]) -> str:
    """A group's legend label: what differs, when that is short; else the name of its
    folder (a sweep's variant: "oneshot" of runs/oneshot,procedure=oneshot-1a2b3c4d)."""
    short = _short(group)
    if len(short) <= 40:
        return short
    folder = members[0].results.root
    if folder.name.startswith("seed_"):  # a member of a group folder
        folder = folder.parent
    name = re.sub(r"-[0-9a-f]{8}$", "", folder.name).split(",")[0]
    return name if len(name) <= 40 else name[:37] + "..."


def _named(run: _Run) -> str:
    """A run in a caption: its group's legend name and its seed."""
    return f"{_legend_name(run.group, [run])}, seed {run.seed}"


def _short(group: str) -> str:
    """A legend label: section prefixes and quotes dropped (data.gain="10" -> gain=10)."""
    parts = [part.strip().split(".", 1)[-1].replace('"', "") for part in group.split(",")]
    return ", ".join(parts)


def _listing(runs: list[_Run]) -> list[dict[str, Any]]:
    """One row per group of runs that differ only in their seeds (one per run when
    every run is its own group): what varies, how many seeds, where the runs are."""
    groups: dict[str, list[_Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    rows = []
    for group, members in groups.items():
        folders = sorted(
            {str(r.results.root.parent if len(members) > 1 else r.results.root) for r in members}
        )
        seeds = sorted({r.seed for r in members})
        rounds = sorted({len(r.metrics) for r in members})
        stops = sorted({str(r.results.record.get("stop_reason", "not recorded")) for r in members})
        rows.append(
            {
                "name (in the figures)": _legend_name(group, members),
                "group (what differs)": group,
                "seeds": f"{_count(len(seeds), 'seed')}: {', '.join(map(str, seeds))}",
                "rounds": "-".join(map(str, (rounds[0], rounds[-1])))
                if len(rounds) > 1
                else rounds[0],
                "stopped": "; ".join(stops),
                "where": ", ".join(folders),
            }
        )
    return rows


def _group_rows(runs: list[_Run], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table of scalar results per group of seeds: each column's mean ± sample sd
    over the group's runs (``rows``: one per run, numbers), and how many runs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run, row in zip(runs, rows):
        groups.setdefault(run.group, []).append(row)
    names = list(rows[0])
    out = []
    for group, members in groups.items():
        stats = aggregate_over_seeds(members, names)
        one: dict[str, Any] = {
            "group": _legend_name(group, [r for r in runs if r.group == group]),
            "seeds": len(members),
        }
        for name in names:
            digits = 2 if name in ("density", "mean C_in") else 4
            if name == "density":
                one["weights left"] = f"{stats[name]:.2%}"
            else:
                one[name] = format_spread(stats[name], stats[f"{name}_sd"], digits)
        out.append(one)
    return out


def _value(run: _Run, index: int, name: str) -> float:
    metric = run.metrics[index].get(name)
    if metric is None:
        return float("nan")
    return 100 * metric if name == "best_val_top1" else float(metric)


def _closest_round(run: _Run, density: float) -> int:
    return min(
        range(len(run.metrics)), key=lambda k: abs(math.log(run.metrics[k]["density"] / density))
    )


def build_comparison(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    density: float | None = None,
    gallery_size: int = 36,
) -> Path:
    """Write one HTML page comparing runs: accuracy and locality against remaining
    weights (seeds of one config grouped, min-max spread), S_sc maps and galleries at
    equal density side by side, and a table of scalar results."""
    runs = _collect(run_dirs)
    if density is None:  # the first run's study round sets the common density
        first = runs[0]
        density = first.metrics[study_round(first.metrics)]["density"]
    if not 0 < density <= 1:
        raise ValueError(f"The 'density' parameter must be in (0, 1]. Got {density}.")

    sections: list[tuple[str, str, str]] = []
    sections.append(("runs", "Runs", table(_listing(runs))))
    sections.append(
        (
            "accuracy",
            "Accuracy against remaining weights",
            figure(
                _overlay(runs, "best_val_top1", "best validation top-1 (%)"),
                "Best top-1 per round; bands: ± 1 sd over the seeds of one config. A "
                "curve ends at the last round all of its seeds completed; why they "
                "stopped is in the runs table above.",
                "accuracy",
            ),
        )
    )
    sections.append(
        (
            "locality",
            "Locality against remaining weights",
            figure(
                _overlay(runs, "locality_index", "neighbour locality index (random masks = 0)"),
                "First-layer neighbour locality index: the excess fraction of same-channel "
                "input pairs that are neighbours (<= 1.5 px), 0 for random masks of equal "
                "C_in, 1 when every pair is. Bands: ± 1 sd over the seeds of one config. A "
                "curve ends early where its runs' last rounds have too few pairs for a "
                "reading (see the runs' tables).",
                "locality",
            ),
        )
    )

    computed: dict[str, list[tuple[_Run, str, analyses.Result]]] = {
        panel.id: [] for panel in analyses.COMPARE_PANELS
    }
    rows: list[dict[str, Any]] = []
    values: list[dict[str, Any]] = []  # the same, numbers only: the group table's
    options = analyses.AnalysisOptions(gallery_size=gallery_size)
    for run in runs:
        index = _closest_round(run, density)
        metric = run.metrics[index]
        title = f"{run.results.root.name}: round {index}, {metric['density']:.2%} left"
        one = load_round(run.results.folder, run.results.config, index, options)
        for panel in analyses.COMPARE_PANELS:
            computed[panel.id].append((run, title, panel.compute(one)))
        c_in = run.results.first_layer_image(index).sum(dim=1)
        readings = run.results.readings(index)
        value = {
            "density": metric["density"],
            "val. top-1": metric["best_val_top1"],
            **(
                {"test top-1": metric["test_top1_at_best"]} if "test_top1_at_best" in metric else {}
            ),
            **{spec.label: readings.get(spec.name) for spec in shown_in("compare")},
            "connected units": int((c_in > 0).sum()),
            "mean C_in": float(c_in[c_in > 0].double().mean()) if (c_in > 0).any() else 0.0,
        }
        values.append(value)
        formatted = {spec.label: spec.format(readings) for spec in shown_in("compare")}
        rows.append(
            {"run": run.results.root.name, "label": run.label, "round": index, **value, **formatted}
        )
    for panel in analyses.COMPARE_PANELS:
        drawn = computed[panel.id]
        # side by side on one scale: the largest value any of them draws
        scales = [panel.scale(r) for _, _, r in drawn if panel.scale and not r.skip]
        common = max(scales) if scales else None
        parts = [
            figure(
                png(panel.plot(result, title, common)), f"{panel.caption}; {_named(run)}", panel.id
            )
            if not result.skip
            else f'<p class="note">{run.results.root.name}: {result.skip}.</p>'
            for run, title, result in drawn
        ]
        content = f'<div class="grid">{"".join(parts)}</div>'
        sections.append((panel.id, f"{panel.title} at about {density:.2%}", content))
    by_group = table(_group_rows(runs, values))
    sections.append(
        (
            "table",
            "Scalar results at equal density",
            "<h3>Per group of seeds (mean ± sample sd over its runs)</h3>"
            f"{by_group}<h3>Per run (± the run's own bootstrap sd)</h3>{table(rows)}",
        )
    )
    path = output_page(out, "imprint comparison")
    write_text(
        path,
        page(
            "imprint comparison",
            f"{len(runs)} runs, compared at {density:.2%} of the prunable weights",
            sections,
        ),
    )
    return path
