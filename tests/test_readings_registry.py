"""Readings as registry entries: a reading declared once (imprint.readings.READINGS)
appears in every table, for a run and for a seed group; a name that is not registered
is an error."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from imprint.readings import (
    READINGS,
    ReadingInputs,
    ReadingSpec,
    UnknownReading,
    aggregate_over_seeds,
    compute_readings,
    get_reading,
    shown_in,
)
from tests.conftest import CONFIGS
from tests.killpoints import kill_env

# A complete reading, as a contributor would add one: this module plus one line in
# imprint.readings.READINGS. The mean C_in of the first layer's connected units.
MEAN_C_IN = '''
"""The mean number of inputs of the first layer's connected units."""

from imprint.analysis.uncertainty import mean_reading
from imprint.readings.base import ReadingSpec


def _mean_c_in(r):
    c_in = r.mask.sum(dim=1).double()
    return mean_reading(c_in[c_in > 0], null=float("nan"))


MEAN_C_IN = ReadingSpec(
    name="mean_c_in",
    label="mean inputs per unit",
    compute=_mean_c_in,
    null="none: a count",
    digits=1,
)
'''

SCRIPT = """
import sys
import imprint.readings as readings
import mean_c_in

readings.READINGS["mean_c_in"] = mean_c_in.MEAN_C_IN  # the one registry line

from imprint.cli import main

sys.exit(main(sys.argv[1:]))
"""

SMOKE = ["--quiet", "--device", "cpu", "--set", "prune.max_rounds=1", "--set", "train.steps=20"]


def _imprint(tmp_path, *args: str) -> str:
    """`imprint ARGS` in a fresh interpreter with the new reading registered."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        cwd=tmp_path,
        env={**kill_env(), "PYTHONPATH": f"{tmp_path}:{kill_env()['PYTHONPATH']}"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _header(path) -> list[str]:
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def test_a_registered_reading_is_in_every_table(tmp_path):
    (tmp_path / "mean_c_in.py").write_text(MEAN_C_IN)
    smoke = str(CONFIGS / "smoke.toml")
    label = "mean inputs per unit"

    run_out = _imprint(tmp_path, "run", smoke, "--out", "run", *SMOKE)
    group_out = _imprint(tmp_path, "run", smoke, "--out", "group", "--seeds", "0,1", *SMOKE)
    for console in (run_out, group_out):  # the console table (its header)
        table = console.split("\n\n")[1]
        assert label in table.splitlines()[0], console
    metrics = json.loads((tmp_path / "run" / "rounds" / "001" / "metrics.json").read_text())
    stored = metrics["readings"]["mean_c_in"]  # one object per reading
    assert stored["value"] > 0 and stored["sd"] >= 0 and stored["n"] > 0
    for summary in ("run/summary.csv", "group/summary.csv"):
        assert {"mean_c_in", "mean_c_in_sd"} <= set(_header(tmp_path / summary)), summary

    for folder in ("run", "group"):
        _imprint(tmp_path, "analyze", folder, "--round", "last", "--formats", "png")
        assert "mean_c_in" in _header(tmp_path / folder / "analysis" / "rounds.csv"), folder
        _imprint(tmp_path, "report", folder, "--round", "last")
        page = (tmp_path / folder / "report.html").read_text()
        assert f"<th>{label}</th>" in page, folder
    readings = json.loads((tmp_path / "group" / "analysis" / "readings.json").read_text())
    assert readings["readings"][0]["mean_c_in_n"] == 2  # the group table: over both seeds
    group_page = (tmp_path / "group" / "report.html").read_text()
    table = group_page.split('id="readings"')[1].split("</table>")[0]
    assert f"<th>{label}</th>" in table

    _imprint(tmp_path, "compare", "run", "group", "--out", "compare.html")
    assert f"<th>{label}</th>" in (tmp_path / "compare.html").read_text()

    sweep = tmp_path / "s.toml"
    sweep.write_text(
        f'name = "s"\nbase = "{smoke}"\nseeds = [0]\n'
        '[set]\n"prune.max_rounds" = 1\n"train.steps" = 20\n'
    )
    _imprint(tmp_path, "sweep", str(sweep), "--out", "sweep")
    _imprint(tmp_path, "collect", "sweep")
    assert {"mean_c_in", "mean_c_in_sd"} <= set(_header(tmp_path / "sweep" / "results.csv"))


def test_an_unregistered_name_is_an_error():
    with pytest.raises(UnknownReading, match="'nope' is not a registered reading"):
        get_reading("nope")
    with pytest.raises(ValueError, match="no table 'nowhere'"):
        shown_in("nowhere")
    with pytest.raises(ValueError, match="unknown tables"):
        ReadingSpec("x", "x", lambda r: 0.0, "none", show=frozenset({"nowhere"}))
    with pytest.raises(ValueError, match="column suffix"):
        ReadingSpec("x_sd", "x", lambda r: 0.0, "none")


def test_registry_order_and_tables():
    assert list(READINGS)[:4] == [
        "locality_index",
        "neighbour_enrichment",
        "mass_within_r",
        "locality_ratio",
    ]
    assert [s.name for s in shown_in("console")] == ["locality_index", "locality_index_pix"]
    analysis = {s.name for s in shown_in("rounds", "analysis")}
    assert analysis == {"ipr_l0", "ipr_excess_l0", "kurtosis_l0"}


def test_aggregate_over_seeds_is_mean_and_sample_sd():
    rows = [{"a": 1.0, "b": "2"}, {"a": 3.0, "b": None}, {"a": float("nan")}]
    out = aggregate_over_seeds(rows, ["a", "b", "c"])
    assert out["a"] == 2.0 and out["a_sd"] == pytest.approx(2**0.5) and out["a_n"] == 2
    assert out["b"] == 2.0 and out["b_n"] == 1 and out["b_sd"] != out["b_sd"]  # one seed: NaN
    assert out["c_n"] == 0 and out["c"] != out["c"]


def test_compute_skips_what_the_inputs_cannot_give():
    import torch

    mask = torch.zeros(6, 16, dtype=torch.bool)
    mask[:, :5] = True
    columns = compute_readings(ReadingInputs(mask, (1, 4, 4)), "round")
    assert set(columns) >= {"locality_index", "locality_ratio", "neighbour_enrichment_sd"}
    assert compute_readings(ReadingInputs(mask, (1, 1, 16)), "round") == {}  # no 2-D grid
    assert compute_readings(ReadingInputs(mask, (1, 4, 4)), "analysis") == {}  # no weights
    weights = torch.randn(6, 16) * mask
    with_weights = compute_readings(ReadingInputs(mask, (1, 4, 4), weights=weights), "analysis")
    assert set(with_weights) >= {"ipr_l0", "ipr_l0_sd"} and "kurtosis_l0" not in with_weights
