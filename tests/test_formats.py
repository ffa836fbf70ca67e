"""Folders written by earlier versions still read: analyze, report and compare a run
and a group written before the readings registry (tests/fixtures/format-2026-11)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from imprint.analyze import AnalysisOptions, analyze_run
from imprint.compare import build_comparison
from imprint.report import build_report
from imprint.results import round_readings
from imprint.runs import RunFolder
from imprint.sweep import expand_run_dirs

FIXTURES = Path(__file__).parent / "fixtures" / "format-2026-11"
OPTIONS = AnalysisOptions(gallery_size=4, evolution_units=4, invariance_units=8, formats=("png",))


@pytest.fixture
def old(tmp_path) -> Path:
    """A copy: analysis writes into the folders; the fixture itself is never changed."""
    shutil.copytree(FIXTURES, tmp_path / "old", ignore=shutil.ignore_patterns("README.md"))
    return tmp_path / "old"


def _quiet(_):
    return None


def test_stored_readings_read_as_written(old):
    folder = RunFolder(old / "run")
    for index in folder.completed_rounds():
        stored = json.loads((old / "run" / "rounds" / f"{index:03d}" / "metrics.json").read_text())
        readings = round_readings(folder, index)
        assert readings["locality_index"] == stored["locality_index"]
        assert readings["neighbour_enrichment_sd"] == stored["neighbour_enrichment_sd"]


@pytest.mark.parametrize("name", ["run", "group"])
def test_old_folders_analyze_and_report(old, name):
    analyze_run(old / name, "last", OPTIONS, log=_quiet)
    with open(old / name / "analysis" / "rounds.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["round"] for row in rows] == ["0", "1", "2"]
    assert {"locality_index", "ipr_l0", "kurtosis_l0"} <= set(rows[0])
    page = build_report(old / name, "last", OPTIONS, log=_quiet).read_text()
    assert "<th>locality index</th>" in page


def test_old_folders_compare(old, tmp_path):
    runs = expand_run_dirs([old / "run", old / "group"])
    page = build_comparison(runs, tmp_path / "c.html").read_text()
    assert "3 runs" in page and "<th>locality index</th>" in page
