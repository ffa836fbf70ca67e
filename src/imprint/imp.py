"""The round loop: iterative magnitude pruning and its controls.

Round 0 trains the dense net and keeps its state at ``prune.rewind_step``. Each
later round r derives a mask and the starting weights with the procedure's rules
(:mod:`imprint.procedures`: IMP prunes 30% of round r-1's final weights by magnitude
and rewinds; the controls and the other criteria make round r's mask at round r's
density and start from the rewind state, the initial weights or elsewhere), and
retrains.

"Round r's density" is the reference run's per-layer density when
``prune.reference_run`` is set, else IMP's layer-wise schedule. The loop stops at
``prune.max_rounds``, at ``prune.target_density``, or once some pruned layer has at
most ``prune.min_connected_fraction`` of its units connected. Every completed round
is on disk, so calling :func:`run_imp` again on the same folder resumes; the round in
progress resumes from its last checkpoint (every ``train.checkpoint_every`` steps),
when that checkpoint was written by this round under the same config and device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imprint.checkpoint import CURVE_COLUMNS, TrainingState
from imprint.config import Config, ConfigError, SeedConfig
from imprint.data import ImageData, load_dataset
from imprint.model import build_model
from imprint.procedures import RoundInputs, get_procedure
from imprint.procedures.base import Interval
from imprint.prune import (
    Masks,
    apply_masks,
    full_masks,
    layer_counts,
)
from imprint.records import RoundMetrics
from imprint.results import STUDY_TOLERANCE, ReferenceRun, study_round, summarize_seeds
from imprint.rounds import (
    check_nested,
    checkpoint_key,
    group_summary_row,
    resume_state,
    round_line,
    round_metrics,
    round_progress,
    stop_reason,
    summary_row,
    train_or_refuse,
)
from imprint.runs import (
    GROUP_FILE,
    RunFolder,
    is_group,
    member_dir,
)
from imprint.safeio import RunFolderError, write_text
from imprint.sparse import engine_record
from imprint.tracking import open_tracking
from imprint.train import RoundResult, available_bytes, training_bytes

__all__ = [
    "RunResult",
    "GroupResult",
    "run_imp",
    "run_group",
    "run_experiment",
    "member_config",
    "resolve_device",
    "derive_seed",
    "prunable_layers",
]


@dataclass(frozen=True)
class RunResult:
    folder: Path
    rounds: list[RoundMetrics]  # metrics of every completed round
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


def _check_same_data(stored: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse to resume on other data than the run started with: the set sizes and,
    where data.json records them, the splits (a held-out validation set drawn
    differently would be trained on, silently)."""
    keys = [k for k in ("n_train", "n_val", "n_test", "splits") if k in stored]
    changed = [k for k in keys if stored[k] != now[k]]
    if changed:
        detail = "; ".join(f"{k}: {stored[k]!r} then, {now[k]!r} now" for k in changed)
        raise RunFolderError(
            f"{path}: the data differ from those this run started with ({detail}). Resume "
            "with the data and data options it was started with, or start a new --out folder."
        )


def member_config(config: Config, seed: int) -> Config:
    """The config of seed ``seed`` of a group: init = data = prune = seed, no group."""
    return config.model_copy(update={"seeds": SeedConfig(init=seed, data=seed, prune=seed)})


def run_experiment(
    config: Config,
    out_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    allow_changes: Sequence[str] = (),
) -> RunResult | GroupResult:
    """:func:`run_group` when ``config.seeds.group`` lists seeds, else :func:`run_imp`."""
    run = run_group if config.seeds.group else run_imp
    return run(config, out_dir, device, progress, log, allow_changes)


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
    if config.seeds.group:
        raise ConfigError(
            "seeds.group lists seeds to run together: use run_group (imprint run --seeds)."
        )
    torch_device = resolve_device(device)
    config = resolve_data_root(config)
    folder = RunFolder(out_dir)
    reference = ReferenceRun(config.prune.reference_run) if config.prune.reference_run else None
    with folder.lock():
        resumed = folder.prepare(config, engine_record(config, torch_device), allow_changes)
        member = _Member(config, folder, reference)
        tracking = open_tracking(config, folder.root, [folder.root], log)
        member.track = functools.partial(tracking.round, 0)
        if resumed:
            log(f"Resuming {folder.root}: {len(member.done)} round(s) already complete.")
        with _discard_failed_start(folder, resumed), tracking:
            _train_members(config, [member], folder, torch_device, progress, log, group=False)
        return member.finish()


