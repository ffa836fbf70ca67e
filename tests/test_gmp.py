"""Gradual magnitude pruning: pruning during training, on IMP's density axis."""

from __future__ import annotations

import shutil

import pytest
import torch

from imprint.imp import run_group, run_imp
from imprint.procedures.gmp import cubic_counts
from imprint.prune import apply_masks
from imprint.runs import RunFolder
from tests.conftest import smoke_config


def _quiet(_):
    return None


def _run(out, *overrides):
    config = smoke_config("prune.procedure=gmp", *overrides)
    return run_imp(config, out, device="cpu", progress=False, log=_quiet)


def test_cubic_counts():
    assert cubic_counts(0, 4, {0: 100}, {0: 10}) == {0: 100}
    assert cubic_counts(4, 4, {0: 100}, {0: 10}) == {0: 10}
    steps = [cubic_counts(k, 10, 1000, 300) for k in range(11)]
    assert steps[0] == 1000 and steps[-1] == 300
    assert all(a >= b for a, b in zip(steps, steps[1:]))  # pruning only
    drops = [a - b for a, b in zip(steps, steps[1:])]
    assert drops[0] > drops[-1]  # fast first, slow last: the cubic ramp


def test_gmp_on_imps_axis_nested_without_rewind(tmp_path):
    imp = run_imp(smoke_config(), tmp_path / "imp", device="cpu", progress=False, log=_quiet)
    gmp = _run(tmp_path / "gmp")
    assert [m["layer_alive"] for m in gmp.rounds] == [m["layer_alive"] for m in imp.rounds]
    folder = RunFolder(tmp_path / "gmp")
    masks = [folder.round_masks(r) for r in folder.completed_rounds()]
    for before, after in zip(masks, masks[1:]):
        assert all(bool((after[k] <= before[k]).all()) for k in after)  # nested
    for r in (1, 2, 3):  # no rewind: round r starts from round r-1's final weights
        start, previous = folder.round_state(r, "start"), folder.round_state(r - 1)
        expected = apply_masks(previous, masks[r - 1])
        assert all(torch.equal(start[k], expected[k]) for k in start)
    curves = folder.round_file(2, "curves").read_text().splitlines()
    config = folder.read_config()
    assert len(curves) - 1 == config.train.steps // config.train.eval_every  # one per interval


def test_gmp_reruns_and_resumes_identically(tmp_path):
    _run(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "rounds" / "003")  # as if killed inside round 3
    (tmp_path / "b" / "run.json").unlink()
    _run(tmp_path / "b")
    _run(tmp_path / "c")
    a, b, c = (RunFolder(tmp_path / n) for n in "abc")
    for other in (b, c):
        for r in a.completed_rounds():
            ma, mo = a.round_masks(r), other.round_masks(r)
            assert all(torch.equal(ma[k], mo[k]) for k in ma)
            assert a.round_metrics(r)["best_val_top1"] == other.round_metrics(r)["best_val_top1"]


@pytest.mark.parametrize("seeds", [[2], [0, 1]])
def test_gmp_in_a_group(tmp_path, seeds):
    config = smoke_config("prune.procedure=gmp", f"seeds.group={seeds}", "prune.max_rounds=2")
    result = run_group(config, tmp_path / "g", device="cpu", progress=False, log=_quiet)
    assert [len(run.rounds) for run in result.runs] == [3] * len(seeds)
    if seeds == [2]:  # one seed together is the run alone
        alone = _run(
            tmp_path / "alone",
            "prune.max_rounds=2",
            "seeds.init=2",
            "seeds.data=2",
            "seeds.prune=2",
        )
        assert [m["best_val_top1"] for m in alone.rounds] == [
            m["best_val_top1"] for m in result.runs[0].rounds
        ]
