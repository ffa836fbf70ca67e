"""Masks as values and pruning as pure functions.

A mask set is a ``dict`` from parameter name (``layers.{l}.weight``, ``layers.{l}.bias``)
to a boolean tensor of the parameter's shape; True keeps the entry. Every linear
layer has a mask, excluded layers an all-True one. Nothing here does I/O or
mutates a model: functions take weights and masks and return new masks.

Pruning ranks the weights and the bias of a layer together (the paper), either per
layer (``scope="layer"``) or against one threshold over all prunable layers
(``scope="global"``, open_lth's default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "Masks",
    "layer_names",
    "full_masks",
    "validate_masks",
    "apply_masks",
    "layer_counts",
    "layer_density",
    "connected_units",
    "magnitude_prune",
    "prune_to_counts",
    "random_prune",
    "schedule_counts",
]

Masks = dict[str, torch.Tensor]
Tensors = Mapping[str, torch.Tensor]


def layer_names(layer: int) -> tuple[str, str]:
    return f"layers.{layer}.weight", f"layers.{layer}.bias"


def _n_layers(tensors: Tensors) -> int:
    """Linear layers present: layers.0.weight, layers.1.weight, ... (BN entries ignored)."""
    n = 0
    while layer_names(n)[0] in tensors:
        n += 1
    return n


def full_masks(weights: Tensors) -> Masks:
    """All-True masks for every linear layer found in ``weights`` (a state dict)."""
    masks: Masks = {}
    for layer in range(_n_layers(weights)):
        for name in layer_names(layer):
            masks[name] = torch.ones_like(weights[name], dtype=torch.bool)
    if not masks:
        raise ValueError("weights hold no 'layers.{l}.weight' entries: not an imprint FCN state.")
    return masks


def validate_masks(masks: Tensors, weights: Tensors, source: str = "masks") -> None:
    """Raise ValueError naming the entry unless ``masks`` fit ``weights``."""
    for name, mask in masks.items():
        if name not in weights:
            raise ValueError(f"{source}: entry '{name}' has no matching weight.")
        if mask.dtype != torch.bool:
            raise ValueError(f"{source}: entry '{name}' must be bool. Got {mask.dtype}.")
        if tuple(mask.shape) != tuple(weights[name].shape):
            raise ValueError(
                f"{source}: entry '{name}' must have shape {tuple(weights[name].shape)}. "
                f"Got {tuple(mask.shape)}."
            )
    for layer in range(_n_layers(weights)):
        for name in layer_names(layer):
            if name not in masks:
                raise ValueError(f"{source}: entry '{name}' is missing.")


def apply_masks(weights: Tensors, masks: Tensors) -> dict[str, torch.Tensor]:
    """A copy of ``weights`` with masked entries set to exactly zero."""
    out = {}
    for name, value in weights.items():
        out[name] = value * masks[name].to(value.device) if name in masks else value.clone()
    return out


def layer_counts(masks: Tensors) -> list[tuple[int, int]]:
    """(alive, total) per linear layer, weights and bias together."""
    counts = []
    for layer in range(_n_layers(masks)):
        alive = total = 0
        for name in layer_names(layer):
            alive += int(masks[name].sum())
            total += masks[name].numel()
        counts.append((alive, total))
    return counts


def layer_density(masks: Tensors) -> list[float]:
    return [alive / total for alive, total in layer_counts(masks)]


def connected_units(masks: Tensors) -> list[int]:
    """Units of each linear layer with at least one incoming weight alive."""
    return [int(masks[layer_names(layer)[0]].any(dim=1).sum()) for layer in range(_n_layers(masks))]


def _check_fraction(value: float, what: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"The '{what}' parameter must be in [0, 1). Got {value}.")


def _per_layer(fraction: float | Mapping[int, float], n_layers: int) -> dict[int, float]:
    if isinstance(fraction, Mapping):
        rates = {int(k): float(v) for k, v in fraction.items()}
    else:
        rates = {layer: float(fraction) for layer in range(n_layers)}
    for layer, rate in rates.items():
        if not 0 <= layer < n_layers:
            raise ValueError(
                f"The 'fraction' parameter names layer {layer}; the net has {n_layers}."
            )
        _check_fraction(rate, f"fraction[{layer}]")
    return rates


def _alive(masks: Tensors, layer: int) -> torch.Tensor:
    """A layer's weight and bias flags, flattened together: (n,) bool."""
    return torch.cat([masks[n].flatten().cpu() for n in layer_names(layer)])


