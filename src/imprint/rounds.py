"""What the round loop records of one round: its metrics.json (accuracy and the
registered readings), its summary.csv rows, the stop rule it meets, its log line and
progress bar, the key and resume state of its in-round checkpoint, and the check that a nested
procedure's stored masks are still nested."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch

from imprint.analysis.locality import to_image_space
from imprint.analysis.uncertainty import format_spread
from imprint.checkpoint import CheckpointError, TrainingState
from imprint.config import Config, config_to_dict
from imprint.data import ImageData
from imprint.prune import (
    Masks,
    connected_units,
    layer_counts,
    layer_names,
)
from imprint.readings import (
    ReadingInputs,
    aggregate_over_seeds,
    compute_readings,
    shown_in,
)
from imprint.records import RoundMetrics
from imprint.runs import (
    RESULT_NEUTRAL_KEYS,
    RunFolder,
)
from imprint.safeio import RunFolderError
from imprint.train import RoundResult, train_replicas

__all__ = [
    "train_or_refuse",
    "damaged_remedy",
    "check_nested",
    "round_metrics",
    "summary_readings",
    "summary_row",
    "group_summary_row",
    "stop_reason",
    "checkpoint_key",
    "resume_state",
    "round_line",
    "round_progress",
]


def round_metrics(
    index: int,
    masks: Masks,
    result: RoundResult,
    data: ImageData,
    pruned: list[int],
) -> RoundMetrics:
    counts = layer_counts(masks)
    alive = sum(counts[layer][0] for layer in pruned)
    total = sum(counts[layer][1] for layer in pruned)
    metrics: dict[str, Any] = {
        "round": index,
        "density": alive / total if total else 1.0,
        "layer_density": [a / t for a, t in counts],
        "layer_alive": [a for a, _ in counts],
        "connected_units": connected_units(masks),
        "units": [masks[layer_names(layer)[0]].shape[0] for layer in range(len(counts))],
        "best_val_top1": result.best_top1,
        "best_step": result.best_step,
        "val_top5_at_best": result.top5_at_best,
        "best_val_top5": result.best_top5,
        "final_val_top1": result.final.top1,
        "final_val_loss": result.final.loss,
        "seconds": round(result.seconds, 3),
        "sparse_layers": list(result.sparse_layers),  # trained sparse (imprint.sparse)
    }
    if result.test_top1_at_best is not None:  # only reported: chosen on validation
        metrics["test_top1_at_best"] = result.test_top1_at_best
        metrics["final_test_top1"] = result.final_test_top1
    first = to_image_space(masks[layer_names(0)[0]], data.permutation)
    metrics.update(compute_readings(ReadingInputs(first, data.shape), "round"))
    return cast(RoundMetrics, metrics)  # checked when read back (check_round_metrics)


def summary_readings(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The summary.csv columns of the readings shown there: value, and sd with a spread."""
    row = {}
    for spec in shown_in("summary", "round"):
        row[spec.name] = metrics.get(spec.name)
        if spec.spread:
            row[f"{spec.name}_sd"] = metrics.get(f"{spec.name}_sd")
    return row


def summary_row(metrics: Mapping[str, Any], pruned: list[int]) -> dict[str, Any]:
    row = {
        "round": metrics["round"],
        "density": metrics["density"],
        "best_val_top1": metrics["best_val_top1"],
        "val_top5_at_best": metrics["val_top5_at_best"],
        **(
            {"test_top1_at_best": metrics["test_top1_at_best"]}
            if "test_top1_at_best" in metrics
            else {}
        ),
        **summary_readings(metrics),
    }
    for layer in pruned:
        row[f"density_l{layer}"] = metrics["layer_density"][layer]
        row[f"connected_l{layer}"] = metrics["connected_units"][layer]
    row["seconds"] = metrics["seconds"]
    return row


def group_summary_row(row: dict[str, Any], pruned: list[int]) -> dict[str, Any]:
    """A flat row of GROUP/summary.csv: per-layer lists become per-layer columns."""
    flat = {k: v for k, v in row.items() if not isinstance(v, list)}
    for layer in pruned:
        flat[f"density_l{layer}"] = row["layer_density"][layer]
        flat[f"connected_l{layer}"] = row["connected_units"][layer]
    return flat


def stop_reason(config: Config, metrics: Mapping[str, Any], pruned: list[int]) -> str | None:
    index = metrics["round"]
    if index >= config.prune.max_rounds:
        return f"reached prune.max_rounds ({config.prune.max_rounds})"
    if config.prune.target_density and metrics["density"] <= config.prune.target_density:
        return f"density {metrics['density']:.4g} reached prune.target_density"
    threshold = config.prune.min_connected_fraction
    if threshold and index > 0:
        for layer in pruned:
            fraction = metrics["connected_units"][layer] / metrics["units"][layer]
            if fraction <= threshold:
                return (
                    f"layer {layer} has {fraction:.1%} of its units connected "
                    f"(prune.min_connected_fraction = {threshold})"
                )
    return None