@dataclass(frozen=True)
class GroupResult:
    """Seeds run together: one ordinary run per seed, in ``folder/seed_<s>``."""

    folder: Path
    seeds: list[int]
    runs: list[RunResult]

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """Per round, mean and sd over the seeds that reached it (:func:`summarize_seeds`)."""
        return summarize_seeds([run.rounds for run in self.runs])


def run_group(
    config: Config,
    out_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    allow_changes: Sequence[str] = (),
) -> GroupResult:
    """Run (or resume) the seeds of ``config.seeds.group`` together, as replicas of one
    batched model (:func:`imprint.train.train_replicas`), into ``out_dir``.

    ``out_dir`` holds the group's config, group.json, summary.csv (mean and sd over
    seeds per round) and the round in progress's checkpoint; seed s is an ordinary run
    folder ``out_dir/seed_<s>`` with init = data = prune = s, which analyze and report
    read as any run. Every seed gets IMP's rounds in lockstep; a seed that meets a stop
    rule leaves the batch. Resume, checkpoints and locks work as for :func:`run_imp`."""
    seeds = list(config.seeds.group)
    if not seeds:
        raise ConfigError("run_group needs seeds.group to list at least one seed.")
    torch_device = resolve_device(device)
    config = resolve_data_root(config)
    group = RunFolder(out_dir)
    with contextlib.ExitStack() as stack:
        stack.enter_context(group.lock())
        resumed = group.prepare(config, engine_record(config, torch_device), allow_changes)
        if not is_group(group.root):
            write_text(group.root / GROUP_FILE, json.dumps({"seeds": seeds}, indent=2) + "\n")
        members = []
        for seed in seeds:
            seed_config = member_config(config, seed)
            folder = RunFolder(member_dir(group.root, seed))
            stack.enter_context(folder.lock())
            folder.prepare(seed_config, engine_record(config, torch_device), allow_changes)
            reference = _reference_for(config, seed)
            members.append(_Member(seed_config, folder, reference))
        folders = [m.folder.root for m in members]
        tracking = stack.enter_context(open_tracking(config, group.root, folders, log))
        for position, member in enumerate(members):
            member.track = functools.partial(tracking.round, position)
        if resumed:
            rounds = ", ".join(f"seed {s}: {len(m.done)}" for s, m in zip(seeds, members))
            log(f"Resuming {group.root}: completed rounds {rounds}.")
        with _discard_failed_start(group, resumed):
            _train_members(config, members, group, torch_device, progress, log, group=True)
        result = GroupResult(group.root, seeds, [m.finish() for m in members])
        pruned = prunable_layers(config)
        group.write_summary([group_summary_row(row, pruned) for row in result.rounds])
        return result


def _check_memory(config: Config, data: ImageData, replicas: int, device: torch.device) -> None:
    """Refuse, before building anything, a model that cannot fit: one line with the
    estimate, instead of minutes of allocation and an out-of-memory kill."""
    dims = [data.input_dim, *config.model.hidden, data.num_classes]
    # The evaluation goes in chunks of at most eval_batch_size of the larger held-out set.
    held_out = max(data.x_val.shape[0], 0 if data.x_test is None else data.x_test.shape[0])
    eval_batch = min(config.train.eval_batch_size, held_out)
    need = training_bytes(dims, replicas, config.train.batch_size, eval_batch)
    have = available_bytes(device)
    if have is not None and need > have:
        raise ConfigError(
            f"model.hidden = {list(config.model.hidden)} with {data.input_dim} inputs"
            f"{f' and {replicas} seeds' if replicas > 1 else ''}: training needs about "
            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB available on "
            f"{device.type}. Use narrower layers, a smaller train.batch_size or "
            "train.eval_batch_size, or fewer seeds at once."
        )


