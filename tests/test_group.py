"""Seeds run together: one batched model, one ordinary run folder per seed."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from imprint.cli import main
from imprint.imp import member_config, run_group, run_imp
from imprint.results import study_round, summarize_seeds
from imprint.runs import RunFolder, group_members, is_group
from tests.conftest import interrupt_at, smoke_config, smoke_run_args
from tests.killpoints import kill_env

SETS = ("train.momentum=0.9",)


def _quiet(_):
    return None


def _group(out, seeds, *overrides, log=_quiet):
    config = smoke_config(*SETS, f"seeds.group={list(seeds)}", *overrides)
    return run_group(config, out, device="cpu", progress=False, log=log)


def _state(folder: RunFolder):
    rounds = folder.completed_rounds()
    masks = [folder.round_masks(r) for r in rounds]
    finals = [folder.round_state(r) for r in rounds]
    metrics = [{k: v for k, v in folder.round_metrics(r).items() if k != "seconds"} for r in rounds]
    return masks, finals, metrics


def _identical(a: RunFolder, b: RunFolder) -> bool:
    masks_a, finals_a, metrics_a = _state(a)
    masks_b, finals_b, metrics_b = _state(b)
    same_tensors = all(
        torch.equal(x[k], y[k])
        for xs, ys in ((masks_a, masks_b), (finals_a, finals_b))
        for x, y in zip(xs, ys)
        for k in x
    )
    return len(masks_a) == len(masks_b) and metrics_a == metrics_b and same_tensors


def test_a_one_seed_group_is_the_single_run(tmp_path):
    """The same code path (one replica): bitwise the run with init = data = prune = s."""
    _group(tmp_path / "group", [3])
    single = smoke_config(*SETS, "seeds.init=3", "seeds.data=3", "seeds.prune=3")
    run_imp(single, tmp_path / "single", device="cpu", progress=False, log=_quiet)
    assert _identical(RunFolder(tmp_path / "group" / "seed_3"), RunFolder(tmp_path / "single"))


def test_group_folder_layout_and_summary(tmp_path):
    result = _group(tmp_path / "g", [0, 1, 2])
    assert is_group(tmp_path / "g")
    assert [seed for seed, _ in group_members(tmp_path / "g")] == [0, 1, 2]
    for seed, run in zip(result.seeds, result.runs):
        folder = RunFolder(run.folder)
        config = folder.read_config()
        assert (config.seeds.init, config.seeds.data, config.seeds.prune) == (seed, seed, seed)
        assert config.seeds.group == []
        assert folder.completed_rounds() == [0, 1, 2, 3]
        assert (run.folder / "run.json").exists()
    # The summary is the mean and sd over the members' own metrics.
    rows = result.rounds
    for index, row in enumerate(rows):
        values = [run.rounds[index]["best_val_top1"] for run in result.runs]
        mean = sum(values) / 3
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        assert row["seeds"] == 3
        assert row["best_val_top1"] == pytest.approx(mean)
        assert row["best_val_top1_sd"] == pytest.approx(sd)
    lines = (tmp_path / "g" / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("round,seeds,density") and len(lines) == 5
    # Members differ: the seeds are really different runs.
    finals = [RunFolder(run.folder).round_state(0) for run in result.runs]
    assert not torch.equal(finals[0]["layers.0.weight"], finals[1]["layers.0.weight"])


def test_members_agree_with_separate_runs_to_float_rounding(tmp_path):
    """Batched and single matmuls may round differently on some CPUs: a member's dense
    round agrees with its separate run to float32 rounding, not necessarily bitwise.
    40 SGD steps of a 64-32-16-2 net in float32 (relative rounding 6e-8 per operation,
    amplified by the steps) stay far below 1e-4."""
    result = _group(tmp_path / "g", [0, 1], "prune.max_rounds=0")
    for seed, run in zip(result.seeds, result.runs):
        alone = run_imp(
            member_config(smoke_config(*SETS, "prune.max_rounds=0"), seed),
            tmp_path / f"alone{seed}",
            device="cpu",
            progress=False,
            log=_quiet,
        )
        a = RunFolder(run.folder).round_state(0)
        b = RunFolder(alone.folder).round_state(0)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
        assert run.rounds[0]["final_val_loss"] == pytest.approx(
            alone.rounds[0]["final_val_loss"], rel=1e-4
        )


def test_group_resumes_inside_a_round_identically(tmp_path, monkeypatch):
    _group(tmp_path / "plain", [0, 1, 2], "train.checkpoint_every=0")
    out = tmp_path / "g"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2, 30)
        with pytest.raises(KeyboardInterrupt):
            _group(out, [0, 1, 2], "train.checkpoint_every=15")
    assert (out / "checkpoint.safetensors").exists()  # the group's, not a member's
    assert not (out / "seed_0" / "checkpoint.safetensors").exists()
    lines: list[str] = []
    _group(out, [0, 1, 2], "train.checkpoint_every=15", log=lines.append)
    assert f"Resuming round 2 at step 30 from {out / 'checkpoint.safetensors'}." in lines
    for seed in (0, 1, 2):
        assert _identical(
            RunFolder(out / f"seed_{seed}"), RunFolder(tmp_path / "plain" / f"seed_{seed}")
        )
    assert not (out / "checkpoint.safetensors").exists()


def test_a_kill_between_two_seeds_saves_resumes_identically(tmp_path):
    """Seed 0 saved round 3, seed 1 did not: the rerun trains round 3 for both again
    (so seed 1 trains in the same batch as before) and saves only seed 1's."""
    _group(tmp_path / "plain", [0, 1])
    out = tmp_path / "g"
    shutil.copytree(tmp_path / "plain", out)
    seed0_round3 = (out / "seed_0" / "rounds" / "003" / "metrics.json").read_bytes()
    shutil.rmtree(out / "seed_1" / "rounds" / "003")
    (out / "seed_1" / "run.json").unlink()
    (out / "seed_0" / "run.json").unlink()
    _group(out, [0, 1])
    assert (out / "seed_0" / "rounds" / "003" / "metrics.json").read_bytes() == seed0_round3
    for seed in (0, 1):
        assert _identical(
            RunFolder(out / f"seed_{seed}"), RunFolder(tmp_path / "plain" / f"seed_{seed}")
        )


