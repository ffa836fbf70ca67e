"""Gradual magnitude pruning: pruning during training, on IMP's density axis."""

from __future__ import annotations

import shutil

import pytest
import torch

from imprint.imp import run_group, run_imp
from imprint.procedures.gmp import cubic_counts
from imprint.prune import apply_masks
from imprint.runs import RunFolder
from tests.conftest import interrupt_at, smoke_config


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
    # Zhu & Gupta: kept = target + (first - target) (1 - k/n)^3, e.g. at k = 1, 2, 5 of
    # 10: 300 + 700 x 0.729, x 0.512, x 0.125 (a quadratic ramp gives 867, 748, 475)
    assert (steps[1], steps[2], steps[5]) == (810, 658, 388)
    assert cubic_counts(1, 10, {0: 1000, 1: 50}, {0: 300, 1: 50}) == {0: 810, 1: 50}


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


@pytest.mark.parametrize(
    ("momentum", "sparse"), [(0.0, "auto"), (0.9, "auto"), (0.9, "on")], ids=str
)
def test_gmp_resumes_inside_a_round_from_its_checkpoint(tmp_path, monkeypatch, momentum, sparse):
    """A gradual round runs in the one training loop: killed between two of its pruning
    steps, it resumes from its checkpoint (masks in force, momentum) and ends exactly as
    the uninterrupted run, masks, weights and metrics; on the sparse engine too, whose
    structure is rebuilt at every pruning step and on resume."""
    sets = ("prune.max_rounds=2", f"train.momentum={momentum}", f"train.sparse={sparse}")
    plain = RunFolder(tmp_path / "plain")
    _run(plain.root, *sets, "train.checkpoint_every=0")
    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2, 25)  # after 2 of round 2's 4 pruning steps (eval_every 10)
        with pytest.raises(KeyboardInterrupt):
            _run(out, *sets, "train.checkpoint_every=5")
    tensors, _ = RunFolder(out).load_checkpoint()
    assert any(name.startswith("masks.") for name in tensors)
    lines = []
    run_imp(
        smoke_config("prune.procedure=gmp", *sets, "train.checkpoint_every=5"),
        out,
        device="cpu",
        progress=False,
        log=lines.append,
    )
    assert any(line.startswith("Resuming round 2 at step 25") for line in lines), lines
    resumed = RunFolder(out)
    for r in plain.completed_rounds():
        a, b = plain.round_masks(r), resumed.round_masks(r)
        assert all(torch.equal(a[k], b[k]) for k in a)
        a, b = plain.round_state(r), resumed.round_state(r)
        assert all(torch.equal(a[k], b[k]) for k in a)
        drop = ("seconds",)
        a, b = plain.round_metrics(r), resumed.round_metrics(r)
        assert {k: v for k, v in a.items() if k not in drop} == {
            k: v for k, v in b.items() if k not in drop
        }


def test_gmp_prunes_during_the_round_and_scores_its_last_mask(tmp_path):
    """The mask changes inside a round (the cubic ramp), and the round's top-1 is the
    one measured at its final mask, not the best over the round."""
    result = _run(tmp_path / "run", "prune.max_rounds=1")
    folder = RunFolder(tmp_path / "run")
    curves = folder.round_file(1, "curves").read_text().splitlines()
    last = dict(zip(curves[0].split(","), curves[-1].split(",")))
    assert result.rounds[1]["best_val_top1"] == pytest.approx(float(last["val_top1"]))
    start = folder.round_state(1, "start")
    mask = folder.round_masks(1)["layers.0.weight"]
    # round 1 started from round 0's dense weights, and ended on a pruned mask
    assert bool((start["layers.0.weight"] != 0).all()) and not bool(mask.all())