@contextlib.contextmanager
def _discard_failed_start(folder: RunFolder, resumed: bool):
    """A first start that fails before any round or checkpoint exists (missing data,
    an option the device refuses, ...) removes what it wrote, so that the corrected
    command starts afresh instead of being refused as "a different config"."""
    try:
        yield
    except Exception:
        if not resumed:
            folder.discard_start()
        raise


def resolve_data_root(config: Config) -> Config:
    """``config`` with a relative data.root made absolute (against the working
    directory), so that the run folder records which files it read and a resume from
    another directory cannot load other data."""
    root = getattr(config.data, "root", None)
    if root is None or Path(root).is_absolute():
        return config
    data = config.data.model_copy(update={"root": str(Path(root).resolve())})
    return config.model_copy(update={"data": data})


def _reference_for(config: Config, seed: int) -> ReferenceRun | None:
    """A control in a group follows the same seed of a reference group."""
    path = config.prune.reference_run
    if path is None:
        return None
    return ReferenceRun(str(member_dir(path, seed)) if is_group(path) else path)


class _Member:
    """One run folder of a (possibly one-seed) group and the state its round loop
    carries from round to round."""

    def __init__(self, config: Config, folder: RunFolder, reference: ReferenceRun | None) -> None:
        self.config, self.folder, self.reference = config, folder, reference
        self.track: Callable[..., None] | None = None  # imprint.tracking's round
        self.pruned = prunable_layers(config)
        self.done = folder.completed_rounds()
        self.metrics = [folder.round_metrics(i) for i in self.done]
        self.stop_reason = self._stop_after(self.metrics[-1]) if self.metrics else None

    def _stop_after(self, metrics: Mapping[str, Any]) -> str | None:
        reason = stop_reason(self.config, metrics, self.pruned)
        next_round = metrics["round"] + 1
        if (
            reason is None
            and self.reference is not None
            and not self.reference.has_round(next_round)
        ):
            reason = "the reference run has no further round"
        return reason

    def takes_part(self, index: int) -> bool:
        """Whether round ``index`` is (or was) trained for this seed: it has completed
        it (a group killed between two seeds' saves retrains it, not saving it again,
        so that the others' batched steps are the same), or has not stopped before."""
        return len(self.done) > index or (self.stop_reason is None and len(self.done) == index)

    def setup(self, data: ImageData, device: torch.device) -> None:
        """The model, initial and rewind states, and the previous round's masks."""
        folder, config = self.folder, self.config
        record = {
            "shape": list(data.shape),
            "num_classes": data.num_classes,
            "n_train": data.x_train.shape[0],
            "n_val": data.x_val.shape[0],
            "n_test": 0 if data.x_test is None else data.x_test.shape[0],
            "permuted": data.permutation is not None,
            "splits": data.splits,
        }
        if not folder.data_path.exists():
            folder.write_data_record(record)
        else:
            _check_same_data(folder.read_data_record(), record, folder.data_path)
        if data.permutation is not None and not folder.permutation_path.exists():
            folder.save_permutation(data.permutation)
        self.model = build_model(config.model, data.input_dim, data.num_classes, config.seeds.init)
        if self.reference is not None:
            self.reference.check_fits(self.model.state_dict())
        if folder.init_path.exists():
            self.init_state = folder.load_tensors(folder.init_path)
        else:
            self.init_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            folder.save_tensors(folder.init_path, self.init_state)
        self.model.to(device)
        self.rewind_state = (
            folder.load_tensors(folder.rewind_path) if folder.rewind_path.exists() else None
        )
        done = self.done
        if get_procedure(config.prune.procedure).nested:
            check_nested(folder, done)
        self.previous_masks = folder.round_masks(done[-1]) if done else full_masks(self.init_state)
        self.previous_final = folder.round_state(done[-1]) if done else None
        self.dense_final = folder.round_state(0) if done else None

    def round_start(self, index: int, data: ImageData) -> tuple[Masks, dict[str, torch.Tensor]]:
        """Round ``index``'s masks and starting weights."""
        config, folder = self.config, self.folder
        self.round_target: dict[int, int] | int | None = None  # where gradual pruning ends
        if index < len(self.done):  # already saved: retrained only for the batch's sake
            return folder.round_masks(index), folder.round_state(index, "start")
        if index == 0:
            return full_masks(self.init_state), self.init_state
        procedure = get_procedure(config.prune.procedure)

        def fresh_state(seed: int) -> dict[str, torch.Tensor]:
            return build_model(config.model, data.input_dim, data.num_classes, seed).state_dict()

        inputs = RoundInputs(
            config=config,
            index=index,
            previous_masks=self.previous_masks,
            previous_final=self.previous_final,
            dense_final=self.dense_final,
            init_state=self.init_state,
            rewind_state=self.rewind_state,
            reference=self.reference,
            data=data,
            rates=_layer_rates(config),
            derive_seed=derive_seed,
            build_state=fresh_state,
            options=procedure.parse_options(config.prune.options),
        )
        masks = procedure.mask(inputs)
        if procedure.during is not None:
            self.round_target = inputs.target()
        try:
            return masks, procedure.start(inputs, masks)
        except ValueError as error:
            raise RunFolderError(f"{folder.root}: round {index}: {error}") from None

    def complete(
        self,
        index: int,
        masks: Masks,
        start: dict[str, torch.Tensor],
        result: RoundResult,
        data: ImageData,
    ) -> RoundMetrics | None:
        """Save round ``index``; returns its metrics (None if it was saved before)."""
        folder = self.folder
        if index < len(self.done):
            return None
        if index == 0 and result.rewind_state is not None:
            self.rewind_state = result.rewind_state
            folder.save_tensors(folder.rewind_path, self.rewind_state)
        final = apply_masks(result.final_state, masks)  # exact zeros, whatever happened
        metrics = round_metrics(index, masks, result, data, self.pruned)
        columns = list(result.curves[0]) if result.curves else list(CURVE_COLUMNS)
        folder.save_round(index, masks, start, final, result.curves, columns, metrics)
        self.done.append(index)
        self.metrics.append(metrics)
        folder.write_summary([summary_row(m, self.pruned) for m in self.metrics])
        self.previous_masks, self.previous_final = masks, final
        if index == 0:
            self.dense_final = final
        self.stop_reason = self._stop_after(metrics)
        if self.track is not None:
            self.track(folder, metrics, result.curves, masks)
        return metrics

    def finish(self) -> RunResult:
        reason = self.stop_reason or "stopped before its stop rule"
        return _finish(self.folder, self.metrics, reason, self.pruned)


