"""GraSP (Wang et al., ICLR 2020): gradient signal preservation at initialisation.

With g = dL/dw on a class-balanced batch and H g the Hessian-gradient product (double
backpropagation, over the weights), the paper removes the weights of highest
-w * (H g); equivalently, round r keeps the weights of highest w * (H g) at round r's
weight count (:meth:`RoundInputs.weight_target`), for the dense initial net, and trains
from the initial weights. The scores do not change across rounds, so the masks are
nested.

As the authors' code: weights alone are scored and pruned (biases all stay), the logits
are divided by a temperature T = 200 before the loss (``temperature``), and the batch
holds 25 training images of every class (``samples_per_class``); both are
[prune.options]. Where imprint differs from the reference code: the count is kept per
layer (IMP's layer-wise density axis; the reference ranks all layers together), the
class-balanced batch goes through the net in one piece (the reference splits it in two
halves, each with its own BN batch statistics, and sums their gradients), and the
scores are not divided by their sum (a common factor that changes no rank).
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

    temperature: Annotated[float, Field(gt=0.0)] = 200.0  # divides the logits
    # a class-balanced scoring batch of this many images per class; None: one random
    # batch of train.batch_size
    samples_per_class: Annotated[int, Field(gt=0)] | None = 25


def hessian_gradient(
    inputs: RoundInputs,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(w, H g) of the pruned layers' weights at initialisation."""
    dense = inputs.dense_masks()
    model = masked_model(inputs, inputs.init_state, dense)
    params = parameters(model, inputs.layers)
    options = inputs.options if inputs.options is not None else GraspOptions()
    x, y = score_batch(inputs, options.samples_per_class)
    temperature = options.temperature
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
    return inputs.keep_highest_weights(grasp_scores(inputs))


GRASP = Procedure(
    "grasp",
    "GraSP: keep the highest w * (H g) at initialisation, train from the initial weights",
    _mask,
    start_from_init,
    options=GraspOptions,
)