def test_a_changed_group_is_refused(tmp_path):
    _group(tmp_path / "g", [0, 1], "prune.max_rounds=0")
    with pytest.raises(Exception, match="different config"):
        _group(tmp_path / "g", [0, 2], "prune.max_rounds=0")


def test_summarize_seeds_and_study_round():
    runs = [
        [
            {
                "round": 0,
                "density": 1.0,
                "best_val_top1": 0.9,
                "layer_density": [1.0],
                "connected_units": [4],
                "units": [4],
                "locality_index": 0.0,
            },
            {
                "round": 1,
                "density": 0.5,
                "best_val_top1": 0.89,
                "layer_density": [0.5],
                "connected_units": [4],
                "units": [4],
                "locality_index": 0.2,
            },
        ],
        [
            {
                "round": 0,
                "density": 1.0,
                "best_val_top1": 0.8,
                "layer_density": [1.0],
                "connected_units": [4],
                "units": [4],
                "locality_index": None,
            },
        ],
    ]
    rows = summarize_seeds(runs)
    assert [row["seeds"] for row in rows] == [2, 1]
    assert rows[0]["best_val_top1"] == pytest.approx(0.85)
    assert rows[0]["best_val_top1_sd"] == pytest.approx(math.sqrt(0.005))
    assert rows[0]["locality_index"] == 0.0 and rows[0]["locality_index_n"] == 1
    assert math.isnan(rows[1]["best_val_top1_sd"])
    # The study round: the sparsest keeping >= 97% of the dense top-1.
    metrics = [
        {"round": 0, "density": 1.0, "best_val_top1": 1.0},
        {"round": 1, "density": 0.5, "best_val_top1": 0.99},
        {"round": 2, "density": 0.25, "best_val_top1": 0.975},
        {"round": 3, "density": 0.12, "best_val_top1": 0.95},
    ]
    assert study_round(metrics) == 2
    assert study_round(metrics, tolerance=0.01) == 1
    assert study_round(metrics, tolerance=0.06) == 3
    assert study_round(metrics[:1]) == 0


