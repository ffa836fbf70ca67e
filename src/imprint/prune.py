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
    "magnitudes",
    "prune_by_scores",
    "prune_weights_by_scores",
    "weight_counts",
    "random_scores",
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


def weight_counts(masks: Tensors, layers: Sequence[int]) -> dict[int, int]:
    """Alive weights (biases not counted) of each named layer."""
    return {layer: int(masks[layer_names(layer)[0]].sum()) for layer in layers}


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


def magnitudes(weights: Tensors, layers: Sequence[int]) -> dict[str, torch.Tensor]:
    """|w| of the named layers' weights and biases: the magnitude score."""
    return {
        name: weights[name].detach().abs().float().cpu()
        for layer in layers
        for name in layer_names(layer)
    }


def _flat(tensors: Tensors, layer: int) -> torch.Tensor:
    """A layer's weight and bias entries, flattened together: (n,)."""
    return torch.cat([tensors[n].flatten().cpu() for n in layer_names(layer)])


def _keep_largest(score: torch.Tensor, alive: torch.Tensor, n_remove: int) -> torch.Tensor:
    """New alive flags: the ``n_remove`` alive entries of smallest score removed (ties: lower
    index first, so the result is deterministic)."""
    order = torch.argsort(score, stable=True)
    order = order[alive[order]]  # alive entries, smallest score first
    keep = alive.clone()
    keep[order[:n_remove]] = False
    return keep


def _unflatten(flat: torch.Tensor, masks: Tensors, layer: int, out: Masks) -> None:
    start = 0
    for name in layer_names(layer):
        n = masks[name].numel()
        out[name] = flat[start : start + n].reshape(masks[name].shape).to(masks[name].device)
        start += n


def prune_by_scores(
    scores: Tensors,
    masks: Tensors,
    *,
    fraction: float | Mapping[int, float] | None = None,
    keep: int | Mapping[int, int] | None = None,
    scope: str = "layer",
) -> Masks:
    """New masks keeping the alive entries of highest score: the one pruning mechanism
    behind every criterion (magnitude, random, gradient-based).

    ``scores`` maps the parameter names of the layers to prune to score tensors of
    their shape (finite; a higher score keeps an entry). Say how many go with exactly
    one of ``fraction`` (one rate, or ``{layer: rate}``: remove round(rate x alive)) or
    ``keep`` (entries to keep: ``{layer: count}`` with ``scope="layer"``, a total with
    ``scope="global"``). ``scope="layer"`` ranks each layer's weights and bias together;
    ``scope="global"`` ranks all named layers against one threshold. Layers not named
    keep their masks; dead entries stay dead. Ties go to the lower flat index.
    """
    if (fraction is None) == (keep is None):
        raise ValueError("Pass exactly one of the 'fraction' and 'keep' parameters.")
    if scope not in ("layer", "global"):
        raise ValueError(f"The 'scope' parameter must be 'layer' or 'global'. Got {scope!r}.")
    n_layers = _n_layers(masks)
    if keep is not None:
        if scope == "global" and not isinstance(keep, int):
            raise ValueError("The 'keep' parameter must be one total count when scope='global'.")
        if scope == "layer" and not isinstance(keep, Mapping):
            raise ValueError("The 'keep' parameter must map layers to counts when scope='layer'.")
        layers = sorted(keep) if isinstance(keep, Mapping) else _scored_layers(scores, n_layers)
    else:
        rates = _per_layer(fraction, n_layers)  # type: ignore[arg-type]  # a fraction here
        if isinstance(fraction, Mapping):
            layers = sorted(rates)
        else:
            layers = _scored_layers(scores, n_layers)
    for layer in layers:
        for name in layer_names(layer):
            if name not in scores or tuple(scores[name].shape) != tuple(masks[name].shape):
                raise ValueError(
                    f"The 'scores' parameter needs entry '{name}' of the mask's shape."
                )
    out: Masks = {name: mask.clone() for name, mask in masks.items()}
    flat_scores = [_flat(scores, layer).double() for layer in layers]
    alive = [_flat(masks, layer) for layer in layers]
    if any(not torch.isfinite(s).all() for s in flat_scores):
        raise ValueError("The 'scores' parameter must be finite.")
    if scope == "layer":
        for i, layer in enumerate(layers):
            n_alive = int(alive[i].sum())
            if keep is not None:
                n_keep = keep[layer]  # type: ignore[index]  # per layer here
                if not 0 <= n_keep <= n_alive:
                    raise ValueError(
                        f"The 'keep' parameter for layer {layer} must be in [0, {n_alive}]. "
                        f"Got {n_keep}."
                    )
                n_remove = n_alive - n_keep
            else:
                n_remove = round(rates[layer] * n_alive)
            _unflatten(_keep_largest(flat_scores[i], alive[i], n_remove), masks, layer, out)
        return out
    score, flags = torch.cat(flat_scores), torch.cat(alive)
    n_alive = int(flags.sum())
    if keep is not None:
        if not 0 <= keep <= n_alive:  # type: ignore[operator]  # a count here
            raise ValueError(f"The 'keep' parameter must be in [0, {n_alive}]. Got {keep}.")
        n_remove = n_alive - keep  # type: ignore[operator]  # a count here
    else:
        if len(set(rates[layer] for layer in layers)) > 1:
            raise ValueError("The 'fraction' parameter must be one rate when scope='global'.")
        n_remove = round(rates[layers[0]] * n_alive) if layers else 0
    kept = _keep_largest(score, flags, n_remove)
    start = 0
    for i, layer in enumerate(layers):
        _unflatten(kept[start : start + alive[i].numel()], masks, layer, out)
        start += alive[i].numel()
    return out


