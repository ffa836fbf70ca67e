"""What a pruning procedure is: the rule for round r's mask and the rule for its
starting weights, kept apart so that any mask rule can be paired with any start."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import ValidationError

from imprint.data import ImageData
from imprint.data.base import StrictSection
from imprint.model import ModelSection
from imprint.prune import (
    Masks,
    apply_masks,
    full_masks,
    layer_counts,
    prune_by_scores,
    prune_weights_by_scores,
    schedule_counts,
)

__all__ = [
    "Procedure",
    "RoundInputs",
    "Reference",
    "start_from_rewind",
    "start_from_init",
    "start_from_previous",
    "start_from_fresh_init",
]

Tensors = Mapping[str, torch.Tensor]


class Reference(Protocol):
    """A finished run whose masks or per-layer counts a control follows."""

    def has_round(self, index: int) -> bool: ...

    def masks(self, index: int) -> Masks: ...

    def counts(self, index: int, layers: list[int]) -> dict[int, int]: ...

    def weight_counts(self, index: int, layers: list[int]) -> dict[int, int]: ...


class RunConfig(Protocol):
    """What the rules read of a run's config (an :class:`imprint.config.Config`), named
    here and not imported: procedures sit below config, which checks
    ``prune.procedure`` against their registry."""

    @property
    def prune(self) -> Any: ...

    @property
    def seeds(self) -> Any: ...

    @property
    def train(self) -> Any: ...

    @property
    def model(self) -> ModelSection: ...


@dataclass(frozen=True)
class RoundInputs:
    """Everything a procedure's rules may use to make round ``index`` (>= 1)."""

    config: RunConfig
    index: int
    previous_masks: Masks  # round index - 1's
    previous_final: Tensors | None  # round index - 1's trained state
    dense_final: Tensors | None  # round 0's trained state
    init_state: Tensors  # the state at step 0
    rewind_state: Tensors | None  # the dense state at prune.rewind_step
    reference: Reference | None
    data: ImageData  # on the training device
    rates: Mapping[int, float]  # per pruned layer, the fraction removed per IMP round
    derive_seed: Callable[..., int] = field(repr=False)
    build_state: Callable[[int], dict[str, torch.Tensor]] = field(repr=False)  # a fresh init
    options: Any = None  # the procedure's options (Procedure.options), from [prune.options]

    @property
    def layers(self) -> list[int]:
        return sorted(self.rates)

    def target(self) -> dict[int, int] | int:
        """Round r's entries to keep: per pruned layer (``prune.scope = "layer"``: the
        reference run's counts, else IMP's layer-wise schedule), or one total (global
        scope without a reference: IMP's overall density (1 - fraction)^r)."""
        if self.reference is not None:
            return self.reference.counts(self.index, self.layers)
        totals = [total for _, total in layer_counts(self.previous_masks)]
        if self.config.prune.scope == "layer":
            return schedule_counts(totals, self.rates, self.index)
        total = sum(totals[layer] for layer in self.layers)
        return round(total * (1 - self.config.prune.fraction) ** self.index)

    def weight_target(self) -> dict[int, int] | int:
        """Round r's weights to keep, for the criteria that prune weights alone and keep
        every bias (SNIP, GraSP, SynFlow, as their papers): per pruned layer, the
        reference run's weight counts, else IMP's layer-wise schedule applied to the
        layer's weights (the same density and rounding); with global scope and no
        reference, round(W (1 - fraction)^r) of the W weights in all."""
        if self.reference is not None:
            return self.reference.weight_counts(self.index, self.layers)
        totals = {layer: self.init_state[f"layers.{layer}.weight"].numel() for layer in self.layers}
        if self.config.prune.scope == "layer":
            return schedule_counts(totals, self.rates, self.index)
        return round(sum(totals.values()) * (1 - self.config.prune.fraction) ** self.index)

    def keep_highest_weights(self, scores: Tensors, masks: Masks | None = None) -> Masks:
        """``masks`` (default: dense) pruned in one step to :meth:`weight_target`,
        keeping the weights of highest ``scores`` (weights only) and every bias."""
        target = self.weight_target()
        scope = "global" if isinstance(target, int) else "layer"
        base = self.dense_masks() if masks is None else masks
        return prune_weights_by_scores(scores, base, keep=target, scope=scope)

    def dense_masks(self) -> Masks:
        return full_masks(self.init_state)

    def keep_highest(self, scores: Tensors, masks: Masks | None = None) -> Masks:
        """``masks`` (default: dense) pruned in one step to round r's target, keeping
        the entries of highest ``scores``: what every one-shot criterion does."""
        target = self.target()
        scope = "global" if isinstance(target, int) else "layer"
        base = self.dense_masks() if masks is None else masks
        return prune_by_scores(scores, base, keep=target, scope=scope)

    def generator(self, purpose: str, round_index: int | None = None) -> torch.Generator:
        """A CPU generator of its own stream: (purpose, seeds.prune, round)."""
        index = self.index if round_index is None else round_index
        seed = self.derive_seed(purpose, self.config.seeds.prune, index)
        return torch.Generator().manual_seed(seed)


