"""The report of a run or of a group of seeds (`imprint report`): a self-contained HTML
page, figures embedded as data URIs. Owned here: RUN/report.html and GROUP/report.html.

A report lays out what `imprint analyze` wrote, section by section from the registry
of :mod:`imprint.analyses` (titles, captions, figure files). Every figure an entry
expects is shown, or in its place the reason the entry gave for skipping it (no data,
no 2-D geometry, ...); a figure that is neither written nor skipped makes the report
run the analysis of that round first, and one still missing after that is named. A run
and a group are laid out by one builder (:func:`build_report`); what differs is their
:class:`_View`."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imprint import analyses
from imprint.analyses import AnalysisOptions, Section, hidden_layers
from imprint.analyze import analyze_run
from imprint.pages import data_uri, figure, fmt, output_page, page, readable, table
from imprint.readings import as_number, format_spread, shown_in
from imprint.results import GroupResults, RunResults, open_results, read_csv
from imprint.safeio import read_json, read_text, write_text

__all__ = ["build_report", "report_sections", "output_page"]


CONFIG = Section("config", "Config and environment")


ROUNDS = Section("rounds", "Rounds")


def report_sections() -> list[Section]:
    """A run report's sections in page order: config and rounds, then the figure
    sections of the analyses registry (a group's report adds "readings" after rounds)."""
    return [CONFIG, ROUNDS, *_figure_section_order()]


def _figure_section_order() -> list[Section]:
    """imprint.analyses.SECTIONS, then any other section an entry names."""
    order = list(analyses.SECTIONS)
    entries: list[analyses.OverRounds | analyses.Analysis] = [
        *analyses.OVER_ROUNDS,
        *analyses.ROUND_ANALYSES,
    ]
    for entry in entries:
        if entry.section not in order:
            order.append(entry.section)
    return order


@dataclass(frozen=True)
class _View:
    """What a report shows of a run or of a group: everything else is one builder."""

    root: Path
    shown: int  # the analysed round
    study: int
    stale: bool  # the analysis must (re)run before the page is laid out
    collect: Any  # () -> the figure items, as found now
    rounds_csv: Path  # the table of the scalar-locality section
    sections: Any  # () -> the sections before the figures (config, rounds, readings)
    subtitle: str


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
    results = open_results(run_dir, "report")
    view = (
        _group_view(results, which)
        if isinstance(results, GroupResults)
        else _run_view(results, which)
    )
    items = view.collect()
    if view.stale or _missing(items):
        why = "first" if view.stale else f"again: {_missing_list(items)}"
        what = "every seed of " if isinstance(results, GroupResults) else ""
        log(f"Analysing round {view.shown} of {what}{view.root} {why}.")
        analyze_run(view.root, str(view.shown), options or AnalysisOptions(), log)
        items = view.collect()
    sections = [*view.sections(), *_figure_sections(items, view.rounds_csv)]
    title = f"imprint report: {view.root.name}"
    path = output_page(out or view.root / "report.html", title)
    write_text(path, page(title, view.subtitle, sections))
    return path


def _run_view(run: RunResults, which: str) -> _View:
    (shown,) = run.resolve("last" if which == "all" else which)
    analysis, round_dir = run.analysis_dir, run.analysis_round_dir(shown)
    layers = hidden_layers(run.masks(shown))
    rounds_csv = analysis / "rounds.csv"
    stale = (
        not rounds_csv.exists()
        or len(run.rounds_table()) != len(run.rounds)
        or not (round_dir / "results.json").exists()
    )
    study, record, metrics = run.study_round, run.record, run.metrics

    def collect() -> list[_Item]:
        return _figure_items(analysis, analysis, round_dir, layers, "", False, run.channels)

    def sections() -> list[tuple[str, str, str]]:
        rounds = _rounds_note(shown, study, "") + table(readable(run.summary_table()))
        return [
            _config_section(run.folder.config_path, run.manifest, record),
            (ROUNDS.id, ROUNDS.title, rounds),
        ]

    config = run.config
    subtitle = (
        f"{config.data.name}, procedure {config.prune.procedure}, "
        f"{record.get('rounds', '?')} rounds; study round {study} "
        f"({metrics[study]['density']:.2%} left, top-1 {metrics[study]['best_val_top1']:.4f}); "
        f"best round {record.get('best_round', '?')} (top-1 {fmt(record.get('best_val_top1'))})"
        f"; round {shown} analysed below"
    )
    return _View(run.root, shown, study, stale, collect, rounds_csv, sections, subtitle)


def _group_view(group: GroupResults, which: str) -> _View:
    example, seeds = group.example, group.seeds
    mean = group.mean_metrics
    (shown,) = example.resolve("last" if which == "all" else which, mean[: len(example.rounds)])
    round_dir = example.analysis_round_dir(shown)
    layers = hidden_layers(example.masks(shown))
    prefix = f"Example, one seed: seed {seeds[0]} of {len(seeds)}. "
    pooled_dir = group.analysis_dir / f"round_{shown:03d}"
    current = group.readings_record().get("rounds")
    stale = (
        current != [shown]
        or not (pooled_dir / "results.json").exists()
        or not all((m.analysis_round_dir(shown) / "results.json").exists() for m in group.members)
    )
    study = group.study_round

    def collect() -> list[_Item]:
        return _figure_items(
            group.analysis_dir,
            example.analysis_dir,
            round_dir,
            layers,
            prefix,
            True,
            example.channels,
            pooled=(pooled_dir, f"Over the {len(seeds)} seeds (summed, or mean ± sd): "),
        )

    def sections() -> list[tuple[str, str, str]]:
        readings = [
            {
                "round": r["round"],
                "weights left": f"{r['density']:.2%}",
                "val. top-1": format_spread(
                    as_number(r["best_val_top1"]), as_number(r["best_val_top1_sd"]), 4
                ),
                **(
                    {
                        "test top-1": format_spread(
                            as_number(r["test_top1_at_best"]),
                            as_number(r.get("test_top1_at_best_sd")),
                            4,
                        )
                    }
                    if "test_top1_at_best" in r
                    else {}
                ),
                **{spec.label: spec.format_mean(r) for spec in shown_in("group")},
                **{
                    label: format_spread(as_number(r.get(name)), as_number(r.get(f"{name}_sd")))
                    for label, name in _GROUP_RESULTS
                },
            }
            for r in group.readings_record()["readings"]
        ]
        spread = f" Mean ± sample sd over the {len(seeds)} seeds."
        return [
            _config_section(group.folder.config_path, group.manifest, {"seeds": seeds}),
            (
                "rounds",
                "Rounds (mean ± sd over seeds)",
                _rounds_note(shown, study, spread) + table(readable(group.summary_table())),
            ),
            (
                "readings",
                f"Readings at round {shown} (mean ± sd over {len(seeds)} seeds)",
                table(readings),
            ),
        ]

    at = mean[study]
    subtitle = (
        f"{len(seeds)} seeds run together ({', '.join(map(str, seeds))}); study round {study} "
        f"({at['density']:.2%} left, top-1 "
        f"{format_spread(at['best_val_top1'], at['best_val_top1_sd'], 4)}); "
        f"round {shown} analysed below; stop: {example.record.get('stop_reason', '?')}"
    )
    return _View(
        group.root,
        shown,
        study,
        stale,
        collect,
        group.analysis_dir / "rounds.csv",
        sections,
        subtitle,
    )


def _config_section(
    config_path: Path, manifest: dict[str, Any], record: dict[str, Any]
) -> tuple[str, str, str]:
    env = [
        {"key": f"{k}.{kk}", "value": vv} if isinstance(v, dict) else {"key": k, "value": v}
        for k, v in manifest.items()
        if k != "seeds"
        for kk, vv in (v.items() if isinstance(v, dict) else [(None, v)])
    ]  # nested records (the engine's) as dotted keys, one row each
    run = [{"key": k, "value": v} for k, v in record.items()]
    content = (
        f'<div class="grid"><div><h3>config.toml</h3><pre>'
        f"{html.escape(read_text(config_path))}</pre></div><div>"
        f"<h3>environment</h3>{table(env)}{'<h3>run</h3>' + table(run) if run else ''}"
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


def _figure_items(
    over_rounds: Path,
    seed_over_rounds: Path,
    round_dir: Path,
    layers: Sequence[int],
    prefix: str,
    group: bool,
    channels: int,
    pooled: tuple[Path, str] | None = None,
) -> list[_Item]:
    """Every figure of the registry's entries for one report: over-round figures from
    ``over_rounds`` (a run's analysis/, or a group's), those a group does not draw from
    ``seed_over_rounds`` (its example seed's), the analysed round's from ``round_dir``
    for each hidden layer in ``layers``. Captions of one seed's figures follow ``prefix``.
    ``pooled`` (a group's: its round folder and a caption prefix) holds the figures of
    the entries that pool their seeds; the others are the example seed's."""
    over_skips = _skips(over_rounds / ("readings.json" if group else "summary.json"))
    seed_skips = _skips(seed_over_rounds / "summary.json")
    round_skips = _skips(round_dir / "results.json")
    pooled_skips = _skips(pooled[0] / "results.json") if pooled else {}
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
            if pooled is not None and entry.pool is not None:
                where, skips, said = pooled[0], pooled_skips, pooled[1]
            else:
                where, skips, said = round_dir, round_skips, prefix
            items += _entry_items(entry, entry.key(layer), layer, where, skips, said, channels)
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
            figure(data_uri(i.path), i.caption, i.path.stem)
            if i.path is not None
            else f'<p class="note">{html.escape(i.note)}</p>'
            for i in items
            if i.section == section
        ]
        if section.id == "scalar-locality" and rounds_csv.exists():
            parts.append(table(readable(read_csv(rounds_csv))))
        if parts:
            sections.append((section.id, section.title, "".join(parts)))
    return sections


# Results of the analysed round beside the registry's readings in the group table.
_GROUP_RESULTS = (("shifted copies", "fraction_shifted"),)
