"""The read side of imprint's folders: what a run or a group of seeds holds, read once.

:class:`RunResults` opens a run folder and :class:`GroupResults` a group folder
(:func:`open_results` tells them apart); they expose the completed rounds, each round's
metrics, the study round, the stored readings, masks (loaded once), the data record,
the permutation and the analysis results. analyze, report, compare, collect and the
CLI read through them; the round loop writes (imprint.imp), analyze adds analysis/.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from imprint.analysis.locality import to_image_space
from imprint.analysis.uncertainty import Reading
from imprint.prune import layer_counts, weight_counts
from imprint.readings import (
    READINGS,
    ReadingInputs,
    aggregate_over_seeds,
    compute_readings,
    json_safe,
    reading_columns,
    shown_in,
)
from imprint.records import RoundMetrics
from imprint.runs import RunFolder, group_members, is_group
from imprint.safeio import RunFolderError, read_json, read_text

__all__ = [
    "STUDY_TOLERANCE",
    "ROUND_CHOICES",
    "GROUP_METRICS",
    "study_round",
    "resolve_rounds",
    "summarize_seeds",
    "read_group",
    "round_readings",
    "input_shape",
    "read_curves",
    "read_csv",
    "RunResults",
    "GroupResults",
    "open_results",
    "ReferenceRun",
]


STUDY_TOLERANCE = 0.03  # the study round keeps >= 97% of the dense round's best top-1


def study_round(metrics: Sequence[Mapping[str, Any]], tolerance: float = STUDY_TOLERANCE) -> int:
    """The round that shows what pruning imprinted: the sparsest round (lowest density)
    whose best validation top-1 is at least (1 - ``tolerance``) times the dense round's.

    The "best" round (highest accuracy) is usually an early round on easy tasks, where
    nothing local is visible yet; past the study round the net loses accuracy, so its
    masks are what pruning could remove without paying for it. For a group, pass the
    mean over seeds (:func:`summarize_seeds`) so every seed is read at one density.
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"The 'tolerance' parameter must be in [0, 1). Got {tolerance!r}.")
    if not metrics:
        raise ValueError("The 'metrics' parameter must hold at least the dense round.")
    floor = (1 - tolerance) * metrics[0]["best_val_top1"]
    kept = [m for m in metrics if m["best_val_top1"] >= floor] or [metrics[0]]
    return min(kept, key=lambda m: (m["density"], -m["round"]))["round"]


ROUND_CHOICES = "study, best, last, all or a round number"


def resolve_rounds(
    folder: RunFolder, which: str, metrics: Sequence[Mapping[str, Any]] | None = None
) -> list[int]:
    """'study', 'best', 'last', 'all' or a round number -> completed round indices.

    'study' is :func:`study_round` (the sparsest round keeping >= 97% of the
    dense top-1) of ``metrics`` (default: the folder's own; a group passes the mean over
    its seeds, so that every seed is read at one density)."""
    done = folder.completed_rounds()
    if not done:
        raise RunFolderError(f"{folder.root} has no completed round to analyse.")
    if which == "all":
        return done
    if which == "last":
        return [done[-1]]
    if which in ("best", "study"):
        metrics = metrics or [folder.round_metrics(r) for r in done]
        if which == "study":
            index = study_round(metrics)
            return [index] if index in done else [done[-1]]
        return [max(metrics, key=lambda m: m["best_val_top1"])["round"]]
    try:
        index = int(which)
    except ValueError:
        raise RunFolderError(
            f"The '--round' option must be {ROUND_CHOICES}. Got {which!r}."
        ) from None
    if index not in done:
        raise RunFolderError(
            f"The '--round' option names round {index}; {folder.root} has rounds 0..{done[-1]}."
        )
    return [index]


GROUP_METRICS = ("density", "best_val_top1", "val_top5_at_best", "test_top1_at_best")


