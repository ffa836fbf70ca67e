"""Self-contained HTML pages: one per run (`imprint report`) and one across runs
(`imprint compare`). Figures are embedded as data URIs; the pages load nothing from
the network. A report lays out results computed by `imprint analyze` (run first when
missing); a comparison draws its overlays from the runs' files."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imprint.analysis.locality import to_image_space
from imprint.analysis.maps import locality_maps
from imprint.analysis.uncertainty import format_spread, reading_from_columns
from imprint.analysis.units import select_units, unit_images
from imprint.analyze import AnalysisOptions, analyze_run, resolve_rounds, round_readings
from imprint.config import config_to_dict
from imprint.data import pixel_permutation
from imprint.imp import study_round, summarize_seeds
from imprint.plots import STYLE, density_axis, plot_displacement_maps, plot_gallery
from imprint.runs import RunFolder, RunFolderError, group_members, is_group, write_text

__all__ = ["REPORT_SECTIONS", "build_report", "build_comparison", "COMPARE_SECTIONS"]

# (id, title, [(figure path relative to RUN/analysis with {r} = best round dir, caption)])
REPORT_SECTIONS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("config", "Config and environment", []),
    ("rounds", "Rounds", []),
    (
        "accuracy",
        "Accuracy against remaining weights",
        [
            (
                "accuracy.png",
                "Best validation top-1 per round; the star marks the best round, the "
                "dotted line the study round (the sparsest keeping >= 97% of the dense "
                "top-1). Look for accuracy holding or rising as weights go.",
            ),
        ],
    ),
    (
        "curves",
        "Training and validation curves",
        [
            (
                "{r}/curves.png",
                "Loss and accuracy over the analysed round's SGD steps: look for "
                "convergence within the round and no overfitting.",
            ),
        ],
    ),
    (
        "connectivity",
        "Connectivity",
        [
            (
                "{r}/cin_hist_l0.png",
                "C_in of first-layer units (log counts): a mode at a few "
                "inputs and a tail, as in the paper.",
            ),
            ("{r}/cin_hist_l1.png", "C_in of second-layer units through effective masks."),
        ],
    ),
    (
        "pixel-map",
        "Pixel map",
        [
            (
                "{r}/pixel_map.png",
                "Connections per input pixel: where the first layer still looks.",
            ),
        ],
    ),
    (
        "locality-maps",
        "Locality maps",
        [
            (
                "{r}/locality_maps_l0.png",
                "S_sc(d) and S_dc(d) of layer 1: a bright centre means "
                "connected inputs are neighbours.",
            ),
            (
                "{r}/connection_resolved_l0.png",
                "S_sc for units binned by C_in: locality at every "
                "connectivity, not only for sparse units.",
            ),
            ("{r}/locality_maps_l1.png", "The same for layer 2 in input space (effective masks)."),
        ],
    ),
    (
        "galleries",
        "Mask galleries",
        [
            (
                "{r}/gallery_most_l0.png",
                "Masks of the most connected first-layer units: look for "
                "compact blobs, bars and repeated shapes.",
            ),
            (
                "{r}/gallery_weighted_most_l0.png",
                "The same masks carrying their weights (red positive, blue negative).",
            ),
            ("{r}/gallery_least_l0.png", "Least connected units (C_in >= 2)."),
            ("{r}/gallery_most_l1.png", "Aggregated layer-2 features: effective masks M1 M2."),
            ("{r}/gallery_weighted_most_l1.png", "Aggregated layer-2 weights (W1 M1)(W2 M2)."),
        ],
    ),
    (
        "evolution",
        "Evolution over rounds",
        [
            (
                "evolution.gif",
                "The analysed round's most connected units, round by round: watch "
                "diffuse masks condense into local patterns.",
            ),
        ],
    ),
    (
        "ablation",
        "Node ablation",
        [
            (
                "{r}/ablation.png",
                "Accuracy after removing first-layer units without retraining: "
                "if the most connected go first and accuracy drops fastest, they "
                "carry the task.",
            ),
        ],
    ),
    (
        "invariance",
        "Translational invariance",
        [
            (
                "{r}/invariance.png",
                "Masks equal up to a 2-D shift, one cluster per row: the same "
                "pattern at different positions, like a convolution filter.",
            ),
        ],
    ),
    (
        "class-response",
        "Class response",
        [
            (
                "{r}/class_response.png",
                "Class-averaged activations: near-zero rows are units that "
                "respond alike to every class (generic features).",
            ),
        ],
    ),
    (
        "scalar-locality",
        "Scalar locality with its null",
        [
            (
                "locality.png",
                "Neighbour locality index of the first layer: the excess fraction of "
                "same-channel input pairs within 1.5 px, (f - f0) / (1 - f0); 0 for random "
                "masks of equal C_in, 1 when every pair is a neighbour pair. Band: ± 1 sd.",
            ),
            (
                "mass_within.png",
                "Fraction of S_sc mass within 2 px against its random-mask null. Band: ± 1 sd.",
            ),
        ],
    ),
    (
        "non-gaussianity",
        "Non-Gaussianity",
        [
            (
                "kurtosis.png",
                "Excess kurtosis of first-layer pre-activations (0 = Gaussian), after "
                "Redman et al.",
            ),
        ],
    ),
]
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
pre{background:#f5f5f5;padding:8px;font-size:12px;overflow:auto;max-height:360px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:10px}
.note{font-size:13px;color:#666}
"""


