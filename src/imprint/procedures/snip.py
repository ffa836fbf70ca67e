"""SNIP (Lee et al., ICLR 2019): connection sensitivity at initialisation.

score = |dL/dw * w| of every weight on one minibatch, for the dense initial net;
round r keeps the weights of highest score at round r's weight count
(:meth:`RoundInputs.weight_target`: IMP's schedule on the layer's weights, or the
reference run's weight counts) and trains from the initial weights. The scores do not
change across rounds, so the masks are nested.

As the paper and its reference code, weights alone are scored and pruned; biases all
stay. Where imprint differs from the reference code: the count is kept per layer (IMP's
layer-wise density axis; the reference ranks all layers together), the minibatch is
train.batch_size random training images (the reference: one batch of its loader), and
|g * w| is not divided by its sum (a common factor that changes no rank).
"""

from __future__ import annotations

import torch

from imprint.procedures.base import Procedure, RoundInputs, start_from_init
from imprint.procedures.gradients import (
    as_scores,
    cross_entropy,
    masked_model,
    parameters,
    score_batch,
)
from imprint.prune import Masks


def snip_scores(inputs: RoundInputs) -> dict[str, torch.Tensor]:
    """|g * w| of the pruned layers' weights, at initialisation."""
    dense = inputs.dense_masks()
    model = masked_model(inputs, inputs.init_state, dense)
    params = parameters(model, inputs.layers)
    x, y = score_batch(inputs)
    grads = torch.autograd.grad(cross_entropy(model, x, y), list(params.values()))
    return as_scores({name: (g * p).abs() for (name, p), g in zip(params.items(), grads)}, dense)


def _mask(inputs: RoundInputs) -> Masks:
    return inputs.keep_highest_weights(snip_scores(inputs))


SNIP = Procedure(
    "snip",
    "SNIP: |dL/dw * w| at initialisation on one minibatch, train from the initial weights",
    _mask,
    start_from_init,
)
