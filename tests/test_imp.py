"""End-to-end runs of the round loop on the smoke config."""

from __future__ import annotations

import csv

import pytest
import torch

from imprint.config import config_to_dict, parse_config
from imprint.imp import prunable_layers, run_imp
from imprint.prune import layer_counts, layer_names
from imprint.runs import RunFolder
from imprint.safeio import RunFolderError
from tests.conftest import smoke_config


def _run(config, path):
    return run_imp(config, path, device="cpu", progress=False, log=lambda _: None)


def _masks(folder: RunFolder, rounds):
    return [folder.round_masks(r) for r in rounds]


def _same_masks(a, b):
    return all(torch.equal(x[name], y[name]) for x, y in zip(a, b) for name in x)


@pytest.fixture(scope="module")
def momentum_run(tmp_path_factory):
    """Three pruned rounds with momentum and weight decay on (the hard case for zeros)."""
    config = smoke_config("train.momentum=0.9", "train.weight_decay=0.0005")
    path = tmp_path_factory.mktemp("run")
    result = _run(config, path)
    return config, RunFolder(path), result


def test_end_to_end_three_rounds(momentum_run):
    config, folder, result = momentum_run
    assert [m["round"] for m in result.rounds] == [0, 1, 2, 3]
    assert "max_rounds" in result.stop_reason
    for name in (
        "config.toml",
        "manifest.json",
        "init.safetensors",
        "rewind.safetensors",
        "summary.csv",
        "run.json",
    ):
        assert (folder.root / name).is_file(), name
    with folder.summary_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["round"]) for r in rows] == [0, 1, 2, 3]
    with folder.round_file(2, "curves").open() as handle:
        curve = list(csv.DictReader(handle))
    steps = [int(r["step"]) for r in curve]
    assert steps == list(
        range(config.train.eval_every, config.train.steps + 1, config.train.eval_every)
    )
    assert all(0 <= float(r["val_top1"]) <= float(r["val_top5"]) <= 1 for r in curve)
    assert folder.read_config() == config


def test_per_round_density_follows_the_schedule(momentum_run):
    config, folder, result = momentum_run
    pruned = prunable_layers(config)
    assert pruned == [0, 1]
    for r, m in enumerate(result.rounds):
        for layer in pruned:
            assert m["layer_density"][layer] == pytest.approx(0.7**r, abs=0.01)
        assert m["layer_density"][2] == 1.0  # the output layer is never pruned


def test_pruned_weights_are_exactly_zero_in_every_saved_file(momentum_run):
    _, folder, result = momentum_run
    for r in range(len(result.rounds)):
        masks = folder.round_masks(r)
        for which in ("start", "final"):
            state = folder.round_state(r, which)
            for name, mask in masks.items():
                assert (state[name][~mask] == 0).all(), (r, which, name)
        if r:
            final = folder.round_state(r, "final")
            # trained weights moved: the zeros are masks at work, not an idle net
            assert (final["layers.0.weight"][masks["layers.0.weight"]] != 0).all()


def test_masks_are_monotone_and_computed_from_the_previous_round(momentum_run):
    _, folder, result = momentum_run
    masks = _masks(folder, range(len(result.rounds)))
    for before, after in zip(masks, masks[1:]):
        for name in before:
            assert not (after[name] & ~before[name]).any()
    # round r's mask keeps the largest |w| of round r-1's final weights, per layer
    final = folder.round_state(1, "final")
    for layer in (0, 1):
        names = layer_names(layer)
        score = torch.cat([final[n].abs().flatten() for n in names])
        kept = torch.cat([masks[2][n].flatten() for n in names])
        was = torch.cat([masks[1][n].flatten() for n in names])
        assert score[kept].min() >= score[was & ~kept].max()


def test_rewound_weights_are_the_rewind_state_times_the_mask(momentum_run):
    _, folder, result = momentum_run
    rewind = folder.load_tensors(folder.rewind_path)
    init = folder.load_tensors(folder.init_path)
    assert not torch.equal(rewind["layers.0.weight"], init["layers.0.weight"])
    for r in range(1, len(result.rounds)):
        masks, start = folder.round_masks(r), folder.round_state(r, "start")
        for name, value in rewind.items():
            expected = value * masks[name] if name in masks else value
            assert torch.equal(start[name], expected), (r, name)
    assert torch.equal(folder.round_state(0, "start")["layers.0.weight"], init["layers.0.weight"])


def test_same_seed_same_masks_and_resume_between_rounds(tmp_path, momentum_run):
    config, folder, result = momentum_run
    # Interrupted after round 1: drop rounds 2..3 as if the process died there.
    cut = smoke_config("train.momentum=0.9", "train.weight_decay=0.0005", "prune.max_rounds=1")
    _run(cut, tmp_path / "a")
    # Same folder, the full config but the stop rule: not allowed (different config) ...
    with pytest.raises(RunFolderError, match="prune.max_rounds: 1 in the folder, 3 now"):
        _run(config, tmp_path / "a")
    # ... so interrupt for real: run fully, delete the last rounds' completion markers.
    _run(config, tmp_path / "b")
    partial = RunFolder(tmp_path / "b")
    for r in (2, 3):
        partial.round_file(r, "metrics").unlink()
    resumed = _run(config, tmp_path / "b")
    assert [m["round"] for m in resumed.rounds] == [0, 1, 2, 3]
    assert _same_masks(_masks(partial, range(4)), _masks(folder, range(4)))
    for r in range(4):
        assert torch.equal(
            partial.round_state(r)["layers.0.weight"], folder.round_state(r)["layers.0.weight"]
        )
        assert partial.round_metrics(r)["best_val_top1"] == result.rounds[r]["best_val_top1"]


