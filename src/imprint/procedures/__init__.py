"""Pruning procedures as registry entries.

A procedure (:class:`imprint.procedures.base.Procedure`) is the rule for round r's
mask and the rule for round r's starting weights. Every mask rule prunes through
:func:`imprint.prune.prune_by_scores`, so it asks only for scores and a target: IMP's
per-layer density of round r (or a reference run's), which puts every procedure on
IMP's density axis.

To add one: a module here defining a ``Procedure``, and one line in ``PROCEDURES``.
"""

from __future__ import annotations

from imprint.procedures import classic, gmp, grasp, snip, synflow
from imprint.procedures.base import Procedure, RoundInputs

__all__ = ["PROCEDURES", "Procedure", "RoundInputs", "get_procedure", "procedure_names"]

PROCEDURES: dict[str, Procedure] = {
    p.name: p
    for p in (
        classic.IMP,
        classic.ONESHOT,
        classic.RANDOM,
        classic.REINIT,
        classic.FINETUNE,
        snip.SNIP,
        grasp.GRASP,
        synflow.SYNFLOW,
        gmp.GMP,
    )
}


def procedure_names() -> list[str]:
    return list(PROCEDURES)


def get_procedure(name: str) -> Procedure:
    try:
        return PROCEDURES[name]
    except KeyError:
        raise ValueError(
            f"prune.procedure must be one of {', '.join(PROCEDURES)}. Got {name!r}."
        ) from None
