"""The HTML report and comparison pages, checked in headless Chromium."""

from __future__ import annotations

import re

import pytest

from imprint.analyze import AnalysisOptions
from imprint.cli import main
from imprint.compare import COMPARE_SECTIONS, build_comparison
from imprint.imp import run_imp
from imprint.report import build_report, report_sections
from imprint.safeio import RunFolderError
from tests.browser import inspect_page, needs_browser, open_browser
from tests.conftest import smoke_config

OPTIONS = AnalysisOptions(
    gallery_size=16, evolution_units=16, invariance_units=24, formats=("png",)
)


def _quiet(_):
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of the smoke config and one one-shot run."""
    paths = []
    for name, overrides in (
        ("imp-s0", []),
        ("imp-s1", ["seeds.init=1", "seeds.data=1"]),
        ("oneshot", ["prune.procedure=oneshot"]),
    ):
        path = tmp_path_factory.mktemp(name)
        run_imp(
            smoke_config("data.channels=3", *overrides),
            path,
            device="cpu",
            progress=False,
            log=_quiet,
        )
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def report(runs):
    return build_report(runs[0], "last", OPTIONS, log=_quiet)


def test_report_is_self_contained_with_every_section(report):
    page = report.read_text()
    assert report.name == "report.html"
    for section in report_sections():
        assert f'<section id="{section.id}">' in page, section.id
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from the network
    assert page.count('src="data:image/') >= 20
    assert "data:image/gif;base64," in page  # the evolution animation
    # the manifest's engine record, one readable row per entry (not a Python dict)
    assert "<td>engine.sparse</td><td>auto</td>" in page and "{&#x27;" not in page


def test_comparison_groups_seeds(runs, tmp_path):
    path = build_comparison(runs, tmp_path / "compare.html", gallery_size=9)
    page = path.read_text()
    for sid in COMPARE_SECTIONS:
        assert f'<section id="{sid}">' in page
    # two groups: the seeds of the IMP config (one row, 2 runs), and the one-shot run;
    # a single run says "1 seed", never a count of 0
    assert page.count("<td>prune.procedure=&quot;imp&quot;</td><td>2 seeds: ") == 1
    assert page.count("<td>prune.procedure=&quot;oneshot&quot;</td><td>1 seed: ") == 1
    assert "<th>stopped</th>" in page and "reached prune.max_rounds" in page
    # the scalar table per group: mean ± sd over its seeds, and how many
    group_table = page.split("Per group of seeds")[1].split("Per run")[0]
    imp_row = next(r for r in group_table.split("<tr>") if "imp" in r and "oneshot" not in r)
    assert "<td>2</td>" in imp_row and imp_row.count(" ± ") >= 3
    with pytest.raises(ValueError, match="'density' parameter must be in"):
        build_comparison(runs, tmp_path / "x.html", density=2.0)
    with pytest.raises(RunFolderError, match="not an imprint run folder"):
        build_comparison([tmp_path], tmp_path / "y.html")


def test_side_by_side_maps_share_one_colour_scale(runs):
    from imprint.analyses import COMPARE_PANELS, AnalysisOptions
    from imprint.analyze import load_round
    from imprint.results import RunResults

    (panel,) = [p for p in COMPARE_PANELS if p.id == "maps"]
    results = []
    for path in runs:
        run = RunResults(path)
        one = load_round(run.folder, run.config, 2, AnalysisOptions())
        results.append(panel.compute(one))
    assert all(float(r.shown["s_sc"].sum()) == pytest.approx(100) for r in results)  # % of pairs
    assert panel.scale is not None
    common = max(panel.scale(r) for r in results)
    import matplotlib.pyplot as plt

    for result in results:
        figure = panel.plot(result, "t", common)
        assert figure.axes[0].images[0].get_clim() == (0, common)
        plt.close(figure)


def test_cli_report_and_compare(runs, tmp_path, capsys):
    assert main(["report", str(runs[1]), "--round", "2"]) == 0
    assert "Report:" in capsys.readouterr().out
    assert (runs[1] / "report.html").is_file()
    assert (
        main(["compare", *map(str, runs), "--out", str(tmp_path / "c.html"), "--density", "0.5"])
        == 0
    )
    assert (tmp_path / "c.html").is_file()


@needs_browser
def test_pages_render_in_chromium(report, runs, tmp_path):
    comparison = build_comparison(runs, tmp_path / "compare.html", gallery_size=9)
    driver = open_browser(tmp_path)
    try:
        for path, sections, shot in (
            (report, [s.id for s in report_sections()], "report.png"),
            (comparison, list(COMPARE_SECTIONS), "compare.png"),
        ):
            state = inspect_page(driver, path, shot)
            assert state["ready"] == "complete"
            assert state["errors"] == [], state["errors"]
            assert state["images"], "no image on the page"
            undecoded = [
                alt for alt, complete, width in state["images"] if not complete or width == 0
            ]
            assert undecoded == [], undecoded
            assert set(sections) <= set(state["sections"])
    finally:
        driver.quit()


def test_rounds_table_is_readable():
    """Plain column names, percentages, readings with their sd in one cell, "too few
    pairs" where a reading has no value, no constant or duplicated columns."""
    from imprint.pages import readable as _readable

    rows = [
        {
            "round": "0",
            "density": "1.0",
            "density_l0": "1.0",
            "val_top5_at_best": "1.0",
            "best_val_top1": "0.99",
            "locality_index": "0.0",
            "locality_index_sd": "0.0",
        },
        {
            "round": "1",
            "density": "0.5",
            "density_l0": "0.5",
            "val_top5_at_best": "1.0",
            "best_val_top1": "0.98",
            "locality_index": "nan",
            "locality_index_sd": "nan",
        },
    ]
    table = _readable(rows)
    assert list(table[0]) == ["round", "weights left", "validation top-1 (best)", "locality index"]
    assert table[1]["weights left"] == "50.00%" and table[0]["validation top-1 (best)"] == "99.00%"
    assert table[0]["locality index"] == "0.00 ± 0.00"  # the registry's digits
    assert table[1]["locality index"] == "too few pairs"
    from imprint.pages import _column_name

    assert [_column_name(k) for k in ("ipr_l0", "kurtosis_l1", "connected_l0", "density_l2")] == [
        "weight IPR, layer 0",
        "excess kurtosis, layer 1",
        "connected units, layer 0",
        "weights left, layer 2",
    ]


