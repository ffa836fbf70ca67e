"""Experiment tracking (``track = ["tensorboard", "mlflow"]`` in a config, or ``imprint
run --track``): each completed round goes to TensorBoard and/or MLflow as it is saved.
Logged: the round's training curves (global step = round x steps + step), its summary
(density, accuracies, connected units) and every registered reading with its sd and
null, the masks of the most connected first-layer units as one image, and the config
as hyper-parameters. One TensorBoard run or MLflow run per seed; a group is an MLflow
parent run with a child per seed.

Both are local: TensorBoard event files in ``RUN/tensorboard`` (``tensorboard --logdir
RUN``), an MLflow file store in ``RUN/mlruns`` (a group's in ``GROUP/mlruns``: ``mlflow
ui --backend-store-uri GROUP/mlruns``). Tracking never stops training: a tracker that
fails (the library missing, a full disk, a refused write) says so in one warning line
and is dropped. A resumed run continues the same MLflow runs (their ids are kept in
``tracking.json``)."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imprint.analysis.connectivity import connectivity
from imprint.analysis.locality import to_image_space
from imprint.analysis.units import select_units, unit_images
from imprint.config import Config, config_to_dict, flatten_document
from imprint.plots import mosaic
from imprint.readings import reading_columns
from imprint.safeio import read_json, write_text

__all__ = ["TRACKERS", "Tracking", "open_tracking"]

MASK_UNITS = 36  # the most connected first-layer units drawn each round
RECORD = "tracking.json"  # the MLflow run ids of a run or group, for resuming


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A round's numbers as tracked scalars: its summary and each registered reading
    with its spread and null (``reading/<name>``, ``reading/<name>_sd``, ...)."""
    out = {
        "round/density": metrics["density"],
        "round/density_l0": metrics["layer_density"][0],
        "round/best_val_top1": metrics["best_val_top1"],
        "round/connected_l0": metrics["connected_units"][0],
    }
    if "test_top1_at_best" in metrics:
        out["round/test_top1_at_best"] = metrics["test_top1_at_best"]
    for key, value in reading_columns(metrics).items():  # value, _sd, _null, _low, ...
        if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
            out[f"reading/{key}"] = value
    return {k: float(v) for k, v in out.items()}


def mask_image(
    masks: Mapping[str, torch.Tensor], shape: Sequence[int], perm: torch.Tensor | None
) -> np.ndarray:
    """The masks of the most connected first-layer units in one grid, (H, W, C) uint8
    (white: connected), one pixel of grey between units."""
    first = masks["layers.0.weight"]
    units = select_units(connectivity(first).c_in, "most", MASK_UNITS)
    c, h, w = (int(v) for v in shape)
    tiles = unit_images(to_image_space(first, perm).double(), (c, h, w), units).numpy()
    columns = max(1, int(np.ceil(np.sqrt(max(len(tiles), 1)))))
    grid = np.nan_to_num(mosaic(tiles, columns), nan=0.5)  # grey between units
    return (255 * np.clip(grid, 0, 1)).astype(np.uint8)


