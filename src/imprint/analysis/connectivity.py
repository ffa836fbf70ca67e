"""Connectivity of hidden units in input space.

Masks follow :mod:`imprint.prune`: ``layers.{l}.weight`` is a bool tensor of shape
(out, in), the torch.nn.Linear convention. In that orientation the effective mask of
linear layer l is the matrix product

    Meff^(l) = M_l @ M_{l-1} @ ... @ M_0        (units of layer l, D)

whose entry [k, p] counts the paths from input p to unit k through alive weights
(the paper writes the transpose, M^(1) ... M^(l), of shape (D, units)). Unit k is
connected to input p when Meff[k, p] > 0. Biases and batch normalisation carry no
path from an input and are left out.

Inputs are images flattened channel-major: p = c*H*W + y*W + x for shape (C, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from imprint.prune import layer_names

__all__ = [
    "ipr_reading",
    "ipr_excess_reading",
    "Connectivity",
    "connectivity",
    "effective_mask",
    "effective_weights",
    "ipr",
    "ipr_null",
    "pixel_map",
    "quiet_pixels",
    "QUIET_FRACTION",
]

Tensors = Mapping[str, torch.Tensor]

# float64 holds every integer below 2**53 exactly. Path counts are sums of
# non-negative integers, so every partial sum of a product is at most its final
# entry: a product whose largest entry is below this bound was computed exactly.
_EXACT_FLOAT64 = 2**53


def _layer_weight(tensors: Tensors, layer: int, what: str) -> torch.Tensor:
    name = layer_names(layer)[0]
    if name not in tensors:
        raise ValueError(f"The '{what}' parameter has no entry '{name}'.")
    value = tensors[name]
    if value.dim() != 2:
        raise ValueError(
            f"The '{what}' parameter entry '{name}' must be 2-D (out, in). "
            f"Got shape {tuple(value.shape)}."
        )
    return value


def _check_layer(tensors: Tensors, layer: int, what: str) -> None:
    if not isinstance(layer, int) or layer < 0:
        raise ValueError(f"The 'layer' parameter must be an int >= 0. Got {layer!r}.")
    for i in range(layer + 1):
        _layer_weight(tensors, i, what)
    for i in range(1, layer + 1):
        fan_in = _layer_weight(tensors, i, what).shape[1]
        below = _layer_weight(tensors, i - 1, what).shape[0]
        if fan_in != below:
            raise ValueError(
                f"The '{what}' parameter entry '{layer_names(i)[0]}' takes {fan_in} inputs "
                f"but layer {i - 1} has {below} units."
            )


def _bool_mask(masks: Tensors, layer: int) -> torch.Tensor:
    mask = _layer_weight(masks, layer, "masks")
    if mask.dtype != torch.bool:
        raise ValueError(
            f"The 'masks' parameter entry '{layer_names(layer)[0]}' must be bool. Got {mask.dtype}."
        )
    return mask


def effective_mask(masks: Tensors, layer: int) -> torch.Tensor:
    """Path counts from every input to every unit of linear layer ``layer``.

    Returns an int64 tensor (units of ``layer``, D): M_layer @ ... @ M_0 for the bool
    weight masks of ``masks`` (for ``layer=0`` the first mask as integers). Counts are
    exact: products run in float64 and OverflowError is raised if any count reaches
    2**53 (in a dense net of width 1024, layer 6 has 1024**6 = 2**60 paths per entry).
    """
    _check_layer(masks, layer, "masks")
    eff = _bool_mask(masks, 0).to(torch.float64)  # (N_0, D)
    for i in range(1, layer + 1):
        eff = _bool_mask(masks, i).to(torch.float64) @ eff  # (N_i, N_{i-1}) @ (N_{i-1}, D)
        if eff.numel() and eff.max().item() >= _EXACT_FLOAT64:
            raise OverflowError(
                f"Path counts up to layer {i} reach 2**53 and cannot be computed exactly."
            )
    return eff.to(torch.int64)


def effective_weights(weights: Tensors, masks: Tensors, layer: int) -> torch.Tensor:
    """Aggregated weights of the units of linear layer ``layer`` in input space.

    Returns a float64 tensor (units of ``layer``, D):
    (W_layer * M_layer) @ ... @ (W_0 * M_0), the linear map from the inputs to the
    layer's pre-activations with biases, batch normalisation and ReLUs left out. Its
    support lies within that of :func:`effective_mask` (paths may cancel).
    """
    _check_layer(masks, layer, "masks")
    _check_layer(weights, layer, "weights")
    agg: torch.Tensor | None = None
    for i in range(layer + 1):
        w = _layer_weight(weights, i, "weights")
        m = _bool_mask(masks, i)
        if w.shape != m.shape:
            raise ValueError(
                f"The 'masks' parameter entry '{layer_names(i)[0]}' must have shape "
                f"{tuple(w.shape)} like its weight. Got {tuple(m.shape)}."
            )
        masked = w.detach().to(torch.float64) * m.to(w.device)  # (N_i, N_{i-1})
        agg = masked if agg is None else masked @ agg  # (N_i, D)
    assert agg is not None  # layer >= 0 was checked
    return agg


def _unit_rows(mask: torch.Tensor, what: str = "mask") -> torch.Tensor:
    """``mask`` as a bool (units, D) connectivity: bool as given, counts > 0 otherwise."""
    if mask.dim() != 2:
        raise ValueError(
            f"The '{what}' parameter must be 2-D (units, D). Got shape {tuple(mask.shape)}."
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or (mask.numel() and mask.min().item() < 0):
        raise ValueError(
            f"The '{what}' parameter must be bool or non-negative path counts. "
            f"Got {mask.dtype} with negative or complex entries."
        )
    return mask > 0


@dataclass(frozen=True, eq=False)  # eq=False: tensor fields have no single truth value
class Connectivity:
    c_in: torch.Tensor  # (units,) int64: inputs connected to each unit
    n_disconnected: int  # units with C_in = 0

    @property
    def n_units(self) -> int:
        return int(self.c_in.numel())


def connectivity(mask: torch.Tensor) -> Connectivity:
    """C_in of every unit of ``mask`` (units, D): a bool first-layer mask or the path
    counts of :func:`effective_mask` (connected = count > 0)."""
    c_in = _unit_rows(mask).sum(dim=1, dtype=torch.int64)  # (units,)
    return Connectivity(c_in, int((c_in == 0).sum()))


def _check_shape(shape: tuple[int, int, int], n_inputs: int | None) -> tuple[int, int, int]:
    """``shape`` as (C, H, W), checked against the mask's ``n_inputs`` unless None."""
    if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"The 'shape' parameter must be (C, H, W) positive ints. Got {shape!r}.")
    channels, height, width = shape
    if n_inputs is not None and channels * height * width != n_inputs:
        raise ValueError(
            f"The 'shape' parameter must have C*H*W equal to the mask's {n_inputs} inputs. "
            f"Got {shape!r}."
        )
    return channels, height, width


