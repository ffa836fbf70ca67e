"""The autograd path: gradients of arbitrary losses with respect to a masked FCN's
weights, for the criteria that score connections by them (SNIP, GraSP,
SynFlow). The training loop keeps its hand-written step (imprint.engine); these run
a few forward and backward passes per round, where clarity matters more than speed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from imprint.model import FCN, build_model
from imprint.procedures.base import RoundInputs
from imprint.prune import Masks, apply_masks, layer_names

__all__ = ["masked_model", "score_batch", "parameters", "cross_entropy", "as_scores"]


def masked_model(inputs: RoundInputs, state: Mapping[str, torch.Tensor], masks: Masks) -> FCN:
    """An FCN holding ``state`` x ``masks`` (float64, on the data's device)."""
    data = inputs.data
    model = build_model(inputs.config.model, data.input_dim, data.num_classes, seed=0)
    model.load_state_dict(apply_masks(state, masks))
    return model.to(device=data.x_train.device, dtype=torch.float64)


def score_batch(
    inputs: RoundInputs, per_class: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of normalised training images and their labels, the same in every round
    (its own seed stream), so that scores are too: ``train.batch_size`` images drawn at
    random, or ``per_class`` images of every class (drawn without replacement within
    the class, all of a class that has fewer), as GraSP's reference code samples."""
    data = inputs.data
    gen = inputs.generator("scores", round_index=0)
    if per_class is None:
        n = min(inputs.config.train.batch_size, data.x_train.shape[0])
        idx = torch.randint(data.x_train.shape[0], (n,), generator=gen).to(data.x_train.device)
    else:
        labels = data.y_train.cpu()
        picked = []
        for label in range(data.num_classes):
            members = torch.nonzero(labels == label).flatten()
            order = torch.randperm(members.numel(), generator=gen)[:per_class]
            picked.append(members[order])
        idx = torch.cat(picked).to(data.x_train.device)
    x = data.normalize(data.x_train.index_select(0, idx)).to(torch.float64)
    return x, data.y_train.index_select(0, idx)


def parameters(model: FCN, layers: list[int]) -> dict[str, torch.nn.Parameter]:
    """The weights of ``layers`` (not their biases: the criteria score weights alone, as
    their papers and reference code), by state-dict name."""
    named = dict(model.named_parameters())
    return {layer_names(layer)[0]: named[layer_names(layer)[0]] for layer in layers}


def cross_entropy(
    model: FCN, x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The training loss on (x, y), BN with batch statistics (training mode), the logits
    divided by ``temperature`` first (1: the loss that trains)."""
    model.train()
    return F.cross_entropy(model(x) / temperature, y)


def as_scores(values: Mapping[str, torch.Tensor], masks: Masks) -> dict[str, torch.Tensor]:
    """CPU float64 scores, zero on entries already pruned (they stay dead whatever
    their score: prune_by_scores ranks alive entries only)."""
    out = {}
    for name, value in values.items():
        score = value.detach().to("cpu", torch.float64)
        out[name] = torch.where(masks[name].cpu(), score, torch.zeros_like(score))
    return out
