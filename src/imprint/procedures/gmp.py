"""Gradual magnitude pruning (Zhu & Gupta 2017): pruning during training, no rewind.

Training never restarts: round r continues from round r-1's final weights and, at
every validation point of the round (k of n), prunes by magnitude to the density of
a cubic schedule, s_k = s_f + (s_i - s_f) (1 - k / n)^3, from round r-1's density s_i
to round r's s_f (IMP's, per layer). Each round's mask, the one it ends with, thus
sits at IMP's density of round r exactly: the masks of one gradual run, read where its
schedule crosses IMP's densities. The cubic ramp runs within each round (between two
of IMP's densities) rather than once over the whole run, so that every round lands on
IMP's axis.
"""

from __future__ import annotations

from collections.abc import Mapping

from imprint.procedures.base import Procedure, RoundInputs, start_from_previous
from imprint.prune import Masks


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


GMP = Procedure(
    "gmp",
    "gradual magnitude pruning (Zhu & Gupta): a cubic schedule to round r's density "
    "during the round's training, continuing from round r-1 (no rewind)",
    _previous_mask,
    start_from_previous,
    gradual=cubic_counts,
    nested=True,
)
