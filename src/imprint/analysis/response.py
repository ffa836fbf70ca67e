"""Class response of hidden units: how much of a unit's activity the class explains
(eta squared, with a label-shuffle null)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ClassResponse", "class_response"]


@dataclass(frozen=True)
class ClassResponse:
    class_means: torch.Tensor  # (units, n_classes) mean activation per class; NaN if absent
    class_counts: torch.Tensor  # (n_classes,) examples per class
    eta_squared: torch.Tensor  # (units,) fraction of variance explained by the class
    independence: torch.Tensor  # (units,) 1 - eta_squared; NaN for constant units
    null_independence: torch.Tensor  # (units,) the same with labels shuffled (mean)
    mean_independence: float  # mean over non-constant units
    null_mean_independence: float  # the same for the shuffled labels


def _eta_squared(
    values: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class means (units, K), counts (K,) and eta^2 (units,) of values (n, units)."""
    counts = torch.bincount(labels, minlength=n_classes).double()  # (K,)
    sums = torch.zeros((n_classes, values.shape[1]), dtype=torch.float64, device=values.device)
    sums.index_add_(0, labels, values)  # (K, units)
    present = counts > 0
    means = torch.full_like(sums, float("nan"))
    means[present] = sums[present] / counts[present, None]
    grand = values.mean(0)  # (units,)
    total = (values - grand).pow(2).sum(0)  # (units,)
    between = (counts[present, None] * (means[present] - grand).pow(2)).sum(0)  # (units,)
    eta = torch.where(total > 0, between / torch.where(total > 0, total, 1.0), float("nan"))
    return means.T, counts, eta.clamp(max=1.0)


def class_response(
    activations: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    n_shuffles: int = 10,
    seed: int = 0,
) -> ClassResponse:
    """How little a unit's response depends on the class.

    activations (n, units) of one layer over n examples (the caller runs the net),
    labels (n,) integers in [0, n_classes). Per unit, eta squared is the fraction of
    the activation's variance explained by the class,

        eta^2 = sum_c n_c (mean_c - mean)^2 / sum_i (a_i - mean)^2,

    and independence = 1 - eta^2: 1 for class-averaged responses that are flat
    across classes, 0 for a unit that is a function of the class. A constant unit
    (zero variance, e.g. a dead ReLU) has no defined value: NaN, and it is left out
    of the means.

    Null: the same statistic with labels permuted at random (``n_shuffles``
    permutations from ``torch.Generator().manual_seed(seed)``, averaged), i.e. a
    unit whose response ignores the class. Even then eta^2 is not 0 but about
    (K-1)/(n-1) for n examples in K classes, so compare with the null, not with 1.
    """
    if activations.dim() != 2:
        raise ValueError(
            f"The 'activations' parameter must be (n, units). Got shape {tuple(activations.shape)}."
        )
    if labels.dim() != 1 or labels.shape[0] != activations.shape[0]:
        raise ValueError(
            f"The 'labels' parameter must be (n,) = ({activations.shape[0]},). "
            f"Got shape {tuple(labels.shape)}."
        )
    if n_classes < 2:
        raise ValueError(f"The 'n_classes' parameter must be >= 2. Got {n_classes}.")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"The 'labels' parameter must hold integers. Got {labels.dtype}.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"The 'labels' parameter must be in [0, {n_classes}). "
            f"Got {int(labels.min())}..{int(labels.max())}."
        )
    if n_shuffles < 1:
        raise ValueError(f"The 'n_shuffles' parameter must be >= 1. Got {n_shuffles}.")

    values = activations.double()  # (n, units)
    labels = labels.long().to(values.device)
    means, counts, eta = _eta_squared(values, labels, n_classes)
    gen = torch.Generator().manual_seed(seed)
    null_eta = torch.zeros_like(eta)
    for _ in range(n_shuffles):
        permuted = labels[torch.randperm(labels.numel(), generator=gen).to(values.device)]
        null_eta += _eta_squared(values, permuted, n_classes)[2]
    independence = 1.0 - eta
    null_independence = 1.0 - null_eta / n_shuffles
    active = ~independence.isnan()
    return ClassResponse(
        class_means=means,
        class_counts=counts.long(),
        eta_squared=eta,
        independence=independence,
        null_independence=null_independence,
        mean_independence=independence[active].mean().item() if active.any() else float("nan"),
        null_mean_independence=(
            null_independence[active].mean().item() if active.any() else float("nan")
        ),
    )
