"""The analyses registry: analyze writes what the entries declare, the report shows it
(or the reason an entry gave), and one new entry is all an analysis needs."""

from __future__ import annotations

import html
import json
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest

import imprint.analyze
from imprint import analyses
from imprint.analyses import Analysis, Figure, Result, Section, skip
from imprint.analyze import AnalysisOptions, analyze_run
from imprint.data import DataError
from imprint.imp import run_imp
from imprint.report import build_report, report_sections
from imprint.runs import RunFolder
from tests.conftest import clipped_texts, smoke_config

OPTIONS = AnalysisOptions(gallery_size=8, evolution_units=8, invariance_units=16, formats=("png",))
LAST = 3  # the smoke config's last round


def _quiet(_):
    return None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("trained")
    run_imp(smoke_config("data.channels=3"), path, device="cpu", progress=False, log=_quiet)
    return path


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run, nothing analysed."""
    return shutil.copytree(trained, tmp_path / "run")


def _report(run, log=_quiet) -> str:
    return build_report(run, "last", OPTIONS, log=log).read_text()


def _toy_compute(r, layer):
    c_in = r.layer(layer).conn.c_in
    return Result(
        numbers={"toy_connected": int((c_in > 0).sum())},
        arrays={f"toy_c_in_l{layer}": c_in.numpy()},
        shown={"c_in": c_in.numpy(), "layer": layer},
    )


def _toy_plot(result):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(range(len(result.shown["c_in"])), result.shown["c_in"])
    ax.set_title(f"toy, layer {result.shown['layer']}")
    return [fig]


TOY = Analysis(
    "toy",
    Section("toy", "A toy analysis"),
    (Figure("toy_l{l}", "Toy bars of layer {l}'s C_in, one per unit."),),
    _toy_compute,
    _toy_plot,
    every_layer=True,
)
SKIPPING = Analysis(
    "never",
    Section("never", "An analysis that never runs"),
    (Figure("never", "Never drawn."),),
    lambda r, layer: skip("no such thing: this toy always skips"),
    lambda result: pytest.fail("plot called for a skipped result"),
)


def test_registry_is_consistent():
    keys = [
        e.key(layer)
        for e in analyses.ROUND_ANALYSES
        for layer in (range(4) if e.every_layer else [0])
    ]
    assert len(keys) == len(set(keys)), "two entries would record a skip under one key"
    for entries in (analyses.ROUND_ANALYSES, analyses.OVER_ROUNDS):
        stems = [f.stem for e in entries for f in e.figures]
        assert len(stems) == len(set(stems)), "two figures would share one file"
    for entry in analyses.ROUND_ANALYSES:  # one file per layer exactly when every_layer
        assert all(("{l}" in f.stem) == entry.every_layer for f in entry.figures), entry.name
    for entry in (*analyses.ROUND_ANALYSES, *analyses.OVER_ROUNDS):
        assert entry.section in analyses.SECTIONS, entry.name
        assert all(f.caption for f in entry.figures), entry.name
    ids = [s.id for s in report_sections()]
    assert len(ids) == len(set(ids))


def test_every_entry_is_written_and_reported(run):
    summary = analyze_run(run, "last", OPTIONS, log=_quiet)
    assert summary["skipped"] == {}
    (result,) = summary["per_round"]
    assert result["skipped"] == {}
    analysis = run / "analysis"
    round_dir = analysis / f"round_{LAST:03d}"
    layers = [int(layer) for layer in result["layers"]]
    assert layers == [0, 1]
    channels = RunFolder(run).read_data_record()["shape"][0]
    expected = []  # (file, caption)
    for entry in analyses.OVER_ROUNDS:
        for spec in entry.figures:
            suffix = ".gif" if entry.name == "evolution" else ".png"
            where = round_dir if entry.in_round_folder else analysis
            expected.append((where / f"{spec.stem}{suffix}", spec.caption))
    for entry in analyses.ROUND_ANALYSES:
        for layer in layers if entry.every_layer else [0]:
            for spec in entry.figures:
                path = round_dir / f"{spec.file_stem(layer)}.png"
                expected.append((path, spec.caption_for(layer, channels)))
    written = {str(run / p) for p in summary["figures"] + result["figures"]}
    for path, _ in expected:
        assert path.is_file() and str(path) in written, path
    logs = []
    page = _report(run, logs.append)
    assert logs == []  # everything was there: no re-analysis
    for path, caption in expected:
        assert f'alt="{path.stem}"' in page, path.stem
        assert html.escape(caption) in page, caption
    for section in report_sections():
        assert f'<section id="{section.id}">' in page, section.id
    assert "skipped" not in page and "is missing from" not in page


def test_a_new_entry_is_analysed_and_reported(run, monkeypatch):
    monkeypatch.setattr(analyses, "ROUND_ANALYSES", (*analyses.ROUND_ANALYSES, TOY))
    summary = analyze_run(run, "last", OPTIONS, log=_quiet)
    round_dir = run / "analysis" / f"round_{LAST:03d}"
    results = json.loads((round_dir / "results.json").read_text())
    arrays = np.load(round_dir / "arrays.npz")
    for layer in (0, 1):
        assert (round_dir / f"toy_l{layer}.png").is_file()
        assert f"analysis/round_{LAST:03d}/toy_l{layer}.png" in summary["per_round"][0]["figures"]
        c_in = arrays[f"toy_c_in_l{layer}"]
        assert results["layers"][str(layer)]["toy_connected"] == int((c_in > 0).sum())
    assert (arrays["toy_c_in_l0"] == arrays["c_in_l0"]).all()  # the same C_in underneath
    page = _report(run)
    assert '<section id="toy"><h2>A toy analysis</h2>' in page
    assert [s.id for s in report_sections()][-1] == "toy"  # a new section goes last
    for layer in (0, 1):
        assert f'alt="toy_l{layer}"' in page
        assert html.escape(f"Toy bars of layer {layer}'s C_in, one per unit.") in page


def test_a_missing_figure_is_analysed_again(run, monkeypatch):
    analyze_run(run, "last", OPTIONS, log=_quiet)
    round_dir = run / "analysis" / f"round_{LAST:03d}"
    (round_dir / "ablation.png").unlink()
    (run / "analysis" / "accuracy.png").unlink()
    logs = []
    page = _report(run, logs.append)
    assert any("Analysing round 3" in line and "ablation" in line for line in logs), logs
    assert (round_dir / "ablation.png").is_file() and (run / "analysis" / "accuracy.png").is_file()
    assert 'alt="ablation"' in page and 'alt="accuracy"' in page
    # An entry registered after the analysis: its figures are missing, so analysed too.
    monkeypatch.setattr(analyses, "ROUND_ANALYSES", (*analyses.ROUND_ANALYSES, TOY))
    logs.clear()
    page = _report(run, logs.append)
    assert any("toy_l0" in line for line in logs), logs
    assert (round_dir / "toy_l1.png").is_file() and 'alt="toy_l1"' in page
    logs.clear()
    _report(run, logs.append)
    assert logs == []  # now complete


def test_a_skipping_entry_shows_its_reason(run, monkeypatch):
    monkeypatch.setattr(analyses, "ROUND_ANALYSES", (*analyses.ROUND_ANALYSES, SKIPPING))
    summary = analyze_run(run, "last", OPTIONS, log=_quiet)
    reason = "no such thing: this toy always skips"
    assert summary["per_round"][0]["skipped"] == {"never": reason}
    assert not list((run / "analysis").rglob("never.*"))
    logs = []
    page = _report(run, logs.append)
    assert logs == []  # a recorded skip is not a missing figure: no re-analysis
    assert '<section id="never">' in page
    assert html.escape(f"never (round_{LAST:03d}) skipped: {reason}.") in page


def test_without_data_the_report_says_why(run, monkeypatch):
    def unavailable(config):
        raise DataError("the dataset files are gone")

    monkeypatch.setattr(imprint.analyze, "load_dataset", unavailable)
    page = _report(run)  # analyses first: nothing there yet
    results = json.loads((run / "analysis" / f"round_{LAST:03d}" / "results.json").read_text())
    assert set(results["skipped"]) == {"ablation", "kurtosis", "class_response"}
    assert "ablation" not in results and "class_response" not in results
    for needs in ("node ablation", "the class response", "the pre-activation kurtosis"):
        reason = f"no data: {needs} needs the dataset (the dataset files are gone)"
        assert html.escape(reason) in page, needs
    assert '<section id="ablation">' in page and '<section id="class-response">' in page
    assert "kurtosis (over rounds) skipped: no kurtosis_l0 in rounds.csv" in page
    assert 'alt="ablation"' not in page and 'alt="kurtosis"' not in page


def test_no_figure_clips_a_label(run, monkeypatch):
    """Every figure analyze saves holds every text artist whole (the saved bounding box
    around titles, axis labels, tick labels and legends)."""
    save = imprint.analyze.save_figure
    checked = []

    def checking(fig, stem, formats=("png",)):
        written = save(fig, stem, formats)
        if isinstance(fig, plt.Figure):
            clipped = clipped_texts(fig, stem.with_suffix(".png"))
            assert not clipped, (stem.name, clipped)
            checked.append(stem.name)
        return written

    monkeypatch.setattr(imprint.analyze, "save_figure", checking)
    analyze_run(run, "last", OPTIONS, log=_quiet)
    assert {"accuracy", "curves", "ablation", "pixel_map", "locality_maps_l0"} <= set(checked)
