"""The round loop: iterative magnitude pruning and its controls.

Round 0 trains the dense net and keeps its state at ``prune.rewind_step``. Each
later round r derives a mask, sets the starting weights, and retrains:

=========  ==========================================  ===============================
procedure  mask of round r                             starting weights
=========  ==========================================  ===============================
imp        magnitude-prune round r-1's final weights   rewind state x mask
finetune   magnitude-prune round r-1's final weights   round r-1's final weights x mask
oneshot    magnitude-prune round 0's final weights     rewind state x mask
           to round r's per-layer density at once
random     random, nested, at round r's density        rewind state x mask
reinit     the reference IMP run's round r mask        a fresh initialisation x mask
=========  ==========================================  ===============================

"Round r's density" is the reference run's per-layer density when
``prune.reference_run`` is set, else IMP's layer-wise schedule. The loop stops at
``prune.max_rounds``, at ``prune.target_density``, or once some pruned layer has at
most ``prune.min_connected_fraction`` of its units connected. Every completed round
is on disk, so calling :func:`run_imp` again on the same folder resumes; the round in
progress resumes from its last checkpoint (every ``train.checkpoint_every`` steps),
when that checkpoint was written by this round under the same config and device.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imprint.analysis.locality import pair_distance_locality, to_image_space
from imprint.config import Config, ConfigError, config_to_dict
from imprint.data import ImageData, load_dataset
from imprint.model import build_model
from imprint.prune import (
    Masks,
    apply_masks,
    connected_units,
    full_masks,
    layer_counts,
    layer_names,
    magnitude_prune,
    prune_to_counts,
    random_prune,
    schedule_counts,
)
from imprint.runs import RESULT_NEUTRAL_KEYS, RunFolder, RunFolderError
from imprint.train import CURVE_COLUMNS, RoundResult, TrainingState, train_round

__all__ = ["RunResult", "run_imp", "resolve_device", "derive_seed", "prunable_layers"]


@dataclass(frozen=True)
class RunResult:
    folder: Path
    rounds: list[dict[str, Any]]  # metrics of every completed round
    stop_reason: str
    best_round: int


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"The 'device' option must be auto, cpu or cuda. Got {device!r}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("The 'device' option is 'cuda' but no CUDA device is available.")
    return torch.device(device)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from a stream name, a seed and a round: independent streams."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def prunable_layers(config: Config) -> list[int]:
    n_layers = len(config.model.hidden) + 1
    excluded = {i % n_layers for i in config.prune.exclude_layers}
    return [layer for layer in range(n_layers) if layer not in excluded]


def _layer_rates(config: Config) -> dict[int, float]:
    rates = config.prune.layer_fractions
    return {
        layer: (rates[layer] if rates is not None else config.prune.fraction)
        for layer in prunable_layers(config)
        if rates is None or rates[layer] > 0
    }


class _Reference:
    """A finished run whose masks or per-layer counts a control procedure follows."""

    def __init__(self, path: str) -> None:
        self.folder = RunFolder(path)
        if not self.folder.config_path.exists():
            raise RunFolderError(
                f"prune.reference_run: {path} is not an imprint run folder (no config.toml)."
            )
        self.rounds = self.folder.completed_rounds()

    def has_round(self, index: int) -> bool:
        return index in self.rounds

    def masks(self, index: int) -> Masks:
        return self.folder.round_masks(index)

    def counts(self, index: int, layers: list[int]) -> dict[int, int]:
        masks = self.masks(index)
        return {layer: layer_counts(masks)[layer][0] for layer in layers}


def _round_metrics(
    index: int,
    masks: Masks,
    result: RoundResult,
    data: ImageData,
    pruned: list[int],
) -> dict[str, Any]:
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
    }
    first = to_image_space(masks[layer_names(0)[0]], data.permutation)
    locality = pair_distance_locality(first, data.shape)
    metrics["locality_ratio"] = locality.ratio
    return metrics


def _summary_row(metrics: dict[str, Any], pruned: list[int]) -> dict[str, Any]:
    row = {
        "round": metrics["round"],
        "density": metrics["density"],
        "best_val_top1": metrics["best_val_top1"],
        "val_top5_at_best": metrics["val_top5_at_best"],
        "locality_ratio": metrics["locality_ratio"],
    }
    for layer in pruned:
        row[f"density_l{layer}"] = metrics["layer_density"][layer]
        row[f"connected_l{layer}"] = metrics["connected_units"][layer]
    row["seconds"] = metrics["seconds"]
    return row


def _stop_reason(config: Config, metrics: dict[str, Any], pruned: list[int]) -> str | None:
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


def run_imp(
    config: Config,
    out_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    allow_changes: Sequence[str] = (),
) -> RunResult:
    """Run (or resume) the procedure of ``config`` into ``out_dir``; returns its summary.

    The folder is locked for the duration: a second process is refused at once. A
    resume may change the keys under ``allow_changes`` (e.g. "train.lr" after a
    divergence); any other difference from the folder's config is refused."""
    torch_device = resolve_device(device)
    folder = RunFolder(out_dir)
    reference = _Reference(config.prune.reference_run) if config.prune.reference_run else None
    with folder.lock():
        resumed = folder.prepare(config, allow_changes=allow_changes)
        return _run_locked(config, folder, torch_device, reference, resumed, progress, log)


