"""Statistics of hidden-unit activity on validation data."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imprint.data import ImageData
from imprint.model import FCN

__all__ = [
    "kurtosis_reading",
    "Kurtosis",
    "hidden_activity",
    "excess_kurtosis",
    "shuffle_within_units",
]


@torch.no_grad()
def hidden_activity(
    model: FCN,
    data: ImageData,
    layer: int = 0,
    max_samples: int = 10_000,
    batch_size: int = 10_000,
) -> torch.Tensor:
    """Pre-activations of linear layer ``layer`` on the first validation images, in
    evaluation mode: (n, units) float32 on the CPU."""
    was_training = model.training
    model.eval()
    x_all = data.x_val[:max_samples]
    chunks = [
        model.hidden_preactivations(data.normalize(x_all[i : i + batch_size]), layer).cpu()
        for i in range(0, x_all.shape[0], batch_size)
    ]
    model.train(was_training)
    return torch.cat(chunks)


@dataclass(frozen=True)
class Kurtosis:
    per_unit: list[float]  # excess kurtosis of each unit's pre-activation (NaN if constant)
    mean: float  # over units with a non-constant pre-activation
    median: float
    null: float = 0.0  # a Gaussian pre-activation has excess kurtosis 0


def excess_kurtosis(values: torch.Tensor) -> Kurtosis:
    """Excess kurtosis E[(x - mu)^4] / var^2 - 3 per column of ``values`` (n, units)."""
    v = values.double()
    centred = v - v.mean(dim=0)
    var = (centred**2).mean(dim=0)
    kurt = (centred**4).mean(dim=0) / var**2 - 3.0
    kurt = torch.where(var > 1e-12, kurt, torch.full_like(kurt, float("nan")))
    finite = kurt[torch.isfinite(kurt)]
    mean = finite.mean().item() if finite.numel() else float("nan")
    median = finite.median().item() if finite.numel() else float("nan")
    return Kurtosis(kurt.tolist(), mean, median)


def shuffle_within_units(weights: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``weights`` (units, inputs) with each unit's nonzero weights permuted among its
    own nonzero inputs (seeded): every unit keeps its inputs (the mask) and its weight
    values, and loses which weight sits on which input, the null of the readings of
    activity that keep the mask."""
    gen = torch.Generator().manual_seed(seed)
    w = weights.detach().cpu()
    out = torch.zeros_like(w)
    for unit in range(w.shape[0]):
        alive = torch.nonzero(w[unit]).flatten()
        order = alive[torch.randperm(alive.numel(), generator=gen)]
        out[unit, alive] = w[unit, order]
    return out.to(weights.device)


def kurtosis_reading(
    pre_activations: torch.Tensor,
    connected: torch.Tensor,
    null_activations: torch.Tensor | None = None,
):
    """The mean excess kurtosis of the connected units' pre-activations ((n, units),
    ``connected`` a (units,) bool), bootstrapped over units: the one place this reading
    is computed. Its null is the same mean for ``null_activations`` (the pre-activations
    of the same units with their weights shuffled within each unit's inputs,
    :func:`shuffle_within_units`), or 0 (Gaussian pre-activations) without them. Also
    returns the :class:`Kurtosis` (None when no unit is connected)."""
    from imprint.analysis.uncertainty import mean_reading

    if not bool(connected.any()):
        return mean_reading(torch.tensor([]), null=0.0), None
    keep = connected.to(pre_activations.device)
    null = 0.0
    if null_activations is not None:
        null = excess_kurtosis(null_activations[:, keep.to(null_activations.device)]).mean
    kurt = excess_kurtosis(pre_activations[:, keep])
    return mean_reading(torch.tensor(kurt.per_unit), null=null), kurt
