"""One round of training: plain SGD on batches drawn with replacement, with masks held.

The step loop touches the host only at validation points: batches are sampled on
the data's device from a seeded generator, losses accumulate on the device, and
masked weights are re-zeroed with one fused multiply after each optimizer step
(so pruned entries stay exactly zero with momentum or weight decay on).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from imprint.config import TrainConfig
from imprint.data import ImageData
from imprint.model import FCN
from imprint.prune import Masks

__all__ = ["TrainingDiverged", "RoundResult", "Evaluation", "evaluate", "train_round", "state_copy"]

CURVE_COLUMNS = ("step", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5")


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


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state (parameters and BN running averages)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


@torch.no_grad()
def evaluate(
    model: FCN, data: ImageData, batch_size: int = 10_000, split: str = "val"
) -> Evaluation:
    """Loss, top-1 and top-5 accuracy in evaluation mode (BN running averages)."""
    x_all, y_all = (data.x_val, data.y_val) if split == "val" else (data.x_train, data.y_train)
    was_training = model.training
    model.eval()
    k = min(5, data.num_classes)
    loss = torch.zeros((), device=x_all.device)
    top1 = torch.zeros((), device=x_all.device)
    topk = torch.zeros((), device=x_all.device)
    for start in range(0, x_all.shape[0], batch_size):
        x = data.normalize(x_all[start : start + batch_size])  # (b, D)
        y = y_all[start : start + batch_size]  # (b,)
        logits = model(x)  # (b, classes)
        loss += F.cross_entropy(logits, y, reduction="sum")
        best = logits.topk(k, dim=1).indices  # (b, k)
        top1 += (best[:, 0] == y).sum()
        topk += (best == y[:, None]).any(dim=1).sum()
    model.train(was_training)
    n = x_all.shape[0]
    return Evaluation(loss.item() / n, top1.item() / n, topk.item() / n)


def train_round(
    model: FCN,
    masks: Masks,
    data: ImageData,
    config: TrainConfig,
    gen: torch.Generator,
    *,
    rewind_step: int | None = None,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
) -> RoundResult:
    """Train ``model`` in place for ``config.steps`` steps under ``masks``.

    ``model``, ``masks`` and ``data`` must be on one device, and ``gen`` a generator
    on that device. The model's masked weights must already be zero. When
    ``rewind_step`` is given, the state after that many steps is returned too.
    """
    device = data.x_train.device
    params = dict(model.named_parameters())
    # Only layers with pruned entries need re-zeroing after each step.
    masked = [
        (params[name], mask.to(device, params[name].dtype))
        for name, mask in masks.items()
        if not bool(mask.all())
    ]
    masked_params = [p for p, _ in masked]
    masked_values = [m for _, m in masked]
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    n_train = data.x_train.shape[0]
    curves: list[dict[str, float]] = []
    rewind_state = None
    loss_sum = torch.zeros((), device=device)
    correct_sum = torch.zeros((), device=device)
    since_eval = 0
    started = time.perf_counter()
    model.train()
    for step in range(config.steps + 1):
        if step == rewind_step:
            rewind_state = state_copy(model)
        if since_eval and (step % config.eval_every == 0 or step == config.steps):
            row = _validation_row(model, data, config, step, loss_sum, correct_sum, since_eval)
            curves.append(row)
            if on_eval is not None:
                on_eval(step, row)
            loss_sum.zero_()
            correct_sum.zero_()
            since_eval = 0
            model.train()
        if step == config.steps:
            break
        idx = torch.randint(n_train, (config.batch_size,), generator=gen, device=device)
        x = data.normalize(data.x_train[idx])  # (batch, D)
        y = data.y_train[idx]  # (batch,)
        logits = model(x)  # (batch, classes)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if masked_params:
            with torch.no_grad():
                torch._foreach_mul_(masked_params, masked_values)
        loss_sum += loss.detach()
        correct_sum += (logits.detach().argmax(dim=1) == y).sum()
        since_eval += 1

    best = max(curves, key=lambda row: row["val_top1"])
    last = curves[-1]
    return RoundResult(
        curves=curves,
        best_top1=best["val_top1"],
        best_step=int(best["step"]),
        top5_at_best=best["val_top5"],
        best_top5=max(row["val_top5"] for row in curves),
        final=Evaluation(last["val_loss"], last["val_top1"], last["val_top5"]),
        seconds=time.perf_counter() - started,
        final_state=state_copy(model),
        rewind_state=rewind_state,
    )


def _validation_row(
    model: FCN,
    data: ImageData,
    config: TrainConfig,
    step: int,
    loss_sum: torch.Tensor,
    correct_sum: torch.Tensor,
    n_steps: int,
) -> dict[str, float]:
    train_loss = loss_sum.item() / n_steps  # the only host synchronisation of the interval
    if not math.isfinite(train_loss):
        raise TrainingDiverged(
            f"The training loss became {train_loss} between steps {step - n_steps} and {step} "
            f"(train.lr = {config.lr}). Completed rounds are kept in the run folder; to "
            "resume with a lower rate: imprint run CONFIG --out RUN --set train.lr=... "
            "--allow-change train.lr"
        )
    val = evaluate(model, data, config.eval_batch_size)
    return {
        "step": step,
        "train_loss": train_loss,
        "train_top1": correct_sum.item() / (n_steps * config.batch_size),
        "val_loss": val.loss,
        "val_top1": val.top1,
        "val_top5": val.top5,
    }
