"""GraSP (Wang et al., ICLR 2020): gradient signal preservation at initialisation.

With g = dL/dw on one minibatch and H g the Hessian-gradient product (double
backpropagation), the paper removes the connections of highest -w * (H g);
equivalently, round r keeps the highest w * (H g) at round r's density, for the dense
initial net, and trains from the initial weights. The scores do not change across
rounds, so the masks are nested.

Options ([prune.options]): ``temperature`` divides the logits before the loss whose
Hessian-gradient product is taken (the authors' code uses T = 200; the default here, 1,
is the training loss).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from imprint.data.base import StrictSection
from imprint.procedures.base import Procedure, RoundInputs, start_from_init
from imprint.procedures.gradients import (
    as_scores,
    cross_entropy,
    masked_model,
    parameters,
    score_batch,
)
from imprint.prune import Masks


class GraspOptions(StrictSection):
    """GraSP's [prune.options]."""

    temperature: Annotated[float, Field(gt=0.0)] = 1.0  # divides the logits


def hessian_gradient(
    inputs: RoundInputs,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(w, H g) of the pruned layers' weights and biases at initialisation."""
    dense = inputs.dense_masks()
    model = masked_model(inputs, inputs.init_state, dense)
    params = parameters(model, inputs.layers)
    x, y = score_batch(inputs)
    temperature = inputs.options.temperature if inputs.options is not None else 1.0
    grads = torch.autograd.grad(
        cross_entropy(model, x, y, temperature), list(params.values()), create_graph=True
    )
    # H g = d/dw (g . stop_gradient(g))
    dot = torch.stack([(g * g.detach()).sum() for g in grads]).sum()
    hg = torch.autograd.grad(dot, list(params.values()))
    weights = {name: p.detach() for name, p in params.items()}
    return weights, dict(zip(params, hg))


def grasp_scores(inputs: RoundInputs) -> dict[str, torch.Tensor]:
    weights, hg = hessian_gradient(inputs)
    return as_scores({name: weights[name] * hg[name] for name in weights}, inputs.dense_masks())


def _mask(inputs: RoundInputs) -> Masks:
    return inputs.keep_highest(grasp_scores(inputs))


GRASP = Procedure(
    "grasp",
    "GraSP: keep the highest w * (H g) at initialisation, train from the initial weights",
    _mask,
    start_from_init,
    options=GraspOptions,
)