StartRule = Callable[[RoundInputs, Masks], dict[str, torch.Tensor]]


def start_from_rewind(inputs: RoundInputs, masks: Masks) -> dict[str, torch.Tensor]:
    """The dense state at prune.rewind_step, masked (late rewinding)."""
    if inputs.rewind_state is None:
        raise ValueError(
            "the rewind state (rewind.safetensors, written by round 0 at prune.rewind_step) "
            "is missing; cannot rewind. Restore it, or rerun round 0 in a new --out folder."
        )
    return apply_masks(inputs.rewind_state, masks)


def start_from_init(inputs: RoundInputs, masks: Masks) -> dict[str, torch.Tensor]:
    """The state at step 0, masked (pruning at initialisation)."""
    return apply_masks(inputs.init_state, masks)


def start_from_previous(inputs: RoundInputs, masks: Masks) -> dict[str, torch.Tensor]:
    """Round r-1's trained state, masked (fine-tuning, no rewind)."""
    assert inputs.previous_final is not None
    return apply_masks(inputs.previous_final, masks)


def start_from_fresh_init(inputs: RoundInputs, masks: Masks) -> dict[str, torch.Tensor]:
    """A fresh initialisation of its own seed stream, masked (reinit control)."""
    return apply_masks(
        inputs.build_state(inputs.derive_seed("reinit", inputs.config.seeds.init, inputs.index)),
        masks,
    )


class NoOptions(StrictSection):
    """The options of a procedure that has none: an empty [prune.options] table."""


@dataclass(frozen=True)
class Interval:
    """What a procedure that prunes during training sees before validation interval
    ``k`` of the round's ``n`` (k = 1 before the first step)."""

    k: int
    n: int
    state: Tensors  # the current weights, on the CPU
    masks: Masks  # the masks in force
    first: Mapping[int, int] | int  # entries alive at the round's start (per layer or in all)
    target: Mapping[int, int] | int  # the round's target (RoundInputs.target)
    layers: list[int]  # the pruned layers


@dataclass(frozen=True)
class Procedure:
    """A registry entry: how round r's mask is made and where its training starts."""

    name: str
    summary: str  # one line for docs and error messages
    mask: Callable[[RoundInputs], Masks]
    start: StartRule
    needs_reference: bool = False  # prune.reference_run is required
    # Each round's mask is a subset of the previous round's (checked on resume, where a
    # changed mask would otherwise be trained from silently).
    nested: bool = False
    # The procedure's own knobs: a section class whose fields the config's
    # [prune.options] table sets (validated with the config; RoundInputs.options).
    options: type[StrictSection] = NoOptions
    # Pruning during the round's training as well as before it: called before each of
    # the round's validation intervals (:class:`Interval`), it returns the masks to train
    # under from then on; the round's mask is the last one.
    during: Callable[[Interval], Masks] | None = None
    # The round's figure of merit: the best validation top-1 ("best"), or the last one
    # ("last": for masks that change during the round, the top-1 at the final mask).
    merit: Literal["best", "last"] = "best"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "start": self.start.__doc__,
            "options": {name: field.default for name, field in self.options.model_fields.items()},
        }

    def parse_options(self, table: Mapping[str, Any]) -> StrictSection:
        """The config's [prune.options] table as this procedure's options; a ValueError
        names the key (prune.options.KEY) and what this procedure accepts."""
        try:
            return self.options.model_validate(dict(table))
        except ValidationError as error:
            accepted = ", ".join(
                f"{name} (default {field.default!r})"
                for name, field in self.options.model_fields.items()
            )
            problems = "; ".join(
                f"prune.options.{'.'.join(str(p) for p in e['loc']) or '?'}: {e['msg']}"
                for e in error.errors()
            )
            raise ValueError(
                f"{problems}. prune.procedure = '{self.name}' takes {accepted or 'no options'}."
            ) from None