def pixel_map(
    mask: torch.Tensor, shape: tuple[int, int, int], binary: bool = False
) -> torch.Tensor:
    """Sum over units of ``mask`` (units, D) as an int64 image (C, H, W).

    With path counts (:func:`effective_mask`) each input gets its total number of paths
    to the layer; with ``binary=True`` (or a bool mask) the number of units it reaches.
    """
    rows = _unit_rows(mask)  # (units, D) bool; validates
    channels, height, width = _check_shape(shape, rows.shape[1])
    counts = rows if binary else mask
    return counts.sum(dim=0, dtype=torch.int64).reshape(channels, height, width)


QUIET_FRACTION = 0.1  # a pixel is quiet when its sd is below 10% of the median pixel's


def quiet_pixels(
    images: torch.Tensor, shape: tuple[int, int, int], fraction: float = QUIET_FRACTION
) -> torch.Tensor:
    """(H, W) bool: pixels whose sd over ``images`` (n, D), in every channel, is below
    ``fraction`` of the median pixel's sd (scale-free, so raw bytes and standardised
    inputs agree). A quiet pixel barely varies (an image border that is nearly always
    black): a connection to it acts like a bias, not a view of the image."""
    if images.dim() != 2 or images.shape[0] < 2:
        raise ValueError(
            f"The 'images' parameter must be (n >= 2, D). Got shape {tuple(images.shape)}."
        )
    channels, height, width = _check_shape(shape, images.shape[1])
    sd = images.double().std(dim=0).reshape(channels, height, width).amax(dim=0)
    return sd < fraction * sd.median()


