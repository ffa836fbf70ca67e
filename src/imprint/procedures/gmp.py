"""Gradual magnitude pruning (Zhu & Gupta 2017): pruning during training, no rewind.

Training never restarts: round r continues from round r-1's final weights and, at
every validation point of the round (k of n), prunes by magnitude to the density of
a cubic schedule, s_k = s_f + (s_i - s_f) (1 - k / n)^3, from round r-1's density s_i
to round r's s_f (IMP's, per layer). Each round's mask, the one it ends with, thus
sits at IMP's density of round r exactly: the masks of one gradual run, read where its
schedule crosses IMP's densities. The cubic ramp runs within each round (between two
of IMP's densities) rather than once over the whole run, so that every round lands on
IMP's axis. The pruning runs inside the one training loop (``Procedure.during``), so a
gradual round is checkpointed and resumed like any other. Its figure of merit is the
top-1 at its final mask (the last validation point), not the best over the round,
whose earlier points were measured at denser masks.
"""

from __future__ import annotations

from collections.abc import Mapping

from imprint.procedures.base import Interval, Procedure, RoundInputs, start_from_previous
from imprint.prune import Masks, magnitudes, prune_by_scores


def cubic_counts(
    k: int, n: int, first: Mapping[int, int] | int, target: Mapping[int, int] | int
) -> dict[int, int] | int:
    """Entries kept after pruning step k of n: first + (target - first) (1 - (1 - k/n)^3)
    per layer (or in total), exactly ``target`` at k = n."""
    share = 1 - (1 - k / n) ** 3
    if isinstance(target, int):
        assert isinstance(first, int)
        return round(first + (target - first) * share)
    assert isinstance(first, Mapping)
    return {layer: round(first[layer] + (target[layer] - first[layer]) * share) for layer in target}


def _previous_mask(inputs: RoundInputs) -> Masks:
    """Round r starts from round r-1's mask; pruning happens during its training."""
    return {name: mask.clone() for name, mask in inputs.previous_masks.items()}


def _prune_by_magnitude(interval: Interval) -> Masks:
    """Before interval k of n: the smallest weights go, down to the cubic schedule's
    count (per layer, or over all pruned layers for a global target)."""
    keep = cubic_counts(interval.k, interval.n, interval.first, interval.target)
    scope = "global" if isinstance(interval.target, int) else "layer"
    scores = magnitudes(interval.state, interval.layers)
    return prune_by_scores(scores, interval.masks, keep=keep, scope=scope)


GMP = Procedure(
    "gmp",
    "gradual magnitude pruning (Zhu & Gupta): a cubic schedule to round r's density "
    "during the round's training, continuing from round r-1 (no rewind)",
    _previous_mask,
    start_from_previous,
    during=_prune_by_magnitude,
    merit="last",
    nested=True,
)
