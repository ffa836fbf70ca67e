"""IMP and the paper's controls (the paper's): magnitude pruning round after
round, one-shot, random, reinit and fine-tuning."""

from __future__ import annotations

from imprint.procedures.base import (
    Procedure,
    RoundInputs,
    start_from_fresh_init,
    start_from_previous,
    start_from_rewind,
)
from imprint.prune import Masks, magnitude_prune, magnitudes, prune_by_scores, random_scores


def _iterative_magnitude(inputs: RoundInputs) -> Masks:
    """30% (``prune.fraction``) of round r-1's alive weights removed by magnitude."""
    assert inputs.previous_final is not None
    return magnitude_prune(
        inputs.previous_final, inputs.previous_masks, dict(inputs.rates), inputs.config.prune.scope
    )


def _oneshot(inputs: RoundInputs) -> Masks:
    """Round 0's trained weights pruned by magnitude to round r's density in one step."""
    assert inputs.dense_final is not None
    return inputs.keep_highest(magnitudes(inputs.dense_final, inputs.layers))


def _random(inputs: RoundInputs) -> Masks:
    """Random masks, nested across rounds, at round r's density."""
    gen = inputs.generator("prune")
    target = inputs.target()
    scores = random_scores(inputs.previous_masks, inputs.layers, gen)
    if isinstance(target, int):  # global scope: each layer at IMP's rate, at random
        return prune_by_scores(scores, inputs.previous_masks, fraction=dict(inputs.rates))
    return prune_by_scores(scores, inputs.previous_masks, keep=target)


def _reference_masks(inputs: RoundInputs) -> Masks:
    """The reference IMP run's round r mask."""
    assert inputs.reference is not None  # guaranteed by the config validation
    return inputs.reference.masks(inputs.index)


IMP = Procedure(
    "imp",
    "magnitude-prune round r-1's final weights, rewind, retrain (the paper)",
    _iterative_magnitude,
    start_from_rewind,
    nested=True,
)
ONESHOT = Procedure(
    "oneshot",
    "magnitude-prune round 0's final weights to round r's density at once, rewind",
    _oneshot,
    start_from_rewind,
)
RANDOM = Procedure(
    "random",
    "random nested masks at round r's density, rewind",
    _random,
    start_from_rewind,
    nested=True,
)
REINIT = Procedure(
    "reinit",
    "the reference IMP run's round r mask with a fresh initialisation",
    _reference_masks,
    start_from_fresh_init,
    needs_reference=True,
)
FINETUNE = Procedure(
    "finetune",
    "as imp, but continue from round r-1's final weights (no rewind)",
    _iterative_magnitude,
    start_from_previous,
    nested=True,
)