def _scores(weights: Tensors, masks: Tensors, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """|w| of a layer's weights and bias, flattened, and the alive flags; (n,), (n,)."""
    names = layer_names(layer)
    score = torch.cat([weights[n].detach().abs().flatten().float().cpu() for n in names])
    return score, _alive(masks, layer)


def _keep_largest(score: torch.Tensor, alive: torch.Tensor, n_remove: int) -> torch.Tensor:
    """New alive flags: the ``n_remove`` alive entries of smallest score removed (ties: lower
    index first, so the result is deterministic)."""
    masked = torch.where(alive, score, torch.full_like(score, -1.0))  # dead entries rank first
    order = torch.argsort(masked, stable=True)
    n_dead = int((~alive).sum())
    keep = torch.ones_like(alive)
    keep[order[: n_dead + n_remove]] = False
    return keep


def _unflatten(flat: torch.Tensor, masks: Tensors, layer: int, out: Masks) -> None:
    start = 0
    for name in layer_names(layer):
        n = masks[name].numel()
        out[name] = flat[start : start + n].reshape(masks[name].shape).to(masks[name].device)
        start += n


def magnitude_prune(
    weights: Tensors,
    masks: Tensors,
    fraction: float | Mapping[int, float],
    scope: str = "layer",
) -> Masks:
    """Remove ``fraction`` of the weights still alive, by smallest |value|.

    ``fraction`` is one rate for every layer or a ``{layer: rate}`` mapping (layers not
    named are left as they are). With ``scope="layer"`` each layer loses
    round(rate * alive) of its entries; with ``scope="global"`` one threshold over all
    named layers removes round(rate * alive) entries in total (one common rate needed).
    """
    n_layers = _n_layers(masks)
    rates = _per_layer(fraction, n_layers)
    out: Masks = {name: mask.clone() for name, mask in masks.items()}
    if scope == "layer":
        for layer, rate in rates.items():
            score, alive = _scores(weights, masks, layer)
            n_remove = round(rate * int(alive.sum()))
            _unflatten(_keep_largest(score, alive, n_remove), masks, layer, out)
        return out
    if scope == "global":
        if len(set(rates.values())) > 1:
            raise ValueError("The 'fraction' parameter must be one rate when scope='global'.")
        layers = sorted(rates)
        parts = [_scores(weights, masks, layer) for layer in layers]
        score = torch.cat([s for s, _ in parts])
        alive = torch.cat([a for _, a in parts])
        rate = next(iter(rates.values()), 0.0)
        keep = _keep_largest(score, alive, round(rate * int(alive.sum())))
        start = 0
        for layer, (s, _) in zip(layers, parts):
            _unflatten(keep[start : start + s.numel()], masks, layer, out)
            start += s.numel()
        return out
    raise ValueError(f"The 'scope' parameter must be 'layer' or 'global'. Got {scope!r}.")


def prune_to_counts(weights: Tensors, masks: Tensors, keep: Mapping[int, int]) -> Masks:
    """Keep exactly ``keep[layer]`` alive entries of largest |value| in each named layer
    (one-shot pruning to a target density)."""
    out: Masks = {name: mask.clone() for name, mask in masks.items()}
    for layer, n_keep in keep.items():
        score, alive = _scores(weights, masks, layer)
        n_alive = int(alive.sum())
        if not 0 <= n_keep <= n_alive:
            raise ValueError(
                f"The 'keep' parameter for layer {layer} must be in [0, {n_alive}]. Got {n_keep}."
            )
        _unflatten(_keep_largest(score, alive, n_alive - n_keep), masks, layer, out)
    return out


def random_prune(
    masks: Tensors, fraction: float | Mapping[int, float], gen: torch.Generator
) -> Masks:
    """Remove round(rate * alive) alive entries of each named layer uniformly at random."""
    rates = _per_layer(fraction, _n_layers(masks))
    out: Masks = {name: mask.clone() for name, mask in masks.items()}
    for layer, rate in rates.items():
        alive = _alive(masks, layer)
        n_remove = round(rate * int(alive.sum()))
        score = torch.rand(alive.shape, generator=gen)
        _unflatten(_keep_largest(score, alive, n_remove), masks, layer, out)
    return out


def schedule_counts(
    totals: Sequence[int], fractions: Mapping[int, float], rounds: int
) -> dict[int, int]:
    """Entries IMP's layer-wise schedule keeps after ``rounds`` rounds, per pruned layer
    (the same rounding as :func:`magnitude_prune` applied round after round)."""
    keep = {}
    for layer, rate in fractions.items():
        alive = totals[layer]
        for _ in range(rounds):
            alive -= round(rate * alive)
        keep[layer] = alive
    return keep
