"""SynFlow (Tanaka et al., NeurIPS 2020): iterative, data-free synaptic flow.

Every weight and bias is replaced by its absolute value, BN runs in evaluation mode
(its running averages: the identity up to epsilon at initialisation), an all-ones
input goes through, R = sum of the outputs, and score = dR/dw * w of every weight.
Round r prunes the dense initial net to round r's weight count
(:meth:`RoundInputs.weight_target`) in ``ITERATIONS`` steps, the k-th to density
d^(k/n) of that target, recomputing the scores each time; training starts from the
initial weights (signs restored).

As the paper and its reference code (prune_bias off by default), weights alone are
scored and pruned; biases all stay. Where imprint differs from the reference code: the
count is kept per layer (IMP's layer-wise density axis; the reference ranks all layers
together), and the forward pass is in float64.
"""

from __future__ import annotations

import torch

from imprint.procedures.base import Procedure, RoundInputs, start_from_init
from imprint.procedures.gradients import as_scores, masked_model, parameters
from imprint.prune import Masks, prune_weights_by_scores, weight_counts

ITERATIONS = 100  # as the SynFlow paper


def synflow_scores(inputs: RoundInputs, masks: Masks) -> dict[str, torch.Tensor]:
    """dR/dw * w of the |w| net under ``masks``, all-ones input, BN in evaluation mode."""
    state = {
        name: value.abs() if name.startswith("layers.") else value
        for name, value in inputs.init_state.items()
    }
    model = masked_model(inputs, state, masks)
    model.eval()
    params = parameters(model, inputs.layers)
    ones = torch.ones(
        1, inputs.data.input_dim, dtype=torch.float64, device=inputs.data.x_train.device
    )
    grads = torch.autograd.grad(model(ones).sum(), list(params.values()))
    return as_scores({name: g * p for (name, p), g in zip(params.items(), grads)}, masks)


def _steps(
    target: dict[int, int] | int, totals: dict[int, int] | int, k: int
) -> dict[int, int] | int:
    """Entries kept after step k of ITERATIONS: density (keep / total)^(k / n)."""
    share = k / ITERATIONS
    if isinstance(target, int):
        assert isinstance(totals, int)
        return round(totals * (target / totals) ** share) if totals else 0
    assert isinstance(totals, dict)
    return {
        layer: round(totals[layer] * (target[layer] / totals[layer]) ** share)
        if totals[layer]
        else 0
        for layer in target
    }


def _mask(inputs: RoundInputs) -> Masks:
    target = inputs.weight_target()
    scope = "global" if isinstance(target, int) else "layer"
    masks = inputs.dense_masks()
    counts = weight_counts(masks, inputs.layers)
    totals: dict[int, int] | int = sum(counts.values()) if isinstance(target, int) else counts
    for k in range(1, ITERATIONS + 1):
        keep = target if k == ITERATIONS else _steps(target, totals, k)
        masks = prune_weights_by_scores(
            synflow_scores(inputs, masks), masks, keep=keep, scope=scope
        )
    return masks


SYNFLOW = Procedure(
    "synflow",
    f"SynFlow: data-free iterative synaptic-flow scores ({ITERATIONS} iterations per round), "
    "train from the initial weights",
    _mask,
    start_from_init,
)
