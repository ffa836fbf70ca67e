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


def test_metrics_json_nests_each_reading_and_reads_back_as_written(tmp_path):
    """Since the readings registry, metrics.json holds each reading as one object; read
    back, the round's columns are those the loop computed, and the typed readings are
    Readings."""
    from imprint.imp import run_imp
    from imprint.results import RunResults
    from tests.conftest import smoke_config

    result = run_imp(
        smoke_config("prune.max_rounds=1"),
        tmp_path / "run",
        device="cpu",
        progress=False,
        log=_quiet,
    )
    document = json.loads((tmp_path / "run" / "rounds" / "001" / "metrics.json").read_text())
    assert "locality_index" not in document and "locality_index_sd" not in document
    assert set(document["readings"]["locality_index"]) >= {"value", "sd", "low", "high", "n"}
    assert document["readings"]["locality_ratio"].keys() == {"value"}
    read = RunFolder(tmp_path / "run").round_metrics(1)
    assert read == {k: v for k, v in result.rounds[1].items()}
    typed = RunResults(tmp_path / "run").typed_readings(1)
    assert typed["locality_index"].value == read["locality_index"]
    assert typed["locality_index"].n == read["locality_index_n"]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ({"locality_index": 3}, "reading 'locality_index' must be an object"),
        ({"locality_index": {"value": 0.1, "n": 2.5}}, "'n' must be an integer"),
        ({"locality_index": {"value": "high"}}, "'locality_index' must be a number or null"),
        ([1, 2], "'readings' must be an object"),
    ],
)
def test_a_damaged_reading_is_refused_naming_the_file(tmp_path, damage, words):
    from imprint.imp import run_imp
    from imprint.safeio import RunFolderError
    from tests.conftest import smoke_config

    run_imp(
        smoke_config("prune.max_rounds=1"),
        tmp_path / "run",
        device="cpu",
        progress=False,
        log=_quiet,
    )
    path = tmp_path / "run" / "rounds" / "001" / "metrics.json"
    document = json.loads(path.read_text())
    if isinstance(damage, dict):
        document["readings"].update(damage)
    else:
        document["readings"] = damage
    path.write_text(json.dumps(document))
    with pytest.raises(RunFolderError, match=str(path).replace("/", ".") + ".*" + words):
        RunFolder(tmp_path / "run").round_metrics(1)
