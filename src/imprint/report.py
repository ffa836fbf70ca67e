"""Self-contained HTML pages: one per run (`imprint report`) and one across runs
(`imprint compare`). Figures are embedded as data URIs; the pages load nothing from
the network. Files written here (owned by this module): RUN/report.html (or
GROUP/report.html), and the comparison page at the path `imprint compare --out` names.

A report lays out what `imprint analyze` wrote, section by section from the registry
of :mod:`imprint.analyses` (titles, captions, figure files). Every figure an entry
expects is shown, or in its place the reason the entry gave for skipping it (no data,
no 2-D geometry, ...); a figure that is neither written nor skipped makes the report
run the analysis of that round first, and one still missing after that is named. A
comparison draws its overlays from the runs' files."""

from __future__ import annotations

import base64
import csv
import html
import io
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
import torch

from imprint import analyses
from imprint.analyses import AnalysisOptions, Section, hidden_layers
from imprint.analysis.locality import to_image_space
from imprint.analysis.maps import locality_maps
from imprint.analysis.uncertainty import as_number, format_spread
from imprint.analysis.units import select_units, unit_images
from imprint.analyze import analyze_run, resolve_rounds, round_readings
from imprint.config import config_to_dict
from imprint.imp import read_group, study_round
from imprint.plots import (
    STYLE,
    density_axis,
    group_color,
    legend_below,
    plot_displacement_maps,
    plot_gallery,
)
from imprint.readings import READINGS, shown_in
from imprint.runs import RunFolder, is_group
from imprint.safeio import RunFolderError, read_json, read_regular, read_text, write_text

__all__ = ["build_report", "build_comparison", "report_sections", "COMPARE_SECTIONS"]