def ipr(w: torch.Tensor) -> torch.Tensor:
    """Inverse participation ratio of every row of ``w`` (units, N): sum w^4 / (sum w^2)^2.

    1/n for n equal entries and zeros elsewhere (delocalised), 1 for a single entry.
    Zero entries add nothing, so the IPR of a masked row is that of its alive entries.
    Rows that are all zero give nan. Computed in float64; returns (units,).
    """
    if w.dim() != 2:
        raise ValueError(f"The 'w' parameter must be 2-D (units, N). Got shape {tuple(w.shape)}.")
    w = w.detach().to(torch.float64)
    # Scaling each row by its largest |entry| leaves the ratio unchanged and keeps
    # w^4 clear of underflow and overflow.
    scale = w.abs().amax(dim=1, keepdim=True) if w.shape[1] else w.new_ones(w.shape[0], 1)
    v = w / scale  # (units, N); rows of zeros become nan
    sq = v.square()
    return sq.square().sum(dim=1) / sq.sum(dim=1).square()


def ipr_null(n: int | torch.Tensor) -> float | torch.Tensor:
    """Exact expected IPR of a vector of ``n`` iid Gaussian entries: 3 / (n + 2).

    Derived, not sampled: w = r u with r = |w| independent of u uniform on the sphere,
    so E[w_i^4] = 3 = E[r^4] E[u_i^4] with E[r^4] = n (n + 2), and
    E[IPR] = n E[u_i^4] = 3 / (n + 2) (about 3/n; 1 at n = 1). Use n = C_in to get the
    null of a masked unit. nan where n = 0.
    """
    if isinstance(n, torch.Tensor):
        if n.is_floating_point() or n.is_complex() or (n.numel() and n.min().item() < 0):
            raise ValueError(f"The 'n' parameter must hold integers >= 0. Got {n}.")
        n64 = n.to(torch.float64)
        return torch.where(n64 > 0, 3.0 / (n64 + 2.0), torch.full_like(n64, float("nan")))
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"The 'n' parameter must be an int >= 0. Got {n!r}.")
    return 3.0 / (n + 2) if n > 0 else float("nan")


def ipr_reading(weights: torch.Tensor, c_in: torch.Tensor):
    """The mean IPR of the connected units' weights (rows of ``weights``, (units, D),
    with ``c_in`` > 0), bootstrapped over units, beside the null matched to those units:
    the mean over them of 3/(C_in + 2), the IPR of C_in Gaussian weights (a unit's IPR
    can only be read against the inputs it has). The one place this reading is
    computed."""
    from imprint.analysis.uncertainty import mean_reading

    alive = c_in > 0
    null = ipr_null(c_in[alive].long().cpu())
    assert isinstance(null, torch.Tensor)
    return mean_reading(ipr(weights[alive]), null=float(null.mean()) if null.numel() else math.nan)


def ipr_excess_reading(weights: torch.Tensor, c_in: torch.Tensor):
    """The mean over connected units of IPR - 3/(C_in + 2), each unit against its own
    null, bootstrapped over the same units (0: as Gaussian weights on the unit's inputs;
    > 0: concentrated on fewer inputs than it has)."""
    from imprint.analysis.uncertainty import mean_reading

    alive = c_in > 0
    null = ipr_null(c_in[alive].long().cpu())
    assert isinstance(null, torch.Tensor)
    return mean_reading(ipr(weights[alive]).cpu() - null, null=0.0)