def _run_locked(
    config: Config,
    folder: RunFolder,
    torch_device: torch.device,
    reference: _Reference | None,
    resumed: bool,
    progress: bool,
    log: Callable[[str], None],
) -> RunResult:
    done = folder.completed_rounds()
    pruned = prunable_layers(config)
    metrics_done = [folder.round_metrics(i) for i in done]
    if resumed:
        log(f"Resuming {folder.root}: {len(done)} round(s) already complete.")

    # A finished run: nothing to train, only the record to (re)write.
    if metrics_done:
        reason = _stop_reason(config, metrics_done[-1], pruned)
        if reason is None and reference is not None and not reference.has_round(len(done)):
            reason = "the reference run has no further round"
        if reason is not None:
            return _finish(folder, metrics_done, reason, pruned)

    started = time.perf_counter()
    data = load_dataset(config.data)
    log(
        f"Data: {config.data.name}, {data.x_train.shape[0]} train / {data.x_val.shape[0]} val "
        f"images of shape {data.shape}, {data.num_classes} classes "
        f"({time.perf_counter() - started:.1f} s). Device: {torch_device}."
    )
    if not folder.data_path.exists():
        folder.write_data_record(
            {
                "shape": list(data.shape),
                "num_classes": data.num_classes,
                "n_train": data.x_train.shape[0],
                "n_val": data.x_val.shape[0],
                "permuted": data.permutation is not None,
            }
        )
    data = data.to(torch_device)
    model = build_model(config.model, data.input_dim, data.num_classes, config.seeds.init)
    if folder.init_path.exists():
        init_state = folder.load_tensors(folder.init_path)
    else:
        init_state = {k: v.clone() for k, v in model.state_dict().items()}
        folder.save_tensors(folder.init_path, init_state)
    model.to(torch_device)

    rewind_state = folder.load_tensors(folder.rewind_path) if folder.rewind_path.exists() else None
    rates = _layer_rates(config)
    procedure = config.prune.procedure
    previous_masks = folder.round_masks(done[-1]) if done else full_masks(init_state)
    previous_final = folder.round_state(done[-1]) if done else None
    dense_final = folder.round_state(0) if done else None

    index = len(done)
    while True:
        # ------------------------------------------------ mask and start of round
        if index == 0:
            masks = full_masks(init_state)
            start = init_state
        else:
            masks = _next_masks(
                config,
                index,
                previous_masks,
                previous_final,
                dense_final,
                rates,
                reference,
                init_state,
            )
            if procedure == "finetune":
                start = apply_masks(previous_final, masks)
            elif procedure == "reinit":
                fresh = build_model(
                    config.model,
                    data.input_dim,
                    data.num_classes,
                    derive_seed("reinit", config.seeds.init, index),
                )
                start = apply_masks(fresh.state_dict(), masks)
            else:
                if rewind_state is None:
                    raise RunFolderError(f"{folder.rewind_path} is missing; cannot rewind.")
                start = apply_masks(rewind_state, masks)

        # ------------------------------------------------------------- training
        model.load_state_dict(start)
        device_masks = {name: mask.to(torch_device) for name, mask in masks.items()}
        gen = torch.Generator(device=torch_device).manual_seed(
            derive_seed("data", config.seeds.data, index)
        )
        key = _checkpoint_key(config, torch_device, index)
        resume = _checkpoint(folder, index, key, log)

        def save_checkpoint(state: TrainingState, key: str = key, index: int = index) -> None:
            folder.save_checkpoint(state.tensors, {"round": index, "key": key, **state.metadata()})

        on_eval, close = _progress(
            config, index, masks, pruned, progress, 0 if resume is None else resume.step
        )
        try:
            result = train_round(
                model,
                device_masks,
                data,
                config.train,
                gen,
                rewind_step=config.prune.rewind_step if index == 0 else None,
                on_eval=on_eval,
                on_checkpoint=save_checkpoint,
                resume=resume,
            )
        finally:
            close()
        if index == 0 and result.rewind_state is not None:
            rewind_state = result.rewind_state
            folder.save_tensors(folder.rewind_path, rewind_state)

        # --------------------------------------------------------------- saving
        final = apply_masks(result.final_state, masks)  # exact zeros, whatever happened
        metrics = _round_metrics(index, masks, result, data, pruned)
        folder.save_round(index, masks, start, final, result.curves, CURVE_COLUMNS, metrics)
        metrics_done.append(metrics)
        folder.write_summary([_summary_row(m, pruned) for m in metrics_done])
        folder.remove_checkpoint()  # after metrics.json: the round is complete
        log(_round_line(metrics, pruned))

        reason = _stop_reason(config, metrics, pruned)
        if reason is None and reference is not None and not reference.has_round(index + 1):
            reason = "the reference run has no further round"
        if reason is not None:
            return _finish(folder, metrics_done, reason, pruned)
        previous_masks, previous_final = masks, final
        if index == 0:
            dense_final = final
        index += 1


