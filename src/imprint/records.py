"""Typed records of a run folder: a round's metrics.json (:class:`RoundMetrics`), checked
when read (:func:`check_round_metrics`)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, TypedDict

from imprint.readings import is_reading_column

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

from imprint.safeio import RunFolderError

__all__ = ["finite_or_none", "RoundMetrics", "check_round_metrics"]


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
        if not _number(value) or not 0 <= value <= 1:
            raise fail(f"'{key}' must be a number in [0, 1], got {value!r}")
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
    for key, value in list(record.items()):
        if is_reading_column(key) and not key.endswith("_reason"):
            if isinstance(value, float) and math.isnan(value):
                record[key] = None  # written as NaN before readings were stored as null
            elif value is not None and not _number(value):
                raise fail(f"'{key}' must be a number or null, got {value!r}")
    return record  # type: ignore[return-value]


def finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
