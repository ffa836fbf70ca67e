"""One round of training: plain SGD on batches drawn with replacement, with masks held.

The step itself is :func:`imprint.engine.train_step` (forward and backward by hand,
no autograd) and :class:`imprint.engine.MaskedSGD` (``torch.optim.SGD``'s update with
the pruned entries' gradient masked, so they stay exactly zero with momentum or
weight decay on). The data stay on their device in their stored dtype and
batches are drawn there from seeded generators; losses accumulate on the device, so
the step loop touches the host only at validation points.

:func:`train_replicas` trains R replicas of one architecture (different initial
weights, masks and batch streams) as one batched model; :func:`train_round` is the
single-run case, R = 1, through the same code, so replica r gives what a separate
run with replica r's seeds gives (bitwise where the batched matmul kernels round as
the single ones do, as on the shipped configs; otherwise to float rounding).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from imprint.checkpoint import (
    CheckpointError,
    TrainingState,
    capture,
    restore,
)
from imprint.config import TrainConfig
from imprint.data import ImageData
from imprint.engine import (
    ReplicaFCN,
    StepResult,
    eval_logits,
    precision_context,
    retain_freed_memory,
    step_threads,
    train_step,
)
from imprint.model import FCN
from imprint.prune import Masks
from imprint.reference import random_shifts, shift_images
from imprint.sparse import RoundEngine

__all__ = [
    "TrainingDiverged",
    "RoundResult",
    "Evaluation",
    "evaluate",
    "train_round",
    "train_replicas",
    "sample_batch",
    "compiled_train_step",
    "state_copy",
    "TrainingState",
    "training_bytes",
    "available_bytes",
]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Evaluation:
    loss: float
    top1: float
    top5: float


@dataclass
class RoundResult:
    curves: list[dict[str, float]]  # one row per validation point, CURVE_COLUMNS
    best_top1: float
    best_step: int
    top5_at_best: float
    best_top5: float
    final: Evaluation
    seconds: float
    final_state: dict[str, torch.Tensor] = field(repr=False)  # on the CPU
    rewind_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    masks: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # if changed
    # Test top-1 at the step of best validation top-1, and at the round's end (None
    # without a test set): reported, never used to choose.
    test_top1_at_best: float | None = None
    final_test_top1: float | None = None
    # The layers trained sparse (:mod:`imprint.sparse`; [] on the dense engine).
    sparse_layers: list[int] = field(default_factory=list)


def training_bytes(dims: Sequence[int], replicas: int, batch: int, eval_batch: int) -> int:
    """A generous estimate of the memory one round of ``replicas`` FCNs of layer widths
    ``dims`` takes: per parameter the stacked weights, gradients, momentum, masks and
    the start, final, rewind and checkpoint copies (10 float32 words); per step the
    activations and their gradients (8 words per unit and example); the evaluation
    chunk's activations (3 words per unit of the widest layer)."""
    params = sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    words = replicas * (10 * params + 8 * batch * sum(dims) + 3 * eval_batch * max(dims))
    return 4 * words


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a new allocation on ``device`` (None when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    from imprint.machine import host_available_bytes

    return host_available_bytes()


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state (parameters and BN running averages)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


@torch.no_grad()
def _evaluate_net(
    net: ReplicaFCN,
    data: ImageData,
    batch_size: int,
    split: str = "val",
    logits_of: Callable[..., torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed loss, top-1 and top-k hits of every replica on a split: (R,) float each,
    left on the data's device (the caller synchronises once)."""
    x_all, y_all = {
        "val": (data.x_val, data.y_val),
        "train": (data.x_train, data.y_train),
        "test": (data.x_test, data.y_test),
    }[split]
    assert x_all is not None and y_all is not None, f"the data has no {split} set"
    device = x_all.device
    k = min(5, data.num_classes)
    loss = torch.zeros(net.replicas, device=device)
    top1 = torch.zeros(net.replicas, device=device)
    topk = torch.zeros(net.replicas, device=device)
    for start in range(0, x_all.shape[0], batch_size):
        x = x_all[start : start + batch_size]  # (b, D) stored dtype
        y = y_all[start : start + batch_size]  # (b,)
        if logits_of is None:
            logits = eval_logits(net, x, data.offset, data.scale)  # (R, b, classes)
        else:  # a round's engine: the sparse layers' products on their patterns
            logits = logits_of(x, data.offset, data.scale)
        logp = torch.log_softmax(logits, dim=2)
        target = y.expand(net.replicas, -1).unsqueeze(2)  # (R, b, 1)
        loss -= logp.gather(2, target).sum(dim=(1, 2))
        best = logits.topk(k, dim=2).indices  # (R, b, k)
        top1 += (best[:, :, 0] == y).sum(dim=1)
        topk += (best == target).any(dim=2).sum(dim=1)
    return loss, top1, topk


def evaluate(
    model: FCN, data: ImageData, batch_size: int = 10_000, split: str = "val"
) -> Evaluation:
    """Loss, top-1 and top-5 accuracy in evaluation mode (BN running averages)."""
    loss, top1, topk = _evaluate_net(ReplicaFCN([model]), data, batch_size, split)
    n = (data.x_val if split == "val" else data.x_train).shape[0]
    return Evaluation(loss.item() / n, top1.item() / n, topk.item() / n)


@functools.cache
def compiled_train_step() -> Callable[..., StepResult]:
    """``engine.train_step`` through ``torch.compile`` (one wrapper per process; each
    new set of shapes compiles once, the first call taking 10-30 s)."""
    return torch.compile(train_step, dynamic=False)


def sample_batch(
    data: ImageData, gens: Sequence[torch.Generator], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch per generator, drawn with replacement on the data's device.

    Returns the stored images (R, B, D) (uint8 or float, not normalised: the step
    folds the normalisation into the first BN; moved by up to data.shift pixels when
    set, as :func:`imprint.reference.shift_images`) and the labels (R, B).
    """
    n_train, device = data.x_train.shape[0], data.x_train.device
    idx = torch.stack(  # (R, B): each replica's own stream
        [torch.randint(n_train, (batch_size,), generator=g, device=device) for g in gens]
    )
    # index_select on the flat indices: a plain gather of rows, several times faster
    # than advanced indexing with an (R, B) index.
    flat = idx.view(-1)
    x = data.x_train.index_select(0, flat)
    if data.shift:  # each replica's shifts from its own stream, after its indices
        shifts = torch.cat([random_shifts(g, batch_size, data.shift, device) for g in gens])
        x = shift_images(x, shifts, data.shape, data.shift)
    return x.view(len(gens), batch_size, -1), data.y_train.index_select(0, flat).view(idx.shape)


def train_round(
    model: FCN,
    masks: Masks,
    data: ImageData,
    config: TrainConfig,
    gen: torch.Generator,
    *,
    rewind_step: int | None = None,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
    resume: TrainingState | None = None,
) -> RoundResult:
    """Train ``model`` in place for ``config.steps`` steps under ``masks``.

    ``model``, ``masks`` and ``data`` must be on one device, and ``gen`` a generator
    on that device. Masked weights are set to zero first (they normally are already)
    and stay exactly zero. When ``rewind_step`` is given, the state after that many
    steps is returned too. Checkpoints and resuming: see :func:`train_replicas`.
    """
    forward = None if on_eval is None else (lambda step, rows: on_eval(step, rows[0]))
    return train_replicas(
        [model],
        [masks],
        data,
        config,
        [gen],
        rewind_step=rewind_step,
        on_eval=forward,
        on_checkpoint=on_checkpoint,
        resume=resume,
    )[0]


def train_replicas(
    models: Sequence[FCN],
    masks: Sequence[Masks],
    data: ImageData,
    config: TrainConfig,
    gens: Sequence[torch.Generator],
    *,
    rewind_step: int | None = None,
    on_eval: Callable[[int, list[dict[str, float]]], None] | None = None,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
    resume: TrainingState | None = None,
    on_interval: Callable[[int, int, Sequence[FCN], list[Masks]], Sequence[Masks]] | None = None,
) -> list[RoundResult]:
    """Train R models of one architecture in place, as one batched model.

    Replica r trains ``models[r]`` under ``masks[r]`` on batches drawn from
    ``gens[r]``, exactly as :func:`train_round` would train it alone (the same code
    with R = 1), but every step of all replicas is one set of batched matmuls, so
    small networks fill a large device. Everything must be on the data's device;
    masked weights are set to zero first. Returns one result per replica (their
    ``seconds`` is the wall time of the whole batched round); ``on_eval(step, rows)``
    gets one curve row per replica at each validation point.

    Every ``config.checkpoint_every`` steps (0: never) ``on_checkpoint`` gets a
    :class:`TrainingState`; passing it back as ``resume``, with the round's starting
    models, masks and fresh generators, continues the round from that step and ends
    exactly where the uninterrupted round would (bitwise: the same arithmetic in the
    same order).

    ``on_interval(k, n, models, masks)`` is a procedure's hook for pruning during
    training: before each of the round's n validation intervals (k = 1 at step 0, then
    after each validation point but the last) it gets the models, holding the current
    weights, and each replica's masks in force (on the CPU), and returns each
    replica's new masks; the entries they prune are zeroed
    with their momentum and stay zero. The masks in force are part of the checkpoint,
    and each result's ``masks`` holds those the round ended with.
    """
    if not len(models) == len(masks) == len(gens):
        raise ValueError(
            f"The 'models', 'masks' and 'gens' parameters must have one entry per replica. "
            f"Got {len(models)}, {len(masks)} and {len(gens)}."
        )
    device = data.x_train.device
    if device.type == "cpu":
        retain_freed_memory()  # no page faults for the step's allocations
    net = ReplicaFCN(models)
    stacked = {name: torch.stack([m[name] for m in masks]).to(device) for name in masks[0]}
    replicas = len(models)
    dense_step = compiled_train_step() if config.compile else train_step
    engine = RoundEngine(net, stacked, config, dense_step)
    if on_interval is not None:  # the masks in force are part of the training state
        stacked = {name: mask.clone() for name, mask in stacked.items()}
    curves: list[list[dict[str, float]]] = [[] for _ in models]
    rewind_states = None
    loss_sum = torch.zeros(replicas, device=device)
    correct_sum = torch.zeros(replicas, device=device)
    since_eval = first_step = 0
    earlier_seconds = 0.0
    if resume is not None:
        if not 0 < resume.step < config.steps or len(resume.curves) != replicas:
            raise CheckpointError(
                f"The 'resume' state must be inside this round (0 < step < {config.steps}, "
                f"{replicas} replicas). Got step {resume.step}, {len(resume.curves)} replicas."
            )
        try:
            rewind_states = restore(
                resume, net, engine, gens, loss_sum, correct_sum, stacked, models
            )
        except (ValueError, RuntimeError) as error:  # torch refuses mismatches too
            raise CheckpointError(str(error)) from None
        if rewind_step is not None and resume.step > rewind_step and rewind_states is None:
            raise CheckpointError(
                f"The 'resume' state is past the rewind step {rewind_step} but holds no "
                "rewind state."
            )
        curves = [list(curve) for curve in resume.curves]
        since_eval, first_step, earlier_seconds = resume.since_eval, resume.step, resume.seconds
    every = config.checkpoint_every if on_checkpoint is not None else 0
    started = time.perf_counter() - earlier_seconds
    threads = step_threads(net.dims, replicas, config.batch_size, device)
    with precision_context(config.precision, device), threads:
        for step in range(first_step, config.steps + 1):
            if step == rewind_step and rewind_states is None:
                net.write_to(models)
                rewind_states = [state_copy(m) for m in models]
            if since_eval and (step % config.eval_every == 0 or step == config.steps):
                rows = _validation_rows(
                    net, data, config, step, loss_sum, correct_sum, since_eval, engine.logits
                )
                for curve, row in zip(curves, rows):
                    curve.append(row)
                if on_eval is not None:
                    on_eval(step, rows)
                loss_sum.zero_()
                correct_sum.zero_()
                since_eval = 0
            if step == config.steps:
                break
            resumed_here = resume is not None and step == first_step
            if on_interval is not None and step % config.eval_every == 0 and not resumed_here:
                n = -(-config.steps // config.eval_every)  # validation points in the round
                net.write_to(models)
                now = [
                    {name: mask[r].cpu() for name, mask in stacked.items()} for r in range(replicas)
                ]
                new = on_interval(step // config.eval_every + 1, n, models, now)
                for name in stacked:
                    stacked[name].copy_(torch.stack([m[name] for m in new]))
                engine.set_masks(stacked)
            if on_checkpoint is not None and every and step % every == 0 and step != first_step:
                masks_now = stacked if on_interval is not None else None
                on_checkpoint(
                    TrainingState(
                        step,
                        since_eval,
                        time.perf_counter() - started,
                        [list(curve) for curve in curves],
                        capture(net, engine, gens, loss_sum, correct_sum, rewind_states, masks_now),
                    )
                )
            x, y = sample_batch(data, gens, config.batch_size)  # (R, B, D), (R, B)
            result = engine.step(x, y, data.offset, data.scale)
            loss_sum += result.loss
            correct_sum += result.correct
            since_eval += 1
    net.write_to(models)
    seconds = time.perf_counter() - started
    results = [
        _round_result(curve, model, seconds, None if rewind_states is None else rewind_states[r])
        for r, (curve, model) in enumerate(zip(curves, models))
    ]
    for replica in results:
        replica.sparse_layers = engine.sparse_layers
    if on_interval is not None:
        for r, replica in enumerate(results):
            replica.masks = {name: mask[r].cpu() for name, mask in stacked.items()}
    return results


def _round_result(
    curves: list[dict[str, float]],
    model: FCN,
    seconds: float,
    rewind_state: dict[str, torch.Tensor] | None,
) -> RoundResult:
    best = max(curves, key=lambda row: row["val_top1"])
    last = curves[-1]
    return RoundResult(
        curves=curves,
        best_top1=best["val_top1"],
        best_step=int(best["step"]),
        top5_at_best=best["val_top5"],
        best_top5=max(row["val_top5"] for row in curves),
        final=Evaluation(last["val_loss"], last["val_top1"], last["val_top5"]),
        seconds=seconds,
        final_state=state_copy(model),
        rewind_state=rewind_state,
        test_top1_at_best=best.get("test_top1"),
        final_test_top1=last.get("test_top1"),
    )


def _validation_rows(
    net: ReplicaFCN,
    data: ImageData,
    config: TrainConfig,
    step: int,
    loss_sum: torch.Tensor,
    correct_sum: torch.Tensor,
    n_steps: int,
    logits_of: Callable[..., torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    # The host synchronisations of the interval: the training loss, then the rest.
    train_loss = [value / n_steps for value in loss_sum.tolist()]
    for r, value in enumerate(train_loss):
        if not math.isfinite(value):
            which = f" of replica {r}" if net.replicas > 1 else ""
            raise TrainingDiverged(
                f"The training loss{which} became {value} between steps {step - n_steps} and "
                f"{step} (train.lr = {config.lr}). Completed rounds are kept in the run folder; "
                "to resume with a lower rate: imprint run CONFIG --out RUN --set train.lr=... "
                "--allow-change train.lr"
            )
    loss, top1, topk = _evaluate_net(net, data, config.eval_batch_size, "val", logits_of)
    sums = torch.stack([correct_sum, loss, top1, topk]).tolist()  # (4, R)
    n, seen = data.x_val.shape[0], n_steps * config.batch_size
    for r, value in enumerate(sums[1]):
        if not math.isfinite(value):
            which = f" of replica {r}" if net.replicas > 1 else ""
            raise TrainingDiverged(
                f"The validation loss{which} became {value} at step {step} (the training loss "
                f"was finite): the evaluation-mode net (BN running averages) diverged. "
                "Completed rounds are kept in the run folder."
            )
    rows = [
        {
            "step": step,
            "train_loss": train_loss[r],
            "train_top1": sums[0][r] / seen,
            "val_loss": sums[1][r] / n,
            "val_top1": sums[2][r] / n,
            "val_top5": sums[3][r] / n,
        }
        for r in range(net.replicas)
    ]
    if data.x_test is not None:  # reported beside the validation set, never chosen on
        loss, top1, _ = _evaluate_net(net, data, config.eval_batch_size, "test", logits_of)
        n_test = data.x_test.shape[0]
        for row, test_loss, test_top1 in zip(rows, loss.tolist(), top1.tolist()):
            row["test_loss"], row["test_top1"] = test_loss / n_test, test_top1 / n_test
    return rows