def test_finished_run_is_not_retrained(momentum_run):
    config, folder, result = momentum_run
    mtime = folder.round_file(3, "final").stat().st_mtime_ns
    again = _run(config, folder.root)
    assert again.rounds == result.rounds
    assert folder.round_file(3, "final").stat().st_mtime_ns == mtime


def test_foreign_folder_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not an imprint run folder"):
        _run(smoke_config(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_stop_on_connected_units_and_target_density(tmp_path):
    config = smoke_config(
        "prune.fraction=0.6", "prune.max_rounds=30", "prune.min_connected_fraction=0.5"
    )
    result = _run(config, tmp_path / "c")
    last = result.rounds[-1]
    assert "units connected" in result.stop_reason
    assert min(last["connected_units"][i] / last["units"][i] for i in (0, 1)) <= 0.5
    before = result.rounds[-2]
    assert min(before["connected_units"][i] / before["units"][i] for i in (0, 1)) > 0.5

    config = smoke_config("prune.max_rounds=30", "prune.target_density=0.2")
    result = _run(config, tmp_path / "d")
    assert "target_density" in result.stop_reason
    assert result.rounds[-1]["density"] <= 0.2 < result.rounds[-2]["density"]


def test_global_scope_run(tmp_path):
    result = _run(smoke_config("prune.scope=global", "prune.max_rounds=2"), tmp_path)
    folder = RunFolder(tmp_path)
    counts = layer_counts(folder.round_masks(2))
    alive = counts[0][0] + counts[1][0]
    total = counts[0][1] + counts[1][1]
    assert alive == pytest.approx(0.49 * total, abs=2)
    assert result.rounds[2]["density"] == pytest.approx(0.49, abs=0.01)
    # one threshold over both layers: every kept |w| of round 1's mask is at least every
    # pruned one of round 0's final weights, across layers (layer scope ranks each
    # layer alone, and its layers would each keep 70%)
    final, mask = folder.round_state(0), folder.round_masks(1)
    names = [n for n in mask if n.startswith(("layers.0.", "layers.1."))]
    kept = torch.cat([final[n].abs()[mask[n]] for n in names])
    gone = torch.cat([final[n].abs()[~mask[n]] for n in names])
    assert kept.min() >= gone.max()
    per_layer = [a / t for a, t in layer_counts(mask)[:2]]
    assert abs(per_layer[0] - per_layer[1]) > 0.01


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref")
    _run(smoke_config("prune.max_rounds=2"), path)
    return RunFolder(path)


@pytest.mark.parametrize("procedure", ["oneshot", "random"])
def test_controls_match_imp_per_layer_density(tmp_path, procedure, reference_run):
    for reference in (None, str(reference_run.root)):
        overrides = [f"prune.procedure={procedure}", "prune.max_rounds=2"]
        if reference:
            overrides.append(f'prune.reference_run="{reference}"')
        path = tmp_path / f"{procedure}-{bool(reference)}"
        _run(smoke_config(*overrides), path)
        folder = RunFolder(path)
        for r in (1, 2):
            assert layer_counts(folder.round_masks(r)) == layer_counts(reference_run.round_masks(r))
        if procedure == "oneshot":  # pruned from the dense weights, not round r-1's
            dense = folder.round_state(0, "final")
            score = torch.cat([dense[n].abs().flatten() for n in layer_names(0)])
            kept = torch.cat([folder.round_masks(2)[n].flatten() for n in layer_names(0)])
            assert score[kept].min() >= score[~kept].max()
        else:
            imp = reference_run.round_masks(2)["layers.0.weight"]
            assert not torch.equal(folder.round_masks(2)["layers.0.weight"], imp)


def test_reinit_reuses_masks_with_fresh_weights(tmp_path, reference_run):
    config = smoke_config(
        "prune.procedure=reinit",
        f'prune.reference_run="{reference_run.root}"',
        "prune.max_rounds=5",
    )
    result = _run(config, tmp_path)
    assert "reference run has no further round" in result.stop_reason
    folder = RunFolder(tmp_path)
    assert len(result.rounds) == 3
    rewind = reference_run.load_tensors(reference_run.rewind_path)
    for r in (1, 2):
        assert _same_masks([folder.round_masks(r)], [reference_run.round_masks(r)])
        start = folder.round_state(r, "start")["layers.0.weight"]
        assert not torch.equal(
            start, rewind["layers.0.weight"] * reference_run.round_masks(r)["layers.0.weight"]
        )


def test_finetune_continues_from_trained_weights(tmp_path):
    _run(smoke_config("prune.procedure=finetune", "prune.max_rounds=2"), tmp_path)
    folder = RunFolder(tmp_path)
    final1 = folder.round_state(1, "final")
    masks2 = folder.round_masks(2)
    start2 = folder.round_state(2, "start")
    for name, mask in masks2.items():
        assert torch.equal(start2[name], final1[name] * mask)


def test_config_document_is_stored_resolved(momentum_run):
    config, folder, _ = momentum_run
    assert folder.read_config_document() == config_to_dict(config)
    assert parse_config(folder.read_config_document()) == config


def test_written_files_follow_the_umask(momentum_run):
    import os
    import stat

    _, folder, _ = momentum_run
    mask = os.umask(0)
    os.umask(mask)
    for path in (folder.config_path, folder.round_file(1, "mask"), folder.summary_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