def prune_weights_by_scores(
    scores: Tensors, masks: Tensors, *, keep: int | Mapping[int, int], scope: str = "layer"
) -> Masks:
    """:func:`prune_by_scores` over weights alone, as the at-initialisation criteria's
    papers prune: ``scores`` names each layer's weight (``layers.{l}.weight``), ``keep``
    counts weights (per layer, or in all with ``scope="global"``), and every alive bias
    of those layers stays."""
    weights = [name for name in scores if name.endswith(".weight")]
    layers = sorted(int(name.split(".")[1]) for name in weights)
    top = torch.finfo(torch.float64).max  # above every weight's score: biases stay
    full: dict[str, torch.Tensor] = {name: scores[name] for name in weights}
    biases = {}
    for layer in layers:
        bias = layer_names(layer)[1]
        full[bias] = torch.full(masks[bias].shape, top, dtype=torch.float64)
        biases[layer] = int(masks[bias].sum())
    if isinstance(keep, Mapping):
        return prune_by_scores(
            full, masks, keep={layer: keep[layer] + biases[layer] for layer in keep}, scope=scope
        )
    return prune_by_scores(full, masks, keep=keep + sum(biases.values()), scope=scope)


def _scored_layers(scores: Tensors, n_layers: int) -> list[int]:
    return [layer for layer in range(n_layers) if layer_names(layer)[0] in scores]


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
    if scope not in ("layer", "global"):
        raise ValueError(f"The 'scope' parameter must be 'layer' or 'global'. Got {scope!r}.")
    rates = _per_layer(fraction, _n_layers(masks))
    return prune_by_scores(magnitudes(weights, sorted(rates)), masks, fraction=rates, scope=scope)


def prune_to_counts(weights: Tensors, masks: Tensors, keep: Mapping[int, int]) -> Masks:
    """Keep exactly ``keep[layer]`` alive entries of largest |value| in each named layer
    (one-shot pruning to a target density)."""
    return prune_by_scores(magnitudes(weights, sorted(keep)), masks, keep=dict(keep))


def random_scores(
    masks: Tensors, layers: Sequence[int], gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Uniform random scores for the named layers (drawn layer by layer, weight and bias
    together, in ``layers`` order): ranking by them prunes uniformly at random."""
    scores: dict[str, torch.Tensor] = {}
    for layer in layers:
        n = sum(masks[name].numel() for name in layer_names(layer))
        flat = torch.rand(n, generator=gen)
        _unflatten(flat, masks, layer, scores)
    return {name: value.cpu() for name, value in scores.items()}


def random_prune(
    masks: Tensors, fraction: float | Mapping[int, float], gen: torch.Generator
) -> Masks:
    """Remove round(rate * alive) alive entries of each named layer uniformly at random."""
    rates = _per_layer(fraction, _n_layers(masks))
    scores = random_scores(masks, list(rates), gen)
    return prune_by_scores(scores, masks, fraction=rates)


def schedule_counts(
    totals: Sequence[int] | Mapping[int, int], fractions: Mapping[int, float], rounds: int
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