CONFIG = Section("config", "Config and environment")
ROUNDS = Section("rounds", "Rounds")
COMPARE_SECTIONS = ("runs", "accuracy", "locality", "maps", "galleries", "table")

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;
background:#fafafa;line-height:1.4}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;font-size:13px;color:#cfd8dc}
nav{padding:6px 24px;background:#eceff1;font-size:13px;position:sticky;top:0}
nav a{margin-right:12px;color:#37474f;text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 16px;
margin:14px 0}
h2{font-size:17px;margin:4px 0 10px}
figure{margin:10px 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#555;max-width:760px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right} th{background:#f5f5f5}
td{white-space:nowrap} .scroll{overflow-x:auto;max-width:100%}
pre{background:#f5f5f5;padding:8px;font-size:12px;overflow:auto;max-height:360px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:10px}
.note{font-size:13px;color:#666}
"""


def _data_uri(path: Path) -> str:
    kind = {"png": "image/png", "gif": "image/gif", "svg": "image/svg+xml"}[path.suffix[1:]]
    data = read_regular(path)  # a regular file of the folder: never a planted link
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _figure(uri: str, caption: str, alt: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return '<p class="note">no rows</p>'
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    # a wide table scrolls inside its card instead of breaking "0.07 ± 0.01" over lines
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number.is_integer() and abs(number) < 1e9:
        return str(int(number))
    return f"{number:.4g}"


def _page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(name)}</h2>{content}</section>'
        for sid, name, content in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>"
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except OSError as error:
        raise RunFolderError(f"Cannot read {path}: {error.strerror}.") from None
    except csv.Error as error:
        raise RunFolderError(f"{path} is not a readable CSV table: {error}.") from None


def report_sections() -> list[Section]:
    """A run report's sections in page order: config and rounds, then the figure
    sections of the analyses registry (a group's report adds "readings" after rounds)."""
    return [CONFIG, ROUNDS, *_figure_section_order()]


def _figure_section_order() -> list[Section]:
    """imprint.analyses.SECTIONS, then any other section an entry names."""
    order = list(analyses.SECTIONS)
    for entry in (*analyses.OVER_ROUNDS, *analyses.ROUND_ANALYSES):
        if entry.section not in order:
            order.append(entry.section)
    return order


def build_report(
    run_dir: str | Path,
    which: str = "study",
    options: AnalysisOptions | None = None,
    log=print,
    out: str | Path | None = None,
) -> Path:
    """Write RUN/report.html for round ``which`` (study, best, last or a number) from
    RUN/analysis, running the analysis first where its results or a figure the
    registry expects are missing. For a group folder, GROUP/report.html: every reading
    as mean ± sd over its seeds, bands over seeds on the over-round figures, and one
    seed's figures as an example."""
    if is_group(run_dir):
        return _build_group_report(Path(run_dir), which, options, log, out)
    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        raise RunFolderError(f"{folder.root} is not an imprint run folder (no config.toml).")
    analysis = folder.root / "analysis"
    (shown,) = resolve_rounds(folder, "last" if which == "all" else which)
    round_dir = analysis / f"round_{shown:03d}"
    layers = hidden_layers(folder.round_masks(shown))

    def collect() -> list[_Item]:
        return _figure_items(
            analysis, analysis, round_dir, layers, "", group=False, channels=_channels(folder)
        )

    done = folder.completed_rounds()
    rounds_csv = analysis / "rounds.csv"
    stale = (
        not rounds_csv.exists()
        or len(_read_csv(rounds_csv)) != len(done)
        or not (round_dir / "results.json").exists()
    )
    items = collect()
    if stale or _missing(items):
        why = "first" if stale else f"again: {_missing_list(items)}"
        log(f"Analysing round {shown} of {folder.root} {why}.")
        analyze_run(folder.root, str(shown), options or AnalysisOptions(), log)
        items = collect()
    manifest = read_json(folder.manifest_path)
    record = read_json(folder.run_path) if folder.run_path.exists() else {}
    metrics = [folder.round_metrics(r) for r in done]
    study = study_round(metrics)
    rows = _read_csv(folder.summary_path)
    sections = [
        _config_section(folder, manifest, record),
        (ROUNDS.id, ROUNDS.title, _rounds_note(shown, study, "") + _table(_readable(rows))),
        *_figure_sections(items, rounds_csv),
    ]
    config = folder.read_config()
    subtitle = (
        f"{config.data.name}, procedure {config.prune.procedure}, "
        f"{record.get('rounds', '?')} rounds; study round {study} "
        f"({metrics[study]['density']:.2%} left, top-1 {metrics[study]['best_val_top1']:.4f}); "
        f"best round {record.get('best_round', '?')} (top-1 {_fmt(record.get('best_val_top1'))})"
        f"; round {shown} analysed below"
    )
    title = f"imprint report: {folder.root.name}"
    path = output_page(out or folder.root / "report.html", title)
    write_text(path, _page(title, subtitle, sections))
    return path


def output_page(path: str | Path, title: str) -> Path:
    """Where a page titled ``title`` may go: an .html file name, not a folder or link,
    and not an existing file other than an earlier page of the same kind (a report
    replaces a report, a comparison a comparison), so that --out can never overwrite a
    run's own files (config.toml, masks, its report)."""
    path = Path(path)
    if path.suffix.lower() != ".html":
        raise RunFolderError(f"--out {path}: a page's file name must end in .html.")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise RunFolderError(f"--out {path}: exists and is not a regular file.")
    if path.exists():
        with path.open("rb") as handle:  # a regular file (checked above): its head only
            head = handle.read(4096).decode("utf-8", "replace")
        kind = title.split(":")[0]
        if f"<title>{html.escape(kind)}" not in head:
            raise RunFolderError(
                f"--out {path}: exists and is not an earlier page of this kind ({kind}); "
                "choose another file name."
            )
    return path


def _config_section(
    folder: RunFolder, manifest: dict[str, Any], record: dict[str, Any]
) -> tuple[str, str, str]:
    env = [{"key": k, "value": v} for k, v in manifest.items() if k != "seeds"]
    run = [{"key": k, "value": v} for k, v in record.items()]
    content = (
        f'<div class="grid"><div><h3>config.toml</h3><pre>'
        f"{html.escape(read_text(folder.config_path))}</pre></div><div>"
        f"<h3>environment</h3>{_table(env)}{'<h3>run</h3>' + _table(run) if run else ''}"
        "</div></div>"
    )
    return (CONFIG.id, CONFIG.title, content)


def _rounds_note(shown: int, study: int, spread: str) -> str:
    return (
        f'<p class="note">Analysed round: {shown}. Study round: {study}, the sparsest round '
        "whose best top-1 is at least 97% of the dense round's (imprint analyze --round "
        f"study, the default; --round best picks the highest top-1). Densities are "
        f"fractions of the prunable weights left.{spread}</p>"
    )


@dataclass(frozen=True)
class _Item:
    """One figure a registry entry expects, as found: its file and caption, or a note
    saying why it is not there (the entry's skip reason, or missing)."""

    section: Section
    path: Path | None = None
    caption: str = ""
    note: str = ""
    missing: str = ""  # the file stem, when neither written nor skipped


def _figure_file(stem: Path) -> Path | None:
    for suffix in (".png", ".gif", ".svg"):
        if (path := stem.with_name(stem.name + suffix)).is_file():
            return path
    return None


def _skips(path: Path) -> dict[str, str]:
    """The "skipped" record (entry -> reason) of results.json, summary.json or
    readings.json; empty when the file or the record is absent."""
    if not path.exists():
        return {}
    skipped = read_json(path).get("skipped") or {}
    return skipped if isinstance(skipped, dict) else {}


def _entry_items(
    entry: analyses.Analysis | analyses.OverRounds,
    key: str,
    layer: int,
    directory: Path,
    skips: dict[str, str],
    prefix: str,
    channels: int,
) -> list[_Item]:
    """The figures of ``entry`` (at ``layer``) in ``directory``, or why they are not there."""
    if key in skips:
        where = "over rounds" if isinstance(entry, analyses.OverRounds) else directory.name
        return [_Item(entry.section, note=f"{prefix}{key} ({where}) skipped: {skips[key]}.")]
    items = []
    for spec in entry.figures:
        stem = spec.file_stem(layer)
        path = _figure_file(directory / stem)
        if path is None:
            note = f"{prefix}{stem} is missing from {directory}: imprint analyze did not write it."
            items.append(_Item(entry.section, note=note, missing=stem))
        else:
            items.append(_Item(entry.section, path, prefix + spec.caption_for(layer, channels)))
    return items


def _channels(folder: RunFolder) -> int:
    """The input channels of a run's images (captions speak of S_dc only when > 1)."""
    return int(folder.read_data_record()["shape"][0])


def _figure_items(
    over_rounds: Path,
    seed_over_rounds: Path,
    round_dir: Path,
    layers: Sequence[int],
    prefix: str,
    group: bool,
    channels: int,
) -> list[_Item]:
    """Every figure of the registry's entries for one report: over-round figures from
    ``over_rounds`` (a run's analysis/, or a group's), those a group does not draw from
    ``seed_over_rounds`` (its example seed's), the analysed round's from ``round_dir``
    for each hidden layer in ``layers``. Captions of one seed's figures follow ``prefix``."""
    over_skips = _skips(over_rounds / ("readings.json" if group else "summary.json"))
    seed_skips = _skips(seed_over_rounds / "summary.json")
    round_skips = _skips(round_dir / "results.json")
    items: list[_Item] = []
    for over in analyses.OVER_ROUNDS:
        if over.groups or not group:
            where = round_dir if over.in_round_folder else over_rounds
            items += _entry_items(over, over.name, 0, where, over_skips, "", channels)
        else:
            where = round_dir if over.in_round_folder else seed_over_rounds
            items += _entry_items(over, over.name, 0, where, seed_skips, prefix, channels)
    for entry in analyses.ROUND_ANALYSES:
        for layer in layers if entry.every_layer else [0]:
            items += _entry_items(
                entry, entry.key(layer), layer, round_dir, round_skips, prefix, channels
            )
    return items


def _missing(items: Sequence[_Item]) -> list[str]:
    return [item.missing for item in items if item.missing]


def _missing_list(items: Sequence[_Item]) -> str:
    return f"{', '.join(_missing(items))} missing"


def _figure_sections(items: Sequence[_Item], rounds_csv: Path) -> list[tuple[str, str, str]]:
    """The figure sections, in page order: each entry's figures or why they are not
    there; the scalar-locality section adds the table of ``rounds_csv``."""
    sections = []
    for section in _figure_section_order():
        parts = [
            _figure(_data_uri(i.path), i.caption, i.path.stem)
            if i.path is not None
            else f'<p class="note">{html.escape(i.note)}</p>'
            for i in items
            if i.section == section
        ]
        if section.id == "scalar-locality" and rounds_csv.exists():
            parts.append(_table(_readable(_read_csv(rounds_csv))))
        if parts:
            sections.append((section.id, section.title, "".join(parts)))
    return sections


# Column names of rounds tables as a reader wants them (readings: their registry label);
# fractions shown as percentages.
_COLUMN_NAMES = {
    "round": "round",
    "seeds": "seeds",
    "density": "weights left",
    "best_val_top1": "best top-1",
    "val_top5_at_best": "top-5",
    "seconds": "seconds",
}
_PERCENT = ("density", "best_val_top1", "val_top5_at_best")


def _readable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """A rounds table for reading: plain column names, percentages where the CLI prints
    percentages, each reading with its sd as one "value ± sd" cell ("too few pairs"
    where there is no value), and no column that is the same in every row."""
    out = []
    for row in rows:
        entry: dict[str, str] = {}
        for key, value in row.items():
            if key.endswith(("_sd", "_low", "_high", "_n", "_reason")):
                continue
            name = _column_name(key)
            sd, reason = row.get(f"{key}_sd"), row.get(f"{key}_reason")
            number = as_number(value)
            spec = READINGS.get(key)
            if reason:
                entry[name] = reason
            elif spec is not None and not math.isfinite(number):
                entry[name] = spec.missing
            elif spec is not None:
                entry[name] = format_spread(number, as_number(sd), spec.digits)
            elif key in _PERCENT or key.startswith("density_l"):
                spread = as_number(sd) if sd not in (None, "") else math.nan
                entry[name] = format_spread(number, spread, 2, percent=True)
            elif sd not in (None, ""):
                entry[name] = format_spread(number, as_number(sd), 3)
            else:
                entry[name] = _fmt(value)
        out.append(entry)
    if not out:
        return out
    columns = [k for k in out[0] if k == "round" or len({r.get(k) for r in out}) > 1]
    shown: list[str] = []  # a column equal to an earlier one (layer 0 left = weights left) once
    for key in columns:
        if not any(all(r.get(key) == r.get(other) for r in out) for other in shown):
            shown.append(key)
    return [{k: r.get(k, "") for k in shown} for r in out]


def _column_name(key: str) -> str:
    if key in READINGS:
        return READINGS[key].label
    if key in _COLUMN_NAMES:
        return _COLUMN_NAMES[key]
    for prefix, label in (
        ("density_l", "weights left, layer "),
        ("connected_l", "connected units, layer "),
        ("ipr_l", "weight IPR, layer "),
        ("kurtosis_l", "excess kurtosis, layer "),
    ):
        if key.startswith(prefix) and key.removeprefix(prefix).isdigit():
            return label + key.removeprefix(prefix)
    return key.replace("_", " ")


def _build_group_report(
    root: Path, which: str, options: AnalysisOptions | None, log, out: str | Path | None = None
) -> Path:
    group = RunFolder(root)
    members, folders, per_seed, mean_metrics = read_group(root, "report")
    example = folders[0]
    (shown,) = resolve_rounds(
        example, "last" if which == "all" else which, mean_metrics[: len(per_seed[0])]
    )
    seeds = [seed for seed, _ in members]
    analysis = example.root / "analysis"
    round_dir = analysis / f"round_{shown:03d}"
    layers = hidden_layers(example.round_masks(shown))
    prefix = f"Seed {seeds[0]} (one of {len(seeds)}): "

    def collect() -> list[_Item]:
        return _figure_items(
            root / "analysis",
            analysis,
            round_dir,
            layers,
            prefix,
            group=True,
            channels=_channels(example),
        )

    readings_path = root / "analysis" / "readings.json"
    current = read_json(readings_path).get("rounds") if readings_path.exists() else None
    stale = current != [shown] or not all(
        (f.root / "analysis" / round_dir.name / "results.json").exists() for f in folders
    )
    items = collect()
    if stale or _missing(items):
        why = "first" if stale else f"again: {_missing_list(items)}"
        log(f"Analysing round {shown} of every seed of {root} {why}.")
        analyze_run(root, str(shown), options or AnalysisOptions(), log)
        items = collect()
    readings = read_json(readings_path)["readings"]
    study = study_round(mean_metrics)
    table = [
        {
            "round": r["round"],
            "weights left": f"{r['density']:.2%}",
            "best top-1": format_spread(
                as_number(r["best_val_top1"]), as_number(r["best_val_top1_sd"]), 4
            ),
            **{spec.label: spec.format_mean(r) for spec in shown_in("group")},
            **{
                label: format_spread(as_number(r.get(name)), as_number(r.get(f"{name}_sd")), 2)
                for label, name in _GROUP_RESULTS
            },
        }
        for r in readings
    ]
    record = read_json(example.run_path) if example.run_path.exists() else {}
    sections = [
        _config_section(group, read_json(group.manifest_path), {"seeds": seeds}),
        (
            "rounds",
            "Rounds (mean ± sd over seeds)",
            _rounds_note(shown, study, f" Mean ± sample sd over the {len(seeds)} seeds.")
            + _table(_readable(_read_csv(group.summary_path))),
        ),
        (
            "readings",
            f"Readings at round {shown} (mean ± sd over {len(seeds)} seeds)",
            _table(table),
        ),
        *_figure_sections(items, root / "analysis" / "rounds.csv"),
    ]
    at = mean_metrics[study]
    subtitle = (
        f"{len(seeds)} seeds run together ({', '.join(map(str, seeds))}); study round {study} "
        f"({at['density']:.2%} left, top-1 "
        f"{format_spread(at['best_val_top1'], at['best_val_top1_sd'], 4)}); "
        f"round {shown} analysed below; stop: {record.get('stop_reason', '?')}"
    )
    title = f"imprint report: {root.name}"
    path = output_page(out or root / "report.html", title)
    write_text(path, _page(title, subtitle, sections))
    return path


# Results of the analysed round beside the registry's readings in the group table.
_GROUP_RESULTS = (("shifted copies", "fraction_shifted"),)


# ------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class _Run:
    folder: RunFolder
    label: str  # the config keys that differ from the other runs, seeds left out
    group: str  # runs of one group differ only in their seeds
    metrics: list[dict[str, Any]]


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def _collect(run_dirs: Sequence[str | Path]) -> list[_Run]:
    folders = [RunFolder(d) for d in run_dirs]
    configs = []
    for folder in folders:
        if not folder.config_path.exists():
            raise RunFolderError(f"{folder.root} is not an imprint run folder (no config.toml).")
        if not folder.completed_rounds():
            raise RunFolderError(f"{folder.root} has no completed round to compare.")
        configs.append(_flatten(config_to_dict(folder.read_config())))
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({c.get(k) for c in configs}) > 1]
    runs = []
    for folder, flat in zip(folders, configs):
        group_keys = [k for k in varying if not k.startswith("seeds.")]
        group = ", ".join(f"{k}={flat.get(k)}" for k in group_keys) or "same config"
        label = ", ".join(f"{k}={flat.get(k)}" for k in varying) or folder.root.name
        metrics = [folder.round_metrics(r) for r in folder.completed_rounds()]
        runs.append(_Run(folder, label, group, metrics))
    return runs


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _shape_and_first(folder: RunFolder, index: int) -> tuple[tuple[int, int, int], torch.Tensor]:
    masks = folder.round_masks(index)
    shape = tuple(int(v) for v in folder.read_data_record()["shape"])
    first = masks["layers.0.weight"]
    first = to_image_space(first, folder.permutation())
    return shape, first  # type: ignore[return-value]


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
    return _png(fig)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _legend_name(group: str, members: list[_Run]) -> str:
    """A group's legend label: what differs, when that is short; else the name of its
    folder (a sweep's variant: "oneshot" of runs/oneshot,procedure=oneshot-1a2b3c4d)."""
    short = _short(group)
    if len(short) <= 40:
        return short
    folder = members[0].folder.root
    if folder.name.startswith("seed_"):  # a member of a group folder
        folder = folder.parent
    name = re.sub(r"-[0-9a-f]{8}$", "", folder.name).split(",")[0]
    return name if len(name) <= 40 else name[:37] + "..."


def _named(run: _Run) -> str:
    """A run in a caption: its group's legend name and its seed."""
    return f"{_legend_name(run.group, [run])}, seed {run.folder.read_config().seeds.init}"


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
            {str(r.folder.root.parent if len(members) > 1 else r.folder.root) for r in members}
        )
        seeds = sorted({r.folder.read_config().seeds.init for r in members})
        rounds = sorted({len(r.metrics) for r in members})
        rows.append(
            {
                "name (in the figures)": _legend_name(group, members),
                "group (what differs)": group,
                "runs": len(members),
                "seeds": ", ".join(map(str, seeds)),
                "rounds": "-".join(map(str, (rounds[0], rounds[-1])))
                if len(rounds) > 1
                else rounds[0],
                "where": ", ".join(folders),
            }
        )
    return rows


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
    sections.append(("runs", "Runs", _table(_listing(runs))))
    sections.append(
        (
            "accuracy",
            "Accuracy against remaining weights",
            _figure(
                _overlay(runs, "best_val_top1", "best validation top-1 (%)"),
                "Best top-1 per round; bands: ± 1 sd over the seeds of one config.",
                "accuracy",
            ),
        )
    )
    sections.append(
        (
            "locality",
            "Locality against remaining weights",
            _figure(
                _overlay(runs, "locality_index", "neighbour locality index (random masks = 0)"),
                "First-layer neighbour locality index: the excess fraction of same-channel "
                "input pairs that are neighbours (<= 1.5 px), 0 for random masks of equal "
                "C_in, 1 when every pair is. Bands: ± 1 sd over the seeds of one config.",
                "locality",
            ),
        )
    )

    maps_html, gallery_html, rows = [], [], []
    for run in runs:
        index = _closest_round(run, density)
        metric = run.metrics[index]
        shape, first = _shape_and_first(run.folder, index)
        title = f"{run.folder.root.name}: round {index}, {metric['density']:.2%} left"
        maps = locality_maps(first, shape)
        maps_html.append(
            _figure(_png(plot_displacement_maps(maps.s_sc, None, title=title)), _named(run), "S_sc")
        )
        c_in = first.sum(dim=1)
        units = select_units(c_in, "most", gallery_size)
        gallery_html.append(
            _figure(
                _png(plot_gallery(unit_images(first.double(), shape, units), title, columns=9)),
                f"most connected units; {_named(run)}",
                "gallery",
            )
        )
        readings = round_readings(run.folder, index)
        rows.append(
            {
                "run": run.folder.root.name,
                "label": run.label,
                "round": index,
                "density": metric["density"],
                "best top-1": metric["best_val_top1"],
                **{spec.label: spec.format(readings) for spec in shown_in("compare")},
                "connected units": int((c_in > 0).sum()),
                "mean C_in": float(c_in[c_in > 0].double().mean()) if (c_in > 0).any() else 0.0,
            }
        )
    sections.append(
        (
            "maps",
            f"S_sc maps at about {density:.2%} of the weights",
            f'<div class="grid">{"".join(maps_html)}</div>',
        )
    )
    sections.append(
        (
            "galleries",
            f"Galleries at about {density:.2%}",
            f'<div class="grid">{"".join(gallery_html)}</div>',
        )
    )
    sections.append(("table", "Scalar results at equal density", _table(rows)))
    path = output_page(out, "imprint comparison")
    write_text(
        path,
        _page(
            "imprint comparison",
            f"{len(runs)} runs, compared at {density:.2%} of the prunable weights",
            sections,
        ),
    )
    return path