def test_captions_speak_of_s_dc_only_with_several_channels(report, tmp_path):
    """The locality-map caption names S_dc where the images have channels to pair
    (this module's runs have 3), and not for one-channel images."""
    from imprint.analyses import ROUND_ANALYSES

    (maps,) = [e for e in ROUND_ANALYSES if e.name == "locality_maps"]
    assert "S_dc" in maps.figures[0].caption_for(0, channels=3)
    assert "S_dc" not in maps.figures[0].caption_for(0, channels=1)
    assert "S_dc(d) (pairs in different channels) of layer 0" in report.read_text()
    one = tmp_path / "one-channel"
    run_imp(smoke_config(), one, device="cpu", progress=False, log=_quiet)
    page = build_report(one, "last", OPTIONS, log=_quiet).read_text()
    assert "S_sc(d) (pairs in the same channel) of layer 0" in page and "S_dc" not in page


def test_legends_sit_outside_the_data():
    """Curves that cross the whole plot leave no corner for a legend: every line plot
    puts it below its axes."""
    import matplotlib

    matplotlib.use("Agg")
    from imprint.plots import plot_accuracy_vs_remaining, plot_curves, plot_scalar_over_rounds

    rounds = [{"round": k, "density": 0.7**k, "best_val_top1": 0.9 - 0.01 * k} for k in range(9)]
    curves = [
        {"step": s, "train_loss": 1 / s, "val_loss": 1 / s, "val_top1": 0.5, "train_top1": 0.5}
        for s in (1, 2, 3)
    ]
    figures = (
        plot_accuracy_vs_remaining(rounds, study=4),
        plot_scalar_over_rounds(rounds, [0.1 * k for k in range(9)], "x", null=0.0),
        plot_curves(curves, "round 1"),
    )
    for fig in figures:
        fig.canvas.draw()
        (ax,) = [a for a in fig.axes if a.get_legend() is not None]
        legend = ax.get_legend().get_window_extent()
        assert legend.y1 <= ax.get_window_extent().y0  # entirely below the axes
        assert fig.bbox.y0 <= legend.y0  # and inside the figure
