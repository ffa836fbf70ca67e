"""The paper's fully connected network.

FCN in -> hidden... -> classes, ReLU on hidden layers, batch normalisation on the
INPUT of every linear layer (raw pixels included): batch statistics in training,
running averages (momentum 0.01, i.e. decay 0.99) in evaluation, learnable gain
and shift per input feature. Weights are Glorot normal, biases zero.

Parameter names are the keys of masks and weight files:
``layers.{l}.weight`` (out, in), ``layers.{l}.bias`` (out,), ``norms.{l}.*``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, cast

import torch
from torch import nn

__all__ = ["FCN", "build_model"]


class FCN(nn.Module):
    def __init__(
        self,
        in_dim: int,
        hidden: list[int],
        n_classes: int,
        bn_momentum: float = 0.01,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden, n_classes]
        self.dims = dims
        # ModuleLists (registered as submodules), typed as what they hold.
        self.norms = cast(
            "Sequence[nn.BatchNorm1d]",
            nn.ModuleList(nn.BatchNorm1d(d, momentum=bn_momentum, eps=bn_eps) for d in dims[:-1]),
        )
        self.layers = cast(
            "Sequence[nn.Linear]",
            nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])),
        )

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def reset_parameters(self, gen: torch.Generator) -> None:
        """Glorot-normal weights W ~ N(0, 2 / (fan_in + fan_out)), zero biases, BN at identity."""
        with torch.no_grad():
            for layer in self.layers:
                fan_out, fan_in = layer.weight.shape
                std = math.sqrt(2.0 / (fan_in + fan_out))
                # Drawn on the CPU so the same seed gives the same net on every device.
                w = torch.randn(layer.weight.shape, generator=gen) * std
                layer.weight.copy_(w)
                layer.bias.zero_()
            for norm in self.norms:
                norm.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, in) -> logits (batch, classes)
        last = self.n_layers - 1
        for i, (norm, layer) in enumerate(zip(self.norms, self.layers)):
            x = layer(norm(x))
            if i < last:
                x = torch.relu(x)
        return x

    def hidden_preactivations(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Pre-activations of linear layer ``layer`` (evaluation mode is the caller's choice)."""
        for i, (norm, lin) in enumerate(zip(self.norms, self.layers)):
            x = lin(norm(x))
            if i == layer:
                return x
            x = torch.relu(x)
        raise IndexError(f"layer must be in [0, {self.n_layers - 1}]. Got {layer}.")


class ModelSection(Protocol):
    """What :func:`build_model` reads of a config's ``[model]`` section (an
    :class:`imprint.config.ModelConfig`, named here and not imported: config sits above)."""

    @property
    def hidden(self) -> Sequence[int]: ...

    @property
    def bn_momentum(self) -> float: ...

    @property
    def bn_eps(self) -> float: ...


def build_model(config: ModelSection, in_dim: int, n_classes: int, seed: int) -> FCN:
    """A freshly initialised FCN on the CPU; the same seed gives the same weights."""
    model = FCN(in_dim, list(config.hidden), n_classes, config.bn_momentum, config.bn_eps)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model
