"""The round in progress, checkpointed: :class:`TrainingState`, captured from the
training loop's objects and restored into them, so that a resumed round continues
exactly (bitwise on one code path). Momentum is stored in the dense layout on either
engine (:mod:`imprint.sparse`), so a checkpoint's files do not depend on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from imprint.engine import ReplicaFCN
from imprint.model import FCN
from imprint.sparse import RoundEngine

__all__ = ["CheckpointError", "TrainingState", "capture", "restore"]

CURVE_COLUMNS = ("step", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5")
TEST_COLUMNS = ("test_loss", "test_top1")  # added when the data has a test set


class CheckpointError(ValueError):
    """A training state (checkpoint) that does not fit the round it would resume."""


@dataclass
class TrainingState:
    """A round paused after ``step`` steps: everything needed to continue it exactly.

    ``tensors`` (CPU copies, flat names) holds the stacked net ("net.weights.0", ...
    as :meth:`ReplicaFCN.state`), the momentum buffers ("momentum.{i}", none before
    the first step or without momentum), each replica's batch generator
    ("generator.{r}"), the training loss and hits summed since the last validation
    point ("loss_sum", "correct_sum") and, once taken, the rewind states
    ("rewind.{r}.{state-dict name}") and, when pruning happens during training, the
    masks in force ("masks.{state-dict name}", replicas first). The rest is plain data,
    :meth:`metadata`.
    """

    step: int
    since_eval: int  # steps summed in loss_sum since the last validation point
    seconds: float  # training time so far
    curves: list[list[dict[str, float]]]  # per replica, the validation rows so far
    tensors: dict[str, torch.Tensor] = field(repr=False)

    def metadata(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "since_eval": self.since_eval,
            "seconds": self.seconds,
            "curves": self.curves,
        }

    @classmethod
    def from_parts(
        cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
    ) -> TrainingState:
        """The inverse of (``tensors``, :meth:`metadata`); ValueError if malformed."""
        try:
            return cls(
                step=int(metadata["step"]),
                since_eval=int(metadata["since_eval"]),
                seconds=float(metadata["seconds"]),
                curves=[[_curve_row(row) for row in curve] for curve in metadata["curves"]],
                tensors=dict(tensors),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"malformed training state metadata ({error!r})") from None


def _curve_row(row: dict[str, Any]) -> dict[str, float]:
    columns = set(row) - set(TEST_COLUMNS)
    if columns != set(CURVE_COLUMNS) or not all(isinstance(v, (int, float)) for v in row.values()):
        raise ValueError(f"a curve row must map {CURVE_COLUMNS} to numbers, got {row!r}")
    return dict(row)


def capture(
    net: ReplicaFCN,
    engine: RoundEngine,
    gens: Sequence[torch.Generator],
    loss_sum: torch.Tensor,
    correct_sum: torch.Tensor,
    rewind_states: list[dict[str, torch.Tensor]] | None,
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """CPU copies of the loop's state, named as :class:`TrainingState` describes
    (momentum in the dense layout on either engine)."""
    tensors = {f"net.{name}": value.to("cpu", copy=True) for name, value in net.state().items()}
    for index, buffer in enumerate(engine.momentum()):
        tensors[f"momentum.{index}"] = buffer.to("cpu", copy=True)
    for r, gen in enumerate(gens):
        tensors[f"generator.{r}"] = gen.get_state().clone()
    tensors["loss_sum"] = loss_sum.to("cpu", copy=True)
    tensors["correct_sum"] = correct_sum.to("cpu", copy=True)
    for r, state in enumerate(rewind_states or []):
        tensors.update({f"rewind.{r}.{name}": value for name, value in state.items()})
    for name, mask in (masks or {}).items():
        tensors[f"masks.{name}"] = mask.to("cpu", copy=True)
    return tensors


def restore(
    resume: TrainingState,
    net: ReplicaFCN,
    engine: RoundEngine,
    gens: Sequence[torch.Generator],
    loss_sum: torch.Tensor,
    correct_sum: torch.Tensor,
    masks: dict[str, torch.Tensor],
    models: Sequence[FCN],
) -> list[dict[str, torch.Tensor]] | None:
    """Load ``resume`` into the loop's objects (the masks in force, when pruning happens
    during training, into ``masks`` and the engine); returns its rewind states, if
    taken. ValueError names what does not fit."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in resume.tensors.items():
        head, _, rest = name.partition(".")
        groups.setdefault(head, {})[rest] = value
    known = {"net", "momentum", "generator", "loss_sum", "correct_sum", "rewind", "masks"}
    unknown = set(groups) - known
    if unknown:
        raise ValueError(f"The training state has unknown entries {sorted(unknown)}.")
    for name, value in resume.tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"The training state's '{name}' holds NaN or infinite values.")
    net.load_state(groups.get("net", {}))
    if "masks" in groups:
        stored = groups["masks"]
        if sorted(stored) != sorted(masks) or any(
            stored[n].shape != masks[n].shape or stored[n].dtype != torch.bool for n in masks
        ):
            raise ValueError("The training state's masks do not fit the round's masks.")
        for name in masks:
            masks[name].copy_(stored[name])
        engine.set_masks(masks)  # before the momentum: it may rebuild the engine
    engine.loaded()
    momentum = groups.get("momentum", {})
    if sorted(momentum) != sorted(str(i) for i in range(len(momentum))):
        raise ValueError(
            f"The training state's momentum entries {sorted(momentum)} are not 0..n-1."
        )
    buffers = [momentum[str(i)] for i in range(len(momentum))]
    engine.load_momentum(buffers)
    generators = groups.get("generator", {})
    if sorted(generators) != sorted(str(r) for r in range(len(gens))):
        raise ValueError(
            f"The training state must hold {len(gens)} generator state(s). Got {len(generators)}."
        )
    for r, gen in enumerate(gens):
        got, want = generators[str(r)], gen.get_state()
        if got.dtype != want.dtype or got.shape != want.shape:
            raise ValueError(
                f"The training state's generator {r} must be a {want.dtype} tensor of shape "
                f"{tuple(want.shape)}. Got {got.dtype} {tuple(got.shape)}."
            )
        gen.set_state(got)
    for target, name in ((loss_sum, "loss_sum"), (correct_sum, "correct_sum")):
        held = groups.get(name, {}).get("")
        if held is None or held.shape != target.shape:
            raise ValueError(
                f"The training state's '{name}' must have shape {tuple(target.shape)}."
            )
        target.copy_(held)
    if "rewind" not in groups:
        return None
    states: list[dict[str, torch.Tensor]] = [{} for _ in gens]
    for name, value in groups["rewind"].items():
        replica, _, key = name.partition(".")
        if not replica.isdigit() or int(replica) >= len(gens):
            raise ValueError(f"The training state has a rewind entry for replica {replica!r}.")
        states[int(replica)][key] = value
    for r, (state, model) in enumerate(zip(states, models)):
        expected = model.state_dict()
        if set(state) != set(expected) or any(
            tuple(state[k].shape) != tuple(expected[k].shape) for k in expected
        ):
            raise ValueError(
                f"The training state's rewind state of replica {r} does not fit the net."
            )
    return states