def _train_members(
    config: Config,
    members: list[_Member],
    checkpoints: RunFolder,
    device: torch.device,
    progress: bool,
    log: Callable[[str], None],
    group: bool,
) -> None:
    """The round loop of one run (``group`` False) or of seeds run together: each round,
    every seed that takes part trains as one replica of a batched model. The round in
    progress is checkpointed in ``checkpoints`` (the run's or the group's folder)."""
    if all(m.stop_reason is not None for m in members):
        return  # a finished run: nothing to train, no data to load
    started = time.perf_counter()
    data = load_dataset(config.data)
    log(
        f"Data: {config.data.name}, {data.x_train.shape[0]} train / {data.x_val.shape[0]} val "
        f"images of shape {data.shape}, {data.num_classes} classes "
        f"({time.perf_counter() - started:.1f} s). Device: {device}."
    )
    _check_memory(config, data, len(members), device)
    data = data.to(device)
    for member in members:
        member.setup(data, device)
    while True:
        pending = [m for m in members if m.stop_reason is None]
        if not pending:
            return
        index = min(len(m.done) for m in pending)
        team = [m for m in members if m.takes_part(index)]
        starts = [m.round_start(index, data) for m in team]
        for member, (_, start) in zip(team, starts):
            member.model.load_state_dict(start)
        device_masks = [
            {name: mask.to(device) for name, mask in masks.items()} for masks, _ in starts
        ]
        gens = [
            torch.Generator(device=device).manual_seed(
                derive_seed("data", m.config.seeds.data, index)
            )
            for m in team
        ]
        seeds = [m.config.seeds.init for m in team] if group else None
        key = checkpoint_key(config, device, index, seeds)
        resume = resume_state(checkpoints, index, key, log)

        def save_checkpoint(state: TrainingState, key: str = key, index: int = index) -> None:
            checkpoints.save_checkpoint(
                state.tensors, {"round": index, "key": key, **state.metadata()}
            )

        on_eval, close = round_progress(
            config,
            index,
            starts[0][0],
            team[0].pruned,
            progress,
            len(team),
            0 if resume is None else resume.step,
        )
        procedure = get_procedure(config.prune.procedure)
        during = _during(team, starts, procedure, config) if index > 0 else None
        try:
            results = train_or_refuse(
                checkpoints,
                index,
                [m.model for m in team],
                device_masks,
                data,
                config.train,
                gens,
                rewind_step=config.prune.rewind_step if index == 0 else None,
                on_eval=on_eval,
                on_checkpoint=save_checkpoint,
                resume=resume,
                on_interval=during,
            )
            final_masks = [
                masks if result.masks is None else result.masks
                for (masks, _), result in zip(starts, results)
            ]
            if procedure.merit == "last" and index > 0:
                results = [_merit_at_last(result) for result in results]
        finally:
            close()
        saved = []
        for member, masks, (_, start), result in zip(team, final_masks, starts, results):
            metrics = member.complete(index, masks, start, result, data)
            if metrics is not None:
                saved.append(metrics)
        checkpoints.remove_checkpoint()  # after every metrics.json: the round is complete
        if saved:
            log(round_line(saved, team[0].pruned))


