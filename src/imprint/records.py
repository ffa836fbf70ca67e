"""Typed records of a run folder: a round's metrics.json (:class:`RoundMetrics`), checked
when read (:func:`check_round_metrics`), and the checks of a round's mask and state
files (:func:`check_masks`, :func:`check_state`)."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import torch

from imprint.readings import READINGS, is_reading_column

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

from imprint.safeio import RunFolderError

__all__ = [
    "round_document",
    "READING_FIELDS",
    "check_data_record",
    "check_masks",
    "check_state",
    "finite_or_none",
    "RoundMetrics",
    "check_round_metrics",
]


class RoundMetrics(TypedDict):
    """A round's metrics.json: the one record of a completed round. It also holds the
    flat columns of every registered "round" reading (:mod:`imprint.readings`:
    ``locality_index``, ``locality_index_sd``, ...), numbers or null."""

    round: int
    density: float  # alive fraction of the prunable weights and biases
    layer_density: list[float]  # per linear layer
    layer_alive: list[int]
    connected_units: list[int]  # units with an incoming connection, per linear layer
    units: list[int]
    best_val_top1: float  # the round's figure of merit (best validation top-1)
    best_step: int
    val_top5_at_best: float
    best_val_top5: float
    final_val_top1: float
    final_val_loss: float
    seconds: float
    # The layers trained sparse (imprint.sparse); absent in folders from before it.
    sparse_layers: NotRequired[list[int]]


_INTS = ("round", "best_step")
_FRACTIONS = (
    "density",
    "best_val_top1",
    "val_top5_at_best",
    "best_val_top5",
    "final_val_top1",
)
_LAYER_LISTS = (
    ("layer_density", float),
    ("layer_alive", int),
    ("connected_units", int),
    ("units", int),
)


def check_round_metrics(record: Any, index: int, source: Path) -> RoundMetrics:
    """``record`` as a :class:`RoundMetrics` of round ``index``, or a RunFolderError
    naming the file and the key that is missing or of the wrong type."""

    def fail(why: str) -> RunFolderError:
        return RunFolderError(f"{source}: {why} (a damaged or foreign metrics file).")

    if not isinstance(record, dict):
        raise fail("not a JSON object")
    for key in _INTS:
        value = record.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise fail(f"'{key}' must be an integer >= 0, got {value!r}")
    if record["round"] != index:
        raise fail(f"'round' is {record['round']}, but the file is round {index}'s")
    for key in _FRACTIONS:
        value = record.get(key)
        if not _number(value) or not 0 <= float(value) <= 1:  # type: ignore[arg-type]  # a number
            raise fail(f"'{key}' must be a number in [0, 1], got {value!r}")
    for key in ("test_top1_at_best", "final_test_top1"):  # only with a test set
        value = record.get(key)
        if key in record and value is not None and (not _number(value) or not 0 <= value <= 1):
            raise fail(f"'{key}' must be a number in [0, 1], got {value!r}")
    sparse = record.get("sparse_layers", [])
    if not isinstance(sparse, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sparse
    ):
        raise fail(f"'sparse_layers' must be a list of layer indices, got {sparse!r}")
    for key in ("final_val_loss", "seconds"):
        if not _number(record.get(key)):
            raise fail(f"'{key}' must be a finite number, got {record.get(key)!r}")
    lengths = set()
    for key, kind in _LAYER_LISTS:
        value = record.get(key)
        ok = isinstance(value, list) and all(
            _number(v) if kind is float else isinstance(v, int) and not isinstance(v, bool)
            for v in value
        )
        if not ok or not value:
            raise fail(f"'{key}' must be a non-empty list of {kind.__name__}s, got {value!r}")
        lengths.add(len(value))
    if len(lengths) != 1:
        raise fail("the per-layer lists have different lengths")
    for layer, (units, connected, alive) in enumerate(
        zip(record["units"], record["connected_units"], record["layer_alive"])
    ):
        if not (units > 0 and 0 <= connected <= units and alive >= 0):
            raise fail(
                f"layer {layer}: 'units' {units}, 'connected_units' {connected} and "
                f"'layer_alive' {alive} must satisfy 0 <= connected <= units and alive >= 0"
            )
    nested = record.pop("readings", None)
    if nested is not None:  # written since the readings registry: flat columns in memory
        columns = _reading_columns(nested, fail)
        for key in columns.keys() & record.keys():
            raise fail(f"'{key}' is both a column and in 'readings'")
        record.update(columns)
    for key, value in list(record.items()):
        if is_reading_column(key) and not key.endswith("_reason"):
            if isinstance(value, float) and math.isnan(value):
                record[key] = None  # written as NaN before readings were stored as null
            elif value is not None and not _number(value):
                raise fail(f"'{key}' must be a number or null, got {value!r}")
    return record  # type: ignore[return-value]  # checked above: a RoundMetrics


def finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_masks(masks: Mapping[str, torch.Tensor], path: Path) -> int:
    """The number of linear layers of a mask file's ``masks``, checked: bool tensors,
    one weight and one bias mask per linear layer, shapes that chain (layer l+1's inputs
    are layer l's units), and not all pruned; else a RunFolderError naming ``path``."""
    n_layers = sum(1 for name in masks if name.startswith("layers.") and name.endswith(".weight"))
    expected = {f"layers.{i}.{kind}" for i in range(n_layers) for kind in ("weight", "bias")}
    if not n_layers or set(masks) != expected:
        raise RunFolderError(
            f"{path}: expected the masks layers.0..{max(n_layers - 1, 0)}.weight|bias, "
            f"got {sorted(masks)[:6]}."
        )
    previous_units = None
    for layer in range(n_layers):
        weight, bias = masks[f"layers.{layer}.weight"], masks[f"layers.{layer}.bias"]
        if weight.dtype != torch.bool or bias.dtype != torch.bool:
            raise RunFolderError(f"{path}: layer {layer}'s masks must be bool tensors.")
        if weight.dim() != 2 or tuple(bias.shape) != (weight.shape[0],):
            raise RunFolderError(
                f"{path}: layer {layer}'s masks have shapes {tuple(weight.shape)} and "
                f"{tuple(bias.shape)}; expected (out, in) and (out,)."
            )
        if previous_units is not None and weight.shape[1] != previous_units:
            raise RunFolderError(
                f"{path}: layer {layer} has {weight.shape[1]} inputs; layer {layer - 1} "
                f"has {previous_units} units."
            )
        previous_units = weight.shape[0]
    if not any(bool(mask.any()) for mask in masks.values()):
        raise RunFolderError(f"{path}: every connection is pruned (a damaged mask file).")
    return n_layers


def check_state(
    state: Mapping[str, torch.Tensor], path: Path, masks: Mapping[str, torch.Tensor]
) -> None:
    """A state file's tensors, checked: finite, non-negative BN variances and, for each
    of ``masks``, a tensor of the mask's shape that is zero where it prunes."""
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise RunFolderError(f"{path}: '{name}' holds NaN or infinite values.")
        if name.endswith("running_var") and bool((value < 0).any()):
            raise RunFolderError(f"{path}: '{name}' holds negative variances.")
    for name, mask in masks.items():
        entry = state.get(name)
        if entry is None or tuple(entry.shape) != tuple(mask.shape):
            got = None if entry is None else tuple(entry.shape)
            raise RunFolderError(
                f"{path}: '{name}' has shape {got}; its mask has {tuple(mask.shape)}."
            )
        if bool(entry.masked_select(~mask).any()):
            raise RunFolderError(
                f"{path}: '{name}' has weights where its mask has pruned them (masks "
                "multiply weights and biases): the file was changed."
            )


def check_data_record(
    record: Any, path: Path, inputs: int | None, data: Mapping[str, Any] | None
) -> None:
    """data.json checked against its folder: an image shape (C, H, W) whose pixels are
    the first layer's ``inputs`` (None: unknown yet), at least 2 classes, and, when the
    config's data section ``data`` is known, its shape and pixel permutation."""
    section: Mapping[str, Any] = data or {}
    shape = record.get("shape") if isinstance(record, dict) else None
    classes = record.get("num_classes") if isinstance(record, dict) else None
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        and isinstance(classes, int)
        and not isinstance(classes, bool)
        and classes >= 2
    ):
        raise RunFolderError(
            f"{path}: expected 'shape' [C, H, W] of positive integers and "
            f"'num_classes' >= 2 (a damaged data record)."
        )
    if inputs is not None and math.prod(shape) != inputs:
        raise RunFolderError(
            f"{path}: images of shape {shape} ({math.prod(shape)} pixels), but the "
            f"first layer has {inputs} inputs (a damaged data record)."
        )
    if all(isinstance(section.get(k), int) for k in ("channels", "height", "width")):
        crop = 2 * section.get("crop", 0) if isinstance(section.get("crop", 0), int) else 0
        expected = [section["channels"], section["height"] - crop, section["width"] - crop]
        if shape != expected:
            raise RunFolderError(
                f"{path}: images of shape {shape}, but the config's data section says "
                f"{expected} (a damaged data record)."
            )
    if data is not None and "permuted" in record:
        wanted = bool(section.get("permute_pixels"))
        if record["permuted"] is not wanted:
            raise RunFolderError(
                f"{path}: 'permuted' is {record['permuted']!r}, but the config's "
                f"data.permute_pixels is {str(wanted).lower()} (a damaged data record)."
            )


