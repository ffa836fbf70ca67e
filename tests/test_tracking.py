"""Experiment tracking: what a run logs to TensorBoard and MLflow is read back with each
library's own reader and agrees with the run folder; a group is an MLflow parent with a
child per seed; a resume continues the same MLflow run; a tracker that fails is one
warning line and training goes on."""

from __future__ import annotations

import pytest

import imprint.tracking
from imprint.cli import main
from imprint.imp import run_group, run_imp
from imprint.runs import RunFolder
from tests.conftest import smoke_config, smoke_run_args

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def _quiet(_):
    return None


def _client(root):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())


def _runs(root):
    client = _client(root)
    experiment = client.get_experiment_by_name("imprint")
    return client, {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def _readings(folder: RunFolder, name: str) -> list[float]:
    return [folder.round_metrics(r)[name] for r in folder.completed_rounds()]


def test_a_run_reads_back_from_tensorboard_and_mlflow(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main([*smoke_run_args(out), "--track", "tensorboard,mlflow"]) == 0
    folder = RunFolder(out)
    rounds = folder.completed_rounds()
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    locality = events.Scalars("reading/locality_index")
    assert [e.step for e in locality] == rounds
    assert [e.value for e in locality] == pytest.approx(_readings(folder, "locality_index"))
    assert "reading/locality_index_sd" in events.Tags()["scalars"]
    accuracy = events.Scalars("round/best_val_top1")
    assert [e.value for e in accuracy] == pytest.approx(
        [folder.round_metrics(r)["best_val_top1"] for r in rounds]
    )
    # the curves of every round on one step axis: 4 validation points a round
    assert len(events.Scalars("curves/val_top1")) == 4 * len(rounds)
    assert [e.step for e in events.Images("masks/most_connected_l0")] == rounds
    # the config as hyper-parameters (TensorBoard's HParams tab)
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["train.steps"].number_value == 40
    assert hparams["prune.procedure"].string_value == "imp"

    client, runs = _runs(out)
    (run,) = runs.values()
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "40"
    history = client.get_metric_history(run.info.run_id, "reading/locality_index")
    assert [m.step for m in history] == rounds
    assert [m.value for m in history] == pytest.approx(_readings(folder, "locality_index"))
    images = [a.path for a in client.list_artifacts(run.info.run_id, "masks")]
    assert images == [f"masks/round_{r:03d}.png" for r in rounds]


def test_a_group_is_a_parent_run_with_a_child_per_seed(tmp_path):
    out = tmp_path / "group"
    config = smoke_config("seeds.group=[0, 1]", 'track=["mlflow", "tensorboard"]')
    run_group(config, out, device="cpu", progress=False, log=_quiet)
    _, runs = _runs(out)
    assert set(runs) == {"group", "seed_0", "seed_1"}
    parent = runs["group"].info.run_id
    for seed in (0, 1):
        assert runs[f"seed_{seed}"].data.tags["mlflow.parentRunId"] == parent
        assert any((out / f"seed_{seed}" / "tensorboard").iterdir())


def test_a_resume_continues_the_same_mlflow_run(tmp_path):
    out = tmp_path / "run"
    run_imp(smoke_config("prune.max_rounds=1", 'track=["mlflow"]'), out, "cpu", False, _quiet)
    # resumed with a further round and tracking changed: no config change is refused
    config = smoke_config("prune.max_rounds=2", 'track=["mlflow", "tensorboard"]')
    run_imp(config, out, "cpu", False, _quiet, allow_changes=["prune.max_rounds"])
    client, runs = _runs(out)
    (run,) = runs.values()
    history = client.get_metric_history(run.info.run_id, "round/density")
    assert [m.step for m in history] == [0, 1, 2]


def test_a_failing_tracker_is_one_warning_and_training_goes_on(tmp_path, monkeypatch):
    class Broken:
        def __init__(self, *args):
            pass

        def round(self, *args):
            raise OSError("No space left on device")

        def close(self):
            pass

    class Missing:
        def __init__(self, *args):
            raise ImportError("No module named 'tensorboard'")

    monkeypatch.setitem(imprint.tracking.TRACKERS, "mlflow", Broken)
    monkeypatch.setitem(imprint.tracking.TRACKERS, "tensorboard", Missing)
    lines: list[str] = []
    config = smoke_config('track=["tensorboard", "mlflow"]')
    run_imp(config, tmp_path / "run", "cpu", False, lines.append)
    assert RunFolder(tmp_path / "run").completed_rounds() == [0, 1, 2, 3]
    warnings = [line for line in lines if line.startswith("Warning:")]
    assert len(warnings) == 2  # one each, not one per round
    assert "tensorboard tracking stopped (start): No module named" in warnings[0]
    assert "pip install -e '.[track]'" in warnings[0]
    assert "mlflow tracking stopped (round 0): No space left on device" in warnings[1]


def test_track_names_are_checked(tmp_path, capsys):
    assert main([*smoke_run_args(tmp_path / "r"), "--track", "wandb"]) == 2
    assert "--track wandb: unknown tracker 'wandb'" in capsys.readouterr().err
    with pytest.raises(Exception, match="twice"):
        smoke_config('track=["mlflow", "mlflow"]')
