"""Node ablation: remove first-layer units and evaluate without retraining."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from imprint.model import FCN

__all__ = ["AblationCurve", "ablation_order", "node_ablation", "ABLATION_MODES"]

ABLATION_MODES = ("most", "least", "random")


@dataclass(frozen=True)
class AblationCurve:
    mode: str  # which units go first: most, least connected, or random
    removed: list[int]  # s, the number of units removed
    top1: list[float]  # validation top-1 after removing s units


def ablation_order(c_in: torch.Tensor, mode: str, seed: int = 0) -> torch.Tensor:
    """The order in which units are removed (ties by unit index)."""
    if mode == "most":
        return torch.argsort(-c_in.long().cpu(), stable=True)
    if mode == "least":
        return torch.argsort(c_in.long().cpu(), stable=True)
    if mode == "random":
        return torch.randperm(c_in.numel(), generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"The 'mode' parameter must be one of {ABLATION_MODES}. Got {mode!r}.")


@torch.no_grad()
def node_ablation(
    model: FCN,
    top1_of: Callable[[FCN], float],
    c_in: torch.Tensor,
    removed: list[int],
    mode: str = "most",
    seed: int = 0,
) -> AblationCurve:
    """Zero the incoming weights and bias of the first s units (in ``mode`` order) of the
    first layer, so each removed unit outputs 0, and measure ``top1_of`` the model so
    ablated (the caller's evaluation: validation top-1); ``model`` is not modified."""
    order = ablation_order(c_in, mode, seed)
    n_units = c_in.numel()
    for s in removed:
        if not 0 <= s <= n_units:
            raise ValueError(f"The 'removed' parameter entries must be in [0, {n_units}]. Got {s}.")
    probe = copy.deepcopy(model)
    weight, bias = probe.layers[0].weight, probe.layers[0].bias
    original_w, original_b = weight.clone(), bias.clone()
    top1 = []
    for s in removed:
        weight.copy_(original_w)
        bias.copy_(original_b)
        gone = order[:s].to(weight.device)
        weight[gone] = 0
        bias[gone] = 0
        top1.append(top1_of(probe))
    return AblationCurve(mode, list(removed), top1)