def _data_uri(path: Path) -> str:
    kind = {"png": "image/png", "gif": "image/gif", "svg": "image/svg+xml"}[path.suffix[1:]]
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


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
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as error:
        raise RunFolderError(f"Cannot read {path}: {error.strerror}.") from None


def build_report(
    run_dir: str | Path, which: str = "study", options: AnalysisOptions | None = None, log=print
) -> Path:
    """Write RUN/report.html for round ``which`` (study, best, last or a number) from
    RUN/analysis, running the analysis first where its results are missing. For a
    group folder, GROUP/report.html: every reading as mean ± sd over its seeds, bands
    over seeds on the over-round figures, and one seed's figures as an example."""
    if is_group(run_dir):
        return _build_group_report(Path(run_dir), which, options, log)
    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        raise RunFolderError(f"{folder.root} is not an imprint run folder (no config.toml).")
    analysis = folder.root / "analysis"
    (shown,) = resolve_rounds(folder, "last" if which == "all" else which)
    round_dir = f"round_{shown:03d}"
    done = folder.completed_rounds()
    rounds_csv = analysis / "rounds.csv"
    stale = not rounds_csv.exists() or len(_read_csv(rounds_csv)) != len(done)
    if stale or not (analysis / round_dir / "results.json").exists():
        log(f"Analysing round {shown} of {folder.root} first.")
        analyze_run(folder.root, str(shown), options or AnalysisOptions(), log)
    manifest = json.loads(folder.manifest_path.read_text())
    record = json.loads(folder.run_path.read_text()) if folder.run_path.exists() else {}
    metrics = [folder.round_metrics(r) for r in done]
    study = study_round(metrics)
    rows = _read_csv(folder.summary_path)
    sections = [
        _config_section(folder, manifest, record),
        ("rounds", "Rounds", _rounds_note(shown, study, "") + _table(rows)),
        *_figure_sections(analysis, analysis, round_dir, ""),
    ]
    config = folder.read_config()
    subtitle = (
        f"{config.data.name}, procedure {config.prune.procedure}, "
        f"{record.get('rounds', '?')} rounds; study round {study} "
        f"({metrics[study]['density']:.2%} left, top-1 {metrics[study]['best_val_top1']:.4f}); "
        f"best round {record.get('best_round', '?')} (top-1 {_fmt(record.get('best_val_top1'))})"
        f"; round {shown} analysed below"
    )
    path = folder.root / "report.html"
    write_text(path, _page(f"imprint report: {folder.root.name}", subtitle, sections))
    return path


def _config_section(
    folder: RunFolder, manifest: dict[str, Any], record: dict[str, Any]
) -> tuple[str, str, str]:
    env = [{"key": k, "value": v} for k, v in manifest.items() if k != "seeds"]
    run = [{"key": k, "value": v} for k, v in record.items()]
    content = (
        f'<div class="grid"><div><h3>config.toml</h3><pre>'
        f"{html.escape(folder.config_path.read_text())}</pre></div><div>"
        f"<h3>environment</h3>{_table(env)}{'<h3>run</h3>' + _table(run) if run else ''}"
        "</div></div>"
    )
    return ("config", "Config and environment", content)


def _rounds_note(shown: int, study: int, spread: str) -> str:
    return (
        f'<p class="note">Analysed round: {shown}. Study round: {study}, the sparsest round '
        "whose best top-1 is at least 97% of the dense round's (imprint analyze --round "
        f"study, the default; --round best picks the highest top-1). Densities are "
        f"fractions of the prunable weights left.{spread}</p>"
    )


def _figure_sections(
    over_rounds: Path, per_round: Path, round_dir: str, prefix: str
) -> list[tuple[str, str, str]]:
    """The figure sections of REPORT_SECTIONS: over-round figures from ``over_rounds``,
    the analysed round's from ``per_round``/``round_dir`` (captions after ``prefix``)."""
    sections = []
    for sid, title, figures in REPORT_SECTIONS:
        if not figures:
            continue
        parts = []
        for rel, caption in figures:
            one_round = "{r}" in rel
            path = (per_round if one_round else over_rounds) / rel.format(r=round_dir)
            if path.exists():
                parts.append(
                    _figure(_data_uri(path), (prefix if one_round else "") + caption, path.stem)
                )
        if sid == "scalar-locality" and (over_rounds / "rounds.csv").exists():
            parts.append(_table(_readable(_read_csv(over_rounds / "rounds.csv"))))
        if parts:  # e.g. no layer 2, or no data for ablation: the section is left out
            sections.append((sid, title, "".join(parts)))
    return sections