def summarize_seeds(runs: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per round index: how many seeds reached it, and the mean and sample sd over them
    of density, accuracy and the readings shown in summary tables (sd NaN for a single
    seed)."""
    names = [*GROUP_METRICS, *(spec.name for spec in shown_in("summary", "round"))]
    rows = []
    for index in range(max((len(r) for r in runs), default=0)):
        reached = [r[index] for r in runs if len(r) > index]
        row: dict[str, Any] = {"round": index, "seeds": len(reached)}
        row.update(aggregate_over_seeds(reached, names))
        row["layer_density"] = reached[0]["layer_density"]
        layers = range(len(reached[0]["connected_units"]))
        per_layer = [{str(i): m["connected_units"][i] for i in layers} for m in reached]
        connected = aggregate_over_seeds(per_layer, [str(i) for i in layers])
        row["connected_units"] = [connected[str(i)] for i in layers]
        row["units"] = reached[0]["units"]
        rows.append(row)
    return rows


def read_group(
    root: str | Path, what: str = "read"
) -> tuple[list[tuple[int, Path]], list[RunFolder], list[list[RoundMetrics]], list[dict[str, Any]]]:
    """A group folder as analyze and report read it: its (seed, folder) members, their
    RunFolders, each seed's round metrics and the mean over seeds per round
    (:func:`summarize_seeds`). A seed without a completed round is refused."""
    members = group_members(root)
    folders = [RunFolder(path) for _, path in members]
    per_seed = [[f.round_metrics(r) for r in f.completed_rounds()] for f in folders]
    empty = [f"seed {seed} ({path})" for (seed, path), rows in zip(members, per_seed) if not rows]
    if empty:
        raise RunFolderError(
            f"{root}: {', '.join(empty)} listed in group.json has no completed round to {what}."
        )
    return members, folders, per_seed, summarize_seeds(per_seed)


def round_readings(folder: RunFolder, index: int) -> dict[str, Any]:
    """The columns of the registered "round" readings of round ``index`` (:mod:`imprint.
    readings`): as stored in its metrics.json by the round loop, or, for a folder written
    before the loop stored them all (or before a reading was registered), computed from
    its mask."""
    metrics = folder.round_metrics(index)
    stored = [spec.name for spec in READINGS.values() if spec.stage == "round"]
    if all(name in metrics for name in stored):
        return reading_columns(metrics, stored)
    masks = folder.round_masks(index)
    shape = input_shape(folder, masks)
    first = to_image_space(masks["layers.0.weight"], folder.permutation())
    return json_safe(compute_readings(ReadingInputs(first, shape), "round"))


def input_shape(folder: RunFolder, masks: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in folder.read_data_record()["shape"])
    n_inputs = masks["layers.0.weight"].shape[1]
    if len(shape) != 3 or shape[0] * shape[1] * shape[2] != n_inputs:
        raise RunFolderError(
            f"{folder.data_path} gives input shape {shape}; the masks have {n_inputs} inputs."
        )
    return shape


def read_curves(folder: RunFolder, index: int) -> list[dict[str, float]]:
    path = folder.round_file(index, "curves")
    try:
        with io.StringIO(read_text(path)) as handle:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except (OSError, ValueError, TypeError, csv.Error) as error:  # short rows: None
        raise RunFolderError(f"{path} is not a readable curves file: {error}.") from None


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV table of a folder, or a RunFolderError naming it."""
    try:
        return list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except OSError as error:
        raise RunFolderError(f"Cannot read {path}: {error.strerror}.") from None
    except csv.Error as error:
        raise RunFolderError(f"{path} is not a readable CSV table: {error}.") from None


class RunResults:
    """A run folder as the read side sees it: each file read at most once."""

    def __init__(self, root: str | Path) -> None:
        self.folder = RunFolder(root)
        self.root = self.folder.root
        if not self.folder.config_path.exists():
            raise RunFolderError(f"{self.root} is not an imprint run folder (no config.toml).")
        self._masks: dict[int, dict[str, torch.Tensor]] = {}

    @cached_property
    def rounds(self) -> list[int]:
        """The completed rounds."""
        return self.folder.completed_rounds()

    @cached_property
    def metrics(self) -> list[RoundMetrics]:
        """Each completed round's metrics.json, in round order."""
        return [self.folder.round_metrics(r) for r in self.rounds]

    @cached_property
    def study_round(self) -> int:
        return study_round(self.metrics)

    @cached_property
    def config(self):
        return self.folder.read_config()

    @cached_property
    def record(self) -> dict[str, Any]:
        """run.json (why the run stopped, best round, study round); empty while it runs."""
        return read_json(self.folder.run_path) if self.folder.run_path.exists() else {}

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return read_json(self.folder.manifest_path)

    @cached_property
    def data_record(self) -> dict[str, Any]:
        return self.folder.read_data_record()

    @cached_property
    def shape(self) -> tuple[int, int, int]:
        """The input shape (C, H, W), checked against the first layer."""
        if not self.rounds:
            raise RunFolderError(f"{self.root} has no completed round.")
        return input_shape(self.folder, self.masks(self.rounds[0]))

    @property
    def channels(self) -> int:
        return int(self.data_record["shape"][0])

    @cached_property
    def permutation(self) -> torch.Tensor | None:
        return self.folder.permutation()

    def masks(self, index: int) -> dict[str, torch.Tensor]:
        """Round ``index``'s masks, loaded once."""
        if index not in self._masks:
            self._masks[index] = self.folder.round_masks(index)
        return self._masks[index]

    def first_layer_image(self, index: int) -> torch.Tensor:
        """Round ``index``'s first-layer mask (units, C*H*W) in image space."""
        return to_image_space(self.masks(index)["layers.0.weight"], self.permutation)

    def readings(self, index: int) -> dict[str, Any]:
        """The registered round readings of round ``index`` as columns
        (:func:`round_readings`)."""
        return round_readings(self.folder, index)

    def typed_readings(self, index: int) -> dict[str, Reading]:
        """The registered round readings of round ``index``, each a :class:`Reading`
        (value, spread, interval, null, n, or the reason it has none)."""
        columns = self.readings(index)
        return {
            spec.name: spec.read(columns)
            for spec in READINGS.values()
            if spec.stage == "round" and spec.name in columns
        }

    def resolve(self, which: str, metrics: Sequence[dict[str, Any]] | None = None) -> list[int]:
        return resolve_rounds(self.folder, which, metrics)

    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    def analysis_round_dir(self, index: int) -> Path:
        return self.analysis_dir / f"round_{index:03d}"

    def rounds_table(self) -> list[dict[str, str]]:
        """analysis/rounds.csv (empty before the first analysis)."""
        path = self.analysis_dir / "rounds.csv"
        return read_csv(path) if path.exists() else []

    def summary_table(self) -> list[dict[str, str]]:
        """summary.csv: a row per completed round."""
        return read_csv(self.folder.summary_path)


class GroupResults:
    """A group folder (seeds run together): its members as RunResults and the mean over
    seeds of each round's metrics."""

    def __init__(self, root: str | Path, what: str = "read") -> None:
        self.folder = RunFolder(root)
        self.root = self.folder.root
        members, _, per_seed, mean = read_group(root, what)
        self.seeds = [seed for seed, _ in members]
        self.members = [RunResults(path) for _, path in members]
        self.per_seed = per_seed
        self.mean_metrics = mean

    @cached_property
    def study_round(self) -> int:
        return study_round(self.mean_metrics)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return read_json(self.folder.manifest_path)

    @property
    def example(self) -> RunResults:
        """The seed whose figures a group report shows."""
        return self.members[0]

    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    def readings_record(self) -> dict[str, Any]:
        """analysis/readings.json (empty before the first analysis)."""
        path = self.analysis_dir / "readings.json"
        return read_json(path) if path.exists() else {}

    def summary_table(self) -> list[dict[str, str]]:
        return read_csv(self.folder.summary_path)


def open_results(path: str | Path, what: str = "read") -> RunResults | GroupResults:
    """A run folder's or a group folder's results."""
    return GroupResults(path, what) if is_group(path) else RunResults(path)


class ReferenceRun:
    """A finished run whose masks or per-layer counts a control procedure follows
    (``prune.reference_run``); it must be of the run's architecture."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.folder = RunFolder(path)
        if not self.folder.config_path.exists():
            raise RunFolderError(
                f"prune.reference_run: {path} is not an imprint run folder (no config.toml)."
            )
        self.rounds = self.folder.completed_rounds()

    def check_fits(self, state: Mapping[str, torch.Tensor]) -> None:
        """A ConfigError-like RunFolderError when the reference's layers are not this
        net's (another width, depth or input size would give masks of the wrong shape,
        or counts at the wrong density)."""
        if not self.rounds:
            raise RunFolderError(f"prune.reference_run: {self.path} has no completed round.")
        theirs = {k: tuple(v.shape) for k, v in self.masks(0).items()}
        ours = {k: tuple(state[k].shape) for k in theirs if k in state}
        if theirs != ours or not theirs:
            raise RunFolderError(
                f"prune.reference_run: {self.path} is a net of layers "
                f"{_widths(theirs)}; this config's net has {_widths(ours)}. A control follows "
                "a reference of its own architecture: name one, or change model.hidden."
            )

    def has_round(self, index: int) -> bool:
        return index in self.rounds

    def masks(self, index: int) -> dict[str, torch.Tensor]:
        return self.folder.round_masks(index)

    def counts(self, index: int, layers: list[int]) -> dict[int, int]:
        masks = self.masks(index)
        return {layer: layer_counts(masks)[layer][0] for layer in layers}

    def weight_counts(self, index: int, layers: list[int]) -> dict[int, int]:
        return weight_counts(self.masks(index), layers)


def _widths(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """in -> hidden ... -> out of a net's weight shapes."""
    names = [k for k in shapes if k.startswith("layers.") and k.endswith(".weight")]
    weights = [shapes[k] for k in sorted(names, key=lambda k: int(k.split(".")[1]))]
    if not weights:
        return "none"
    return " -> ".join(str(n) for n in [weights[0][1], *(w[0] for w in weights)])
