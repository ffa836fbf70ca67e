"""SNIP, GraSP and SynFlow against independent re-implementations written from their
papers and their reference code's conventions (weights only, GraSP's temperature and
removal of the highest -w * Hg, SynFlow's |w| net, all-ones input and exponential
schedule), in plain functional torch on a tiny net with fixed weights and data. Each
compares the round's mask itself, so a sign, a ranking direction, a missing |w| or a
bias counted as a weight changes the answer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from imprint.procedures import RoundInputs, get_procedure
from imprint.procedures.gradients import score_batch
from tests.conftest import round_inputs, smoke_config

INDEX = 4  # round 4: 24% of each hidden layer's weights kept
WEIGHTS = ("layers.0.weight", "layers.1.weight")  # the pruned layers (output dense)


def _inputs(config) -> RoundInputs:
    return round_inputs(config, INDEX, options=True)


def _forward(state, weights, x, *, train, eps):
    """The FCN (BN on the input of every linear layer, ReLU between) in plain ops;
    ``weights`` replaces the state's weight matrices (biases from ``state``)."""
    n = sum(1 for k in state if k.startswith("layers.") and k.endswith(".weight"))
    h = x
    for layer in range(n):
        if train:
            mean, var = h.mean(0), h.var(0, unbiased=False)
        else:
            mean = state[f"norms.{layer}.running_mean"]
            var = state[f"norms.{layer}.running_var"]
        h = (h - mean) / torch.sqrt(var + eps)
        h = h * state[f"norms.{layer}.weight"] + state[f"norms.{layer}.bias"]
        h = h @ weights[f"layers.{layer}.weight"].T + state[f"layers.{layer}.bias"]
        if layer < n - 1:
            h = torch.relu(h)
    return h


def _count(total: int, rate: float, rounds: int) -> int:
    """IMP's layer-wise schedule: round(rate x alive) removed per round."""
    for _ in range(rounds):
        total -= round(rate * total)
    return total


def _keep_top(score: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest entries (scores here have no ties at the threshold)."""
    flat = torch.zeros(score.numel(), dtype=torch.bool)
    flat[torch.topk(score.flatten(), k).indices] = True
    return flat.view(score.shape)


def _state64(inputs):
    return {k: v.to(torch.float64).clone() for k, v in inputs.init_state.items()}


def _targets(inputs):
    rate = inputs.config.prune.fraction
    return {name: _count(inputs.init_state[name].numel(), rate, INDEX) for name in WEIGHTS}


def _check(inputs, expected):
    masks = get_procedure(inputs.config.prune.procedure).mask(inputs)
    for name in WEIGHTS:
        assert torch.equal(masks[name], expected[name]), name
        bias = name.replace("weight", "bias")
        assert bool(masks[bias].all())  # biases are never pruned
    assert torch.equal(masks["layers.2.weight"], torch.ones_like(masks["layers.2.weight"]))


def test_snip_keeps_the_highest_connection_sensitivity():
    """Lee et al. 2019: s = |dL/dw * w| on a minibatch at initialisation; the k highest
    weights stay."""
    inputs = _inputs(smoke_config("prune.procedure=snip"))
    x, y = score_batch(inputs)
    state = _state64(inputs)
    weights = {k: state[k].clone().requires_grad_(True) for k in WEIGHTS + ("layers.2.weight",)}
    eps = inputs.config.model.bn_eps
    loss = F.cross_entropy(_forward(state, weights, x, train=True, eps=eps), y)
    grads = torch.autograd.grad(loss, [weights[k] for k in WEIGHTS])
    targets = _targets(inputs)
    expected = {
        name: _keep_top((g * weights[name]).abs().detach(), targets[name])
        for name, g in zip(WEIGHTS, grads)
    }
    _check(inputs, expected)


@pytest.mark.parametrize("temperature", [200.0, 1.0])
def test_grasp_removes_the_highest_minus_w_hg(temperature):
    """Wang et al. 2020 and the authors' code: g from the loss of logits / T on a
    class-balanced batch (25 per class), z = sum(g . grad_f) with grad_f differentiable,
    Hg = dz/dw over the weights; score -w * Hg, the highest removed."""
    config = smoke_config("prune.procedure=grasp", f"prune.options.temperature={temperature}")
    inputs = _inputs(config)
    x, y = score_batch(inputs, 25)
    assert torch.bincount(y).tolist() == [25, 25]
    state = _state64(inputs)
    weights = {k: state[k].clone().requires_grad_(True) for k in WEIGHTS + ("layers.2.weight",)}
    eps = config.model.bn_eps

    def loss():
        return F.cross_entropy(_forward(state, weights, x, train=True, eps=eps) / temperature, y)

    g = torch.autograd.grad(loss(), [weights[k] for k in WEIGHTS])
    grad_f = torch.autograd.grad(loss(), [weights[k] for k in WEIGHTS], create_graph=True)
    z = sum((a.detach() * b).sum() for a, b in zip(g, grad_f))
    hg = torch.autograd.grad(z, [weights[k] for k in WEIGHTS])
    targets = _targets(inputs)
    expected = {}
    for name, h in zip(WEIGHTS, hg):
        score = -weights[name].detach() * h
        removed = ~_keep_top(score, score.numel() - targets[name])  # the highest go
        expected[name] = removed
    _check(inputs, expected)


def test_synflow_iterates_on_the_absolute_net():
    """Tanaka et al. 2020 and Synaptic-Flow's pruners: every parameter replaced by its
    absolute value, BN in evaluation mode, R = sum of the outputs on an all-ones input,
    score |dR/dw * w| of the alive weights, 100 steps to density d^(k/100)."""
    inputs = _inputs(smoke_config("prune.procedure=synflow"))
    state = {k: v.abs() for k, v in _state64(inputs).items()}
    eps = inputs.config.model.bn_eps
    masks = {k: torch.ones_like(state[k], dtype=torch.bool) for k in WEIGHTS}
    targets = _targets(inputs)
    ones = torch.ones(1, inputs.data.input_dim, dtype=torch.float64)
    n = 100
    for k in range(1, n + 1):
        weights = {
            name: (state[name] * masks[name] if name in masks else state[name]).requires_grad_(True)
            for name in WEIGHTS + ("layers.2.weight",)
        }
        r = _forward(state, weights, ones, train=False, eps=eps).sum()
        grads = torch.autograd.grad(r, [weights[name] for name in WEIGHTS])
        for name, g in zip(WEIGHTS, grads):
            total = state[name].numel()
            keep = round(total * (targets[name] / total) ** (k / n)) if k < n else targets[name]
            score = (g * weights[name]).abs().detach()
            score = torch.where(masks[name], score, torch.full_like(score, -math.inf))
            masks[name] = _keep_top(score, keep)
    _check(inputs, masks)