def _readable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Readings with their sd as one "value ± sd" column; bounds and counts left out."""
    out = []
    for row in rows:
        entry: dict[str, str] = {}
        for key, value in row.items():
            if key.endswith(("_sd", "_low", "_high", "_n", "_reason")):
                continue
            sd = row.get(f"{key}_sd")
            reason = row.get(f"{key}_reason")
            if reason:
                entry[key] = reason
            elif sd not in (None, ""):
                entry[key] = format_spread(float(value or "nan"), float(sd), 3)
            else:
                entry[key] = _fmt(value)
        out.append(entry)
    return out


def _build_group_report(root: Path, which: str, options: AnalysisOptions | None, log) -> Path:
    group = RunFolder(root)
    members = group_members(root)
    folders = [RunFolder(path) for _, path in members]
    per_seed = [[f.round_metrics(r) for r in f.completed_rounds()] for f in folders]
    if not all(per_seed):
        raise RunFolderError(f"{root}: some seed has no completed round to report.")
    mean_metrics = summarize_seeds(per_seed)
    example = folders[0]
    (shown,) = resolve_rounds(
        example, "last" if which == "all" else which, mean_metrics[: len(per_seed[0])]
    )
    round_dir = f"round_{shown:03d}"
    readings_path = root / "analysis" / "readings.json"
    current = (
        json.loads(readings_path.read_text()).get("rounds") if readings_path.exists() else None
    )
    if current != [shown] or not all(
        (f.root / "analysis" / round_dir / "results.json").exists() for f in folders
    ):
        log(f"Analysing round {shown} of every seed of {root} first.")
        analyze_run(root, str(shown), options or AnalysisOptions(), log)
    readings = json.loads(readings_path.read_text())["readings"]
    study = study_round(mean_metrics)
    table = [
        {
            "round": r["round"],
            "weights left": f"{r['density']:.2%}",
            "best top-1": format_spread(_num(r["best_val_top1"]), _num(r["best_val_top1_sd"]), 4),
            **{
                label: format_spread(_num(r[name]), _num(r[f"{name}_sd"]), digits)
                for label, name, digits in _GROUP_COLUMNS
            },
        }
        for r in readings
    ]
    record = json.loads(example.run_path.read_text()) if example.run_path.exists() else {}
    seeds = [seed for seed, _ in members]
    sections = [
        _config_section(group, json.loads(group.manifest_path.read_text()), {"seeds": seeds}),
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
        *_figure_sections(
            root / "analysis",
            example.root / "analysis",
            round_dir,
            f"Seed {seeds[0]} (one of {len(seeds)}): ",
        ),
    ]
    at = mean_metrics[study]
    subtitle = (
        f"{len(seeds)} seeds run together ({', '.join(map(str, seeds))}); study round {study} "
        f"({at['density']:.2%} left, top-1 "
        f"{format_spread(at['best_val_top1'], at['best_val_top1_sd'], 4)}); "
        f"round {shown} analysed below; stop: {record.get('stop_reason', '?')}"
    )
    path = root / "report.html"
    write_text(path, _page(f"imprint report: {root.name}", subtitle, sections))
    return path


_GROUP_COLUMNS = (
    ("locality index", "locality_index", 2),
    ("S_sc mass < 2 px", "mass_within_r", 3),
    ("pair-distance ratio", "locality_ratio", 2),
    ("weight IPR", "ipr_mean", 3),
    ("shifted copies", "fraction_shifted", 2),
    ("kurtosis", "kurtosis_mean", 2),
)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


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
    config = folder.read_config()
    if config.data.permute_pixels:
        first = to_image_space(first, pixel_permutation(first.shape[1], config.data.seed))
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
        mean = np.nanmean(ys, axis=0)
        ax.plot(
            x,
            mean,
            "o-",
            ms=3,
            color=f"C{i}",
            label=f"{group} ({len(members)} run{'s' if len(members) > 1 else ''})",
        )
        if len(members) > 1:
            sd = np.nanstd(ys, axis=0, ddof=1)
            ax.fill_between(x, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
    density_axis(ax, ylabel, log_y)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


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
    listing = [
        {"run": str(r.folder.root), "label": r.label, "group": r.group, "rounds": len(r.metrics)}
        for r in runs
    ]
    sections.append(("runs", "Runs", _table(listing)))
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
            _figure(_png(plot_displacement_maps(maps.s_sc, None, title=title)), run.label, "S_sc")
        )
        c_in = first.sum(dim=1)
        units = select_units(c_in, "most", gallery_size)
        gallery_html.append(
            _figure(
                _png(plot_gallery(unit_images(first.double(), shape, units), title, columns=9)),
                f"most connected units; {run.label}",
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
                "locality index": reading_from_columns(readings, "locality_index").format(),
                "pair-distance ratio": readings.get("locality_ratio"),
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
    path = Path(out)
    write_text(
        path,
        _page(
            "imprint comparison",
            f"{len(runs)} runs, compared at {density:.2%} of the prunable weights",
            sections,
        ),
    )
    return path