class _TensorBoard:
    """One SummaryWriter per seed, in the seed's run folder."""

    def __init__(self, root: Path, folders: Sequence[Path], config: Config, record: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writers = [SummaryWriter(log_dir=str(f / "tensorboard")) for f in folders]
        params = _params(config)
        for writer in self.writers:
            # the config as hyper-parameters, shown in TensorBoard's HParams tab
            for summary in hparams(params, {"round/best_val_top1": 0.0}):
                writer._get_file_writer().add_summary(summary)

    def round(
        self,
        position: int,
        metrics: Mapping[str, Any],
        curves: Sequence[Mapping[str, Any]],
        image: np.ndarray,
        steps: int,
    ) -> None:
        writer, index = self.writers[position], metrics["round"]
        for row in curves:
            step = index * steps + int(row["step"])
            for key, value in row.items():
                if key != "step":
                    writer.add_scalar(f"curves/{key}", float(value), step)
        for key, value in _scalars(metrics).items():
            writer.add_scalar(key, value, index)
        writer.add_image("masks/most_connected_l0", image, index, dataformats="HWC")
        writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class _MLflow:
    """An MLflow file store in the run's (or group's) folder: a run per seed, children
    of a parent run for a group."""

    def __init__(self, root: Path, folders: Sequence[Path], config: Config, record: dict) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # local files, as asked
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())
        found = self.client.get_experiment_by_name("imprint")
        experiment = found.experiment_id if found else self.client.create_experiment("imprint")
        ids = record.setdefault("mlflow", {})
        params = [Param(k, str(v)[:500]) for k, v in _params(config).items()]
        parent = None
        if len(folders) > 1 or folders[0] != root:  # a group: its own run, the seeds under it
            parent = ids.get("group") or self._start(experiment, root.name, {}, params)
            ids["group"] = parent
        self.runs = []
        for folder in folders:
            tags = {"mlflow.parentRunId": parent} if parent else {}
            run = ids.get(folder.name) or self._start(experiment, folder.name, tags, params)
            ids[folder.name] = run
            self.runs.append(run)
        self.parent = parent

    def _start(self, experiment: str, name: str, tags: dict, params: list) -> str:
        run = self.client.create_run(experiment, run_name=name, tags=tags)
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def round(
        self,
        position: int,
        metrics: Mapping[str, Any],
        curves: Sequence[Mapping[str, Any]],
        image: np.ndarray,
        steps: int,
    ) -> None:
        from mlflow.entities import Metric

        run, index, now = self.runs[position], metrics["round"], int(time.time() * 1000)
        batch = [
            Metric(f"curves/{key}", float(value), now, index * steps + int(row["step"]))
            for row in curves
            for key, value in row.items()
            if key != "step"
        ]
        batch += [Metric(key, value, now, index) for key, value in _scalars(metrics).items()]
        self.client.log_batch(run, metrics=batch)
        self.client.log_image(run, image, artifact_file=f"masks/round_{index:03d}.png")

    def close(self) -> None:
        for run in [*self.runs, *([self.parent] if self.parent else [])]:
            self.client.set_terminated(run)


def _params(config: Config) -> dict[str, Any]:
    """The config flattened to dotted keys (lists and tables as text)."""
    flat = flatten_document(config_to_dict(config))
    return {
        k: v if isinstance(v, int | float | str | bool) else json.dumps(v) for k, v in flat.items()
    }


TRACKERS: dict[str, Callable[..., Any]] = {"tensorboard": _TensorBoard, "mlflow": _MLflow}


class Tracking:
    """The trackers of one run or group. Every call is guarded: a tracker that fails
    is named in one warning line and dropped; training goes on."""

    def __init__(
        self, config: Config, root: Path, folders: Sequence[Path], log: Callable[[str], None]
    ) -> None:
        self.log, self.root, self.steps = log, root, config.train.steps
        self.trackers: dict[str, Any] = {}
        path = root / RECORD
        try:
            record = read_json(path) if path.exists() else {}
        except Exception:  # noqa: BLE001  # a damaged record: start new MLflow runs
            record = {}
        for name in config.track:
            start = functools.partial(self._open, name, config, folders, record)
            self._guard(name, "start", start)
        if self.trackers:
            self._guard(
                "tracking", "record", lambda: write_text(path, json.dumps(record, indent=2) + "\n")
            )

    def _open(self, name: str, config: Config, folders: Sequence[Path], record: dict) -> None:
        self.trackers[name] = TRACKERS[name](self.root, folders, config, record)

    def _guard(self, name: str, what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as error:  # noqa: BLE001  # tracking never stops training
            self.trackers.pop(name, None)
            reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            if isinstance(error, ImportError):
                reason += " (pip install -e '.[track]')"
            self.log(f"Warning: {name} tracking stopped ({what}): {reason}. Training goes on.")

    def round(
        self,
        position: int,
        folder: Any,
        metrics: Mapping[str, Any],
        curves: Sequence[Mapping[str, Any]],
        masks: Mapping[str, torch.Tensor],
    ) -> None:
        """Round ``metrics['round']`` of seed ``position`` (its RunFolder ``folder``)."""
        if not self.trackers:
            return
        shape = folder.read_data_record()["shape"]
        image = mask_image(masks, shape, folder.permutation())
        for name, tracker in list(self.trackers.items()):
            self._guard(
                name,
                f"round {metrics['round']}",
                functools.partial(tracker.round, position, metrics, curves, image, self.steps),
            )

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, *exc: object) -> None:
        for name, tracker in list(self.trackers.items()):
            self._guard(name, "close", tracker.close)


def open_tracking(
    config: Config, root: Path, folders: Sequence[Path], log: Callable[[str], None]
) -> Tracking:
    """The trackers ``config.track`` names, for the run (``folders`` = [root]) or the
    group (``folders``: its seeds' folders) in ``root``."""
    return Tracking(config, root, folders, log)