# metrics.json holds each reading as one object: value, and where it has them its
# within-run spread (sd, low, high), null, the units it rests on (n), and the reason it
# has no value.
READING_FIELDS = {
    "value": "",
    "sd": "_sd",
    "low": "_low",
    "high": "_high",
    "null": "_null",
    "n": "_n",
    "reason": "_reason",
}


def round_document(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json as written: the round's figures, then "readings": each registered
    reading's columns (name, name_sd, ...) gathered into one object under its name."""
    document: dict[str, Any] = {}
    readings: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        split = _reading_field(key)
        if split is None:
            document[key] = finite_or_none(value)
        else:
            name, field = split
            readings.setdefault(name, {})[field] = finite_or_none(value)
    document["readings"] = readings
    return document


def _reading_field(key: str) -> tuple[str, str] | None:
    """(reading, field) of a registered reading's column, or None."""
    if key in READINGS:
        return key, "value"
    for field, suffix in READING_FIELDS.items():
        if suffix and key.endswith(suffix) and key.removesuffix(suffix) in READINGS:
            return key.removesuffix(suffix), field
    return None


def _reading_columns(nested: Any, fail: Any) -> dict[str, Any]:
    """The flat columns of metrics.json's "readings" object, checked."""
    if not isinstance(nested, dict):
        raise fail("'readings' must be an object of readings")
    columns: dict[str, Any] = {}
    for name, reading in nested.items():
        if not isinstance(reading, dict) or not set(reading) <= set(READING_FIELDS):
            raise fail(f"reading '{name}' must be an object with {', '.join(READING_FIELDS)}")
        for field, value in reading.items():
            if field == "reason" and not isinstance(value, str):
                raise fail(f"reading '{name}': 'reason' must be text, got {value!r}")
            if field == "n" and not (isinstance(value, int) and not isinstance(value, bool)):
                raise fail(f"reading '{name}': 'n' must be an integer, got {value!r}")
            columns[name + READING_FIELDS[field]] = value
    return columns