def checkpoint_key(
    config: Config, device: torch.device, index: int, seeds: Sequence[int] | None = None
) -> str:
    """What a checkpoint must have been written under to be resumed: the round, the
    device type, every config value that can change a result and, in a group, the
    seeds trained in this round."""
    document = config_to_dict(config)
    for dotted in RESULT_NEUTRAL_KEYS:
        section, _, name = dotted.partition(".")
        (document[section] if name else document).pop(name or section, None)
    parts: dict[str, Any] = {"round": index, "device": device.type, "config": document}
    if seeds is not None:
        parts["seeds"] = list(seeds)
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resume_state(
    folder: RunFolder, index: int, key: str, log: Callable[[str], None]
) -> TrainingState | None:
    """The checkpoint of round ``index`` to resume from, or None (the round starts at
    step 0). One of another round, or written under another config or device, is
    reported and left to be overwritten; a damaged one (unreadable, malformed) is
    refused, naming it and the remedy, so that nothing is overwritten unseen."""
    path = folder.checkpoint_path
    try:
        loaded = folder.load_checkpoint()
    except RunFolderError as error:
        raise RunFolderError(f"{error} {damaged_remedy(index)}") from None
    if loaded is None:
        return None
    tensors, metadata = loaded
    if metadata.get("round") != index:
        return None  # left by a round that completed before its removal
    if metadata.get("key") != key:
        log(
            f"{path} was written under another config or device (see config_changes.json); "
            f"round {index} starts from step 0."
        )
        return None
    try:
        state = TrainingState.from_parts(tensors, metadata)
    except ValueError as error:
        raise RunFolderError(f"{path}: {error}. {damaged_remedy(index)}") from None
    log(f"Resuming round {index} at step {state.step} from {path}.")
    return state


def damaged_remedy(index: int) -> str:
    """What to do about a damaged checkpoint of round ``index``."""
    return (
        f"A damaged checkpoint: delete it to restart round {index} from its start (the "
        "completed rounds are kept)."
    )


def round_line(saved: Sequence[Mapping[str, Any]], pruned: list[int]) -> str:
    """One log line per round: the seed's figures, or mean ± sd over the seeds."""
    first = saved[0]
    dens = " ".join(f"{first['layer_density'][layer]:.2%}" for layer in pruned)
    specs = shown_in("console", "round")
    mean = aggregate_over_seeds(saved, ["best_val_top1", *(spec.name for spec in specs)])
    top1 = format_spread(mean["best_val_top1"], mean["best_val_top1_sd"], digits=4)
    if len(saved) == 1:
        cells = [spec.format(first) for spec in specs]
    else:
        cells = [spec.format_mean(mean) for spec in specs]
    readings = "".join(f"  {spec.label} {cell}" for spec, cell in zip(specs, cells))
    seeds = f", {len(saved)} seeds" if len(saved) > 1 else ""
    return (
        f"round {first['round']:3d}  weights left {dens}  val. top-1 {top1}"
        f"{readings}  ({first['seconds']:.1f} s{seeds})"
    )


def round_progress(
    config: Config,
    index: int,
    masks: Masks,
    pruned: list[int],
    enabled: bool,
    replicas: int,
    first_step: int,
):
    if not enabled or not sys.stderr.isatty():
        # Not a terminal (a log file, CI): no redrawn bars; the line per round says it.
        return None, lambda: None
    from tqdm.auto import tqdm

    density = layer_counts(masks)
    alive = sum(density[layer][0] for layer in pruned)
    total = sum(density[layer][1] for layer in pruned) or 1
    seeds = f", {replicas} seeds" if replicas > 1 else ""
    bar = tqdm(
        total=config.train.steps,
        initial=first_step,
        desc=f"round {index} ({alive / total:.2%} left{seeds})",
        unit="step",
        leave=False,
        dynamic_ncols=True,
    )

    def on_eval(step: int, rows: list[dict[str, float]]) -> None:
        bar.update(step - bar.n)
        loss = sum(row["train_loss"] for row in rows) / len(rows)
        top1 = sum(row["val_top1"] for row in rows) / len(rows)
        bar.set_postfix(loss=f"{loss:.3f}", val_top1=f"{top1:.3f}")

    return on_eval, bar.close


def check_nested(folder: RunFolder, done: Sequence[int]) -> None:
    """Refuse to continue from masks that are not nested, round after round, as the
    procedure makes them: a changed mask file must not be trained from silently."""
    previous = None
    for index in done:
        masks = folder.round_masks(index)
        if previous is not None:
            for name, mask in masks.items():
                if bool((mask & ~previous[name]).any()):
                    raise RunFolderError(
                        f"{folder.round_file(index, 'mask')}: '{name}' keeps connections "
                        f"that round {index - 1} pruned; this procedure's masks are nested "
                        "(the file was changed)."
                    )
        previous = masks


def train_or_refuse(folder: RunFolder, index: int, *args: Any, **kwargs: Any) -> list[RoundResult]:
    """train_replicas, a checkpoint that does not fit the round refused by name."""
    try:
        return train_replicas(*args, **kwargs)
    except CheckpointError as error:
        raise RunFolderError(f"{folder.checkpoint_path}: {error} {damaged_remedy(index)}") from None
