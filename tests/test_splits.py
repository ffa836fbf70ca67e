"""Three splits: selection on the validation set, the test set only reported. The
official held-out set of a format becomes the test set when validation is held out of
training (data.val_source = 'train'); the synthetic task draws its own (data.n_test)."""

from __future__ import annotations

import csv

import pytest
import torch

from imprint.config import MNISTData
from imprint.data import load_dataset
from imprint.imp import run_group, run_imp
from imprint.runs import RunFolder
from tests.conftest import smoke_config
from tests.data_fixtures import write_mnist


def _quiet(_):
    return None


def _run(out, *overrides):
    return run_imp(smoke_config(*overrides), out, device="cpu", progress=False, log=_quiet)


def test_the_official_set_becomes_the_test_set_when_validation_is_held_out(tmp_path):
    written = write_mnist(tmp_path)
    paper = load_dataset(
        MNISTData(name="fashion_mnist", root=str(tmp_path), n_val=7, val_source="official")
    )
    assert paper.x_test is None  # the paper's two splits: nothing held out
    held = load_dataset(MNISTData(name="fashion_mnist", root=str(tmp_path), n_val=7))
    images, labels = written["t10k"]
    assert held.x_test is not None and held.y_test is not None
    assert torch.equal(held.x_test, torch.from_numpy(images.reshape(12, 784)))
    assert held.y_test.tolist() == labels.tolist()
    assert held.x_train.shape[0] == 23 and held.x_val.shape[0] == 7  # 30 - 7 held out
    # the held-out images are a seeded draw: together with the rest, exactly the
    # training files, each once; another data.seed holds out others
    train_images = torch.from_numpy(written["train"][0].reshape(30, 784))
    rows = {tuple(r.tolist()): i for i, r in enumerate(train_images)}
    val_rows = sorted(rows[tuple(r.tolist())] for r in held.x_val)
    kept = sorted(rows[tuple(r.tolist())] for r in held.x_train)
    assert sorted(val_rows + kept) == list(range(30))
    assert val_rows != list(range(23, 30))  # not simply the last images
    other = load_dataset(MNISTData(name="fashion_mnist", root=str(tmp_path), n_val=7, seed=1))
    assert sorted(rows[tuple(r.tolist())] for r in other.x_val) != val_rows
    assert held.splits["seed"] == 0 and other.splits["seed"] == 1
    assert held.splits["held_out_sha256"] != other.splits["held_out_sha256"]
    modulo = load_dataset(  # the test set is relabelled as the others: label mod 2
        MNISTData(
            name="fashion_mnist",
            root=str(tmp_path),
            n_val=7,
            val_source="train",
            task="modulo",
            modulo=2,
        )
    )
    assert modulo.y_test is not None and modulo.y_test.tolist() == (labels % 2).tolist()


def test_the_synthetic_task_draws_its_own_test_set_after_the_others():
    plain = load_dataset(smoke_config("data.n_test=0").data)
    tested = load_dataset(smoke_config("data.n_test=100").data)
    assert plain.x_test is None and tested.x_test is not None and tested.x_test.shape[0] == 100
    assert torch.equal(plain.x_train, tested.x_train) and torch.equal(plain.x_val, tested.x_val)


def test_selection_on_validation_the_test_set_reported(tmp_path):
    result = _run(tmp_path / "run", "data.n_test=128", "prune.max_rounds=1")
    folder = RunFolder(tmp_path / "run")
    for metrics in result.rounds:
        rows = list(
            csv.DictReader(folder.round_file(metrics["round"], "curves").read_text().splitlines())
        )
        best = max(rows, key=lambda row: float(row["val_top1"]))  # chosen on validation
        assert metrics["best_val_top1"] == pytest.approx(float(best["val_top1"]))
        assert metrics["test_top1_at_best"] == pytest.approx(float(best["test_top1"]))
        assert metrics["final_test_top1"] == pytest.approx(float(rows[-1]["test_top1"]))
    assert folder.read_data_record()["n_test"] == 128
    header = folder.summary_path.read_text().splitlines()[0].split(",")
    assert "test_top1_at_best" in header
    plain = _run(tmp_path / "plain", "prune.max_rounds=1", "data.n_test=0")
    assert "test_top1_at_best" not in plain.rounds[1]  # no test set, no test column
    assert [m["best_val_top1"] for m in plain.rounds] == [m["best_val_top1"] for m in result.rounds]


def test_a_group_reports_test_accuracy_over_seeds(tmp_path):
    from imprint.cli import format_round_table

    config = smoke_config("data.n_test=128", "prune.max_rounds=1", "seeds.group=[0, 1]")
    result = run_group(config, tmp_path / "g", device="cpu", progress=False, log=_quiet)
    row = result.rounds[1]
    values = [run.rounds[1]["test_top1_at_best"] for run in result.runs]
    assert row["test_top1_at_best"] == pytest.approx(sum(values) / 2)
    assert row["test_top1_at_best_n"] == 2
    assert "test top-1" in format_round_table(result.rounds, [0, 1]).splitlines()[0]


def test_a_resume_on_other_data_is_refused(tmp_path):
    """data.json records the set sizes and how the splits were made; a resume whose
    data differ (here: a recorded held-out digest that is not today's) stops with one
    line naming data.json, and the completed rounds stay."""
    import json

    from imprint.safeio import RunFolderError

    config = smoke_config("prune.max_rounds=1")
    run_imp(config, tmp_path / "run", device="cpu", progress=False, log=_quiet)
    folder = RunFolder(tmp_path / "run")
    record = folder.read_data_record()
    assert record["splits"]["validation"] == "drawn after the training set"

    def resume(rounds: int):
        return run_imp(
            smoke_config(f"prune.max_rounds={rounds}"),
            tmp_path / "run",
            device="cpu",
            progress=False,
            log=_quiet,
            allow_changes=("prune.max_rounds",),
        )

    resume(2)  # the same data: resumes and trains round 2
    record["splits"] = {**record["splits"], "validation": "held out of the training files"}
    folder.data_path.write_text(json.dumps(record))
    with pytest.raises(RunFolderError, match=r"data.json: the data differ .*splits"):
        resume(3)
    assert folder.completed_rounds() == [0, 1, 2]