def _during(
    team: list[_Member],
    starts: list[tuple[Masks, dict[str, torch.Tensor]]],
    procedure: Any,
    config: Config,
) -> Callable[[int, int, Sequence[Any], list[Masks]], list[Masks]] | None:
    """The training loop's hook for a procedure that prunes during training (its
    ``during`` rule, for every seed of the batch), or None."""
    if procedure.during is None:
        return None
    layers = sorted(_layer_rates(config))
    firsts: list[Any] = []
    for member, (masks, _) in zip(team, starts):
        counts = layer_counts(masks)
        alive = {layer: counts[layer][0] for layer in layers}
        firsts.append(sum(alive.values()) if isinstance(member.round_target, int) else alive)

    def on_interval(k: int, n: int, models: Sequence[Any], masks: list[Masks]) -> list[Masks]:
        out = []
        for member, model, first, current in zip(team, models, firsts, masks):
            if member.round_target is None:  # a seed that completed this round already
                out.append(current)
                continue
            state = {name: value.cpu() for name, value in model.state_dict().items()}
            interval = Interval(k, n, state, current, first, member.round_target, layers)
            out.append(procedure.during(interval))
        return out

    return on_interval


def _merit_at_last(result: RoundResult) -> RoundResult:
    """The round's figure of merit at its last validation point (Procedure.merit)."""
    last = result.curves[-1]
    return dataclasses.replace(
        result,
        best_top1=last["val_top1"],
        best_step=int(last["step"]),
        top5_at_best=last["val_top5"],
        best_top5=last["val_top5"],
        test_top1_at_best=last.get("test_top1"),
    )


def _finish(
    folder: RunFolder, metrics: list[RoundMetrics], reason: str, pruned: list[int]
) -> RunResult:
    best = max(metrics, key=lambda m: m["best_val_top1"])
    study = study_round(metrics)
    folder.remove_checkpoint()  # one left by a kill just after the last round
    folder.write_summary([summary_row(m, pruned) for m in metrics])
    folder.write_run_record(
        {
            "stop_reason": reason,
            "rounds": len(metrics),
            "best_round": best["round"],
            "best_val_top1": best["best_val_top1"],
            "best_density": best["density"],
            "study_round": study,
            "study_tolerance": STUDY_TOLERANCE,
            "study_density": metrics[study]["density"],
        }
    )
    return RunResult(folder.root, metrics, reason, best["round"])