def _next_masks(
    config: Config,
    index: int,
    previous_masks: Masks,
    previous_final: dict[str, torch.Tensor] | None,
    dense_final: dict[str, torch.Tensor] | None,
    rates: dict[int, float],
    reference: _Reference | None,
    init_state: dict[str, torch.Tensor],
) -> Masks:
    procedure = config.prune.procedure
    layers = sorted(rates)
    if procedure == "reinit":
        assert reference is not None  # guaranteed by the config validation
        return reference.masks(index)
    if procedure in ("imp", "finetune"):
        assert previous_final is not None
        return magnitude_prune(previous_final, previous_masks, rates, config.prune.scope)
    totals = [total for _, total in layer_counts(previous_masks)]
    if reference is not None:
        keep = reference.counts(index, layers)
    elif config.prune.scope == "layer":
        keep = schedule_counts(totals, rates, index)
    else:
        keep = None
    if procedure == "oneshot":
        assert dense_final is not None
        dense = full_masks(init_state)
        if keep is None:  # global scope: one threshold at IMP's overall density
            rate = config.prune.fraction
            return magnitude_prune(dense_final, dense, 1 - (1 - rate) ** index, "global")
        return prune_to_counts(dense_final, dense, keep)
    # random: nested random masks, at the reference's or the schedule's counts
    gen = torch.Generator().manual_seed(derive_seed("prune", config.seeds.prune, index))
    if keep is None:
        return random_prune(previous_masks, rates, gen)
    alive = {layer: layer_counts(previous_masks)[layer][0] for layer in layers}
    fractions = {
        layer: (alive[layer] - keep[layer]) / alive[layer] if alive[layer] else 0.0
        for layer in layers
    }
    return random_prune(previous_masks, fractions, gen)


def _checkpoint_key(config: Config, device: torch.device, index: int) -> str:
    """What a checkpoint must have been written under to be resumed: the round, the
    device type and every config value that can change a result."""
    document = config_to_dict(config)
    for dotted in RESULT_NEUTRAL_KEYS:
        section, _, name = dotted.partition(".")
        document[section].pop(name, None)
    text = json.dumps({"round": index, "device": device.type, "config": document}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _checkpoint(
    folder: RunFolder, index: int, key: str, log: Callable[[str], None]
) -> TrainingState | None:
    """The checkpoint of round ``index`` to resume from, or None (the round starts at
    step 0). A checkpoint that is unreadable, of another round, or written under
    another config or device is reported and left to be overwritten."""
    path = folder.checkpoint_path
    try:
        loaded = folder.load_checkpoint()
    except RunFolderError as error:
        log(f"{error} Round {index} starts from step 0.")
        return None
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
        log(f"{path}: {error}; round {index} starts from step 0.")
        return None
    log(f"Resuming round {index} at step {state.step} from {path}.")
    return state


def _round_line(metrics: dict[str, Any], pruned: list[int]) -> str:
    dens = " ".join(f"{metrics['layer_density'][layer]:.2%}" for layer in pruned)
    return (
        f"round {metrics['round']:3d}  weights left {dens}  best top-1 "
        f"{metrics['best_val_top1']:.4f}  locality {metrics['locality_ratio']:.2f}  "
        f"({metrics['seconds']:.1f} s)"
    )


def _progress(
    config: Config, index: int, masks: Masks, pruned: list[int], enabled: bool, first_step: int
):
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    density = layer_counts(masks)
    alive = sum(density[layer][0] for layer in pruned)
    total = sum(density[layer][1] for layer in pruned) or 1
    bar = tqdm(
        total=config.train.steps,
        initial=first_step,
        desc=f"round {index} ({alive / total:.2%} left)",
        unit="step",
        leave=False,
        dynamic_ncols=True,
    )

    def on_eval(step: int, row: dict[str, float]) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_top1=f"{row['val_top1']:.3f}")

    return on_eval, bar.close


def _finish(
    folder: RunFolder, metrics: list[dict[str, Any]], reason: str, pruned: list[int]
) -> RunResult:
    best = max(metrics, key=lambda m: m["best_val_top1"])
    folder.remove_checkpoint()  # one left by a kill just after the last round
    folder.write_summary([_summary_row(m, pruned) for m in metrics])
    folder.write_run_record(
        {
            "stop_reason": reason,
            "rounds": len(metrics),
            "best_round": best["round"],
            "best_val_top1": best["best_val_top1"],
            "best_density": best["density"],
        }
    )
    return RunResult(folder.root, metrics, reason, best["round"])