def test_cli_seeds_prints_spread(tmp_path, capsys):
    out = tmp_path / "g"
    code = main([*smoke_run_args(out, "prune.max_rounds=1"), "--seeds", "0-2"])
    assert code == 0
    text = capsys.readouterr().out
    assert "3 seeds, mean ± sd over seeds" in text
    assert " ± " in text.split("Stopped")[0]
    assert json.loads((out / "group.json").read_text())["seeds"] == [0, 1, 2]
    assert main([*smoke_run_args(tmp_path / "h"), "--seeds", "0,x"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_sigkill_during_a_group_then_resume(tmp_path):
    """SIGKILL the group process at moments inside rounds (counted in its own writes,
    tests/killpoints, so the same on any machine's speed): between two checkpoints, with
    a checkpoint write in flight, with any write in flight; the rerun ends identical to
    an uninterrupted group on this machine."""
    sets = ("prune.max_rounds=2", "train.steps=600", *SETS)

    def command(out, every):
        args = smoke_run_args(out, *sets, f"train.checkpoint_every={every}")
        return [sys.executable, "-m", "imprint", *args, "--seeds", "0,1,2"]

    subprocess.run(command(tmp_path / "plain", 0), env=kill_env(), check=True, capture_output=True)
    out = tmp_path / "g"
    points = (
        "after:checkpoint.safetensors:3",
        "during:checkpoint.safetensors:2",
        "during:*:9",
        "after:checkpoint.safetensors:5",
    )
    for point in points:
        killed = subprocess.run(command(out, 25), env=kill_env(point), capture_output=True)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
    subprocess.run(command(out, 25), env=kill_env(), check=True, capture_output=True)
    for seed in (0, 1, 2):
        assert _identical(
            RunFolder(out / f"seed_{seed}"), RunFolder(tmp_path / "plain" / f"seed_{seed}")
        )


def test_group_analysis_report_and_comparison(tmp_path):
    """analyze, report, compare and collect read a group: every reading as mean ± sd over
    seeds, at one round for every seed, and bands over seeds on the figures."""
    from imprint.analyze import AnalysisOptions, analyze_run
    from imprint.compare import build_comparison
    from imprint.report import build_report
    from imprint.sweep import expand_run_dirs

    out = tmp_path / "g"
    _group(out, [0, 1], "data.channels=3")
    options = AnalysisOptions(
        gallery_size=8, evolution_units=8, invariance_units=16, formats=("png",)
    )
    summary = analyze_run(out, "last", options, log=_quiet)
    assert summary["seeds"] == [0, 1] and summary["rounds"] == [3]
    (reading,) = summary["readings"]
    values = [s["per_round"][0]["layers"]["0"]["locality_index"] for s in summary["per_seed"]]
    assert reading["locality_index"] == pytest.approx(sum(values) / 2)
    assert reading["locality_index_sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    for name in ("accuracy.png", "locality.png", "rounds.csv", "readings.json"):
        assert (out / "analysis" / name).is_file(), name
    # The round's figures pooled over the seeds: S_sc summed, curves and ablation as
    # mean ± sd; the entries without a pool show one seed, labelled as an example.
    pooled = out / "analysis" / "round_003"
    for name in ("locality_maps_l0.png", "curves.png", "cin_hist_l0.png", "pixel_map.png"):
        assert (pooled / name).is_file(), name
    arrays = [np.load(out / f"seed_{s}" / "analysis" / "round_003" / "arrays.npz") for s in (0, 1)]
    assert arrays[0]["s_sc_l0"].sum() > 0
    page = build_report(out, "last", options, log=_quiet).read_text()
    assert "mean ± sd over 2 seeds" in page.lower() or "Mean ± sample sd over the 2 seeds" in page
    assert 'id="readings"' in page and "Example, one seed: seed 0 of 2." in page
    assert "Over the 2 seeds (summed, or mean ± sd): S_sc(d)" in page
    assert "Example, one seed: seed 0 of 2. S_sc(d)" not in page
    assert expand_run_dirs([out]) == [out / "seed_0", out / "seed_1"]
    comparison = build_comparison(expand_run_dirs([out]), tmp_path / "c.html").read_text()
    assert "2 runs" in comparison and "± 1 sd over the seeds" in comparison
