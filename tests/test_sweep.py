"""Sweeps: expansion, local and Ray execution, resuming, collection, comparison."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imprint.cli import main
from imprint.config import ConfigError
from imprint.runs import RunFolder
from imprint.sweep import collect, load_sweep, run_sweep, summarize
from tests.conftest import CONFIGS, ROOT
from tests.killpoints import kill_env


def _sweep_file(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(
        f'name = "tiny"\nbase = "{CONFIGS / "smoke.toml"}"\nseeds = [0, 1]\n'
        '[set]\n"prune.max_rounds" = 1\n"train.steps" = 20\n"prune.rewind_step" = 2\n'
        '[grid]\n"prune.procedure" = ["imp", "oneshot"]\n' + body
    )
    return path


def test_expansion_is_stable_and_validated(tmp_path):
    path = _sweep_file(tmp_path)
    sweep = load_sweep(path)
    assert len(sweep.runs) == 4
    assert [r.overrides for r in sweep.runs][:2] == [
        {"prune.procedure": "imp", "seed": 0},
        {"prune.procedure": "imp", "seed": 1},
    ]
    assert sweep.runs[1].config.seeds.init == 1 and sweep.runs[1].config.seeds.prune == 1
    assert [r.name for r in load_sweep(path).runs] == [r.name for r in sweep.runs]
    bad = _sweep_file(tmp_path, '[[variants]]\n"train.lrr" = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        load_sweep(bad)
    (tmp_path / "u.toml").write_text('base = "x.toml"\nfoo = 1\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['foo'\]"):
        load_sweep(tmp_path / "u.toml")


def test_shipped_sweeps_expand():
    synthetic = load_sweep(ROOT / "sweeps" / "synthetic.toml")
    assert len(synthetic.runs) == 14  # variants, each three seeds trained together
    assert all(r.config.seeds.group == [0, 1, 2] for r in synthetic.runs)
    paper = load_sweep(ROOT / "sweeps" / "paper.toml")
    assert len(paper.runs) == 36
    assert {r.config.data.task for r in paper.runs} == {"classes", "superclasses", "modulo"}


def test_local_parallel_collect_and_compare(tmp_path, capsys):
    sweep = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "out"
    folders = run_sweep(sweep, out, backend="local", workers=2, log=lambda _: None)
    assert all((f / "run.json").exists() for f in folders)
    stamps = {f: (f / "run.json").stat().st_mtime_ns for f in folders}
    messages = []
    run_sweep(sweep, out, backend="local", workers=2, log=messages.append)
    assert "4 finished, 0 to run" in messages[0]
    assert stamps == {f: (f / "run.json").stat().st_mtime_ns for f in folders}

    rows = collect(out)
    assert len(rows) == 8  # 4 runs x rounds 0..1
    import pandas as pd

    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 8 and {"prune.procedure", "seed", "locality_ratio"} <= set(frame)
    assert (pd.read_csv(out / "results.csv")["density"].round(6) == frame["density"].round(6)).all()
    assert main(["compare", str(out), "--out", str(tmp_path / "c.html")]) == 0
    page = (tmp_path / "c.html").read_text()
    # the two seeds of one-shot: one row of the runs table, two runs, seeds 0 and 1
    assert "<td>prune.procedure=&quot;oneshot&quot;</td><td>2 seeds: 0, 1</td>" in page


def test_killed_sweep_finishes_only_missing_work(tmp_path):
    path = _sweep_file(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "imprint", "sweep", str(path), "--out", str(out)]
    # The sweep's process group is killed as soon as its first run has written run.json
    # (tests/killpoints: an event of the run, not a time).
    killed = subprocess.run(
        command,
        env=kill_env("after:run.json:1", group=True, threads=None),
        capture_output=True,
        start_new_session=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = {f for f in (out / "runs").iterdir() if (f / "run.json").exists()}
    assert 1 <= len(finished) < 4
    stamps = {f: (f / "run.json").stat().st_mtime_ns for f in finished}
    messages = []
    run_sweep(load_sweep(path), out, log=messages.append)
    assert f"{len(finished)} finished, {4 - len(finished)} to run" in messages[0]
    assert stamps == {f: (f / "run.json").stat().st_mtime_ns for f in finished}
    assert all(RunFolder(f).completed_rounds() == [0, 1] for f in (out / "runs").iterdir())


def test_ray_backend_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    path = tmp_path / "r.toml"
    path.write_text(
        f'name = "ray2"\nbase = "{CONFIGS / "smoke.toml"}"\nseeds = [0, 1]\n'
        '[set]\n"prune.max_rounds" = 1\n"train.steps" = 20\n"prune.rewind_step" = 2\n'
    )
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    try:
        folders = run_sweep(
            load_sweep(path), tmp_path / "out", backend="ray", cpus_per_run=1, log=lambda _: None
        )
    finally:
        ray.shutdown()
    assert len(folders) == 2
    for folder in folders:
        record = json.loads((folder / "run.json").read_text())
        assert record["rounds"] == 2


def test_summarize_means_over_seeds():
    from imprint.sweep import summarize

    rows = [
        {
            "run": "a",
            "variant": "imp",
            "round": 1,
            "density": 0.7,
            "best_val_top1": 0.5,
            "locality_ratio": 1.0,
            "mass_within_r": 0.1,
        },
        {
            "run": "b",
            "variant": "imp",
            "round": 1,
            "density": 0.7,
            "best_val_top1": 0.7,
            "locality_ratio": 3.0,
            "mass_within_r": 0.3,
        },
        {
            "run": "c",
            "variant": "oneshot",
            "round": 1,
            "density": 0.7,
            "best_val_top1": 0.4,
            "locality_ratio": float("nan"),
            "mass_within_r": 0.2,
        },
    ]
    table = {r["variant"]: r for r in summarize(rows, rounds=[1])}
    assert table["imp"]["runs"] == 2 and table["imp"]["best_val_top1"] == pytest.approx(0.6)
    # the sample sd over seeds (ddof 1): values 2 and 4
    assert table["imp"]["locality_ratio_sd"] == pytest.approx(2**0.5)
    assert table["oneshot"]["locality_ratio"] != table["oneshot"]["locality_ratio"]  # NaN
    assert summarize(rows, rounds=[2]) == []


def test_collect_summary_cli(tmp_path, capsys):
    sweep = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "out"
    run_sweep(sweep, out, log=lambda _: None)
    figures = tmp_path / "figs"
    assert (
        main(
            [
                "collect",
                str(out),
                "--summary",
                "--by",
                "prune.procedure",
                "--rounds",
                "1",
                "--figures",
                str(figures),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| prune.procedure | round |" in printed
    assert "| imp | 1 | 70.0" in printed and "| oneshot | 1 | 70.0" in printed
    assert "| best validation top-1 | test top-1 |" in printed  # the smoke task has a test set
    for name in ("locality_ratio", "locality_index_pix", "test_top1_at_best"):
        assert (figures / f"{name}.png").is_file(), name


def test_seeds_together_in_a_sweep(tmp_path):
    """`together = true`: each grid point is one group of the sweep's seeds; collect and
    summarize see one row per seed, as for separate runs."""
    path = tmp_path / "s.toml"
    path.write_text(
        _sweep_file(tmp_path)
        .read_text()
        .replace("seeds = [0, 1]", "seeds = [0, 1]\ntogether = true")
    )
    sweep = load_sweep(path)
    assert len(sweep.runs) == 2 and all(r.config.seeds.group == [0, 1] for r in sweep.runs)
    out = tmp_path / "out"
    run_sweep(sweep, out, log=lambda _: None)
    messages = []
    run_sweep(sweep, out, log=messages.append)
    assert "2 finished, 0 to run" in messages[0]
    rows = collect(out, log=lambda _: None)
    assert len(rows) == 8  # 2 groups x 2 seeds x rounds 0..1
    assert {(r["prune.procedure"], r["seed"]) for r in rows} == {
        (p, s) for p in ("imp", "oneshot") for s in (0, 1)
    }
    table = summarize(rows, by="prune.procedure", rounds=[1])
    assert all(row["runs"] == 2 for row in table)
    bad = tmp_path / "b.toml"
    bad.write_text(f'base = "{CONFIGS / "smoke.toml"}"\ntogether = true\n')
    with pytest.raises(ConfigError, match="'together' needs 'seeds'"):
        load_sweep(bad)


def test_dry_run_lists_the_runs_and_an_estimate_and_writes_nothing(tmp_path, capsys):
    """`imprint sweep FILE --dry-run`: every run with its seeds, finished ones marked, a
    positive estimate from a measured probe; no folder, no plan written."""
    from imprint.cli import main
    from imprint.preview import preview_sweep

    path = _sweep_file(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "Sweep tiny: 4 runs, 0 finished" in printed and "4 to run" in printed
    assert printed.count("2 rounds x 20 steps") == 4
    assert "prune.procedure=oneshot, seed=1" in printed
    assert not out.exists()
    sweep = load_sweep(path)
    run_sweep(sweep, out, log=lambda m: None)
    lines: list[str] = []
    plan = preview_sweep(sweep, out, log=lines.append)
    assert all(row.finished for row in plan["runs"]) and plan["seconds"] == 0
    assert "4 finished" in lines[0]
    fresh = preview_sweep(sweep, tmp_path / "other", workers=2, log=lambda m: None)
    assert fresh["seconds"] > 0 and fresh["wall"] == pytest.approx(fresh["seconds"] / 2)
