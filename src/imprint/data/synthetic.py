"""The built-in classification task: classes of NLGP (or clone) images that differ in
their correlation lengths (xi_x, xi_y)."""

from __future__ import annotations

import torch

from imprint.config import NLGPData
from imprint.data import ImageData
from imprint.data.nlgp import sample_gaussian_clone, sample_nlgp

__all__ = ["make_nlgp_dataset"]


def make_nlgp_dataset(config: NLGPData) -> ImageData:
    """Balanced classes, shuffled; training and validation sets drawn independently."""
    shape = (config.channels, config.height, config.width)
    sampler = sample_nlgp if config.process == "nlgp" else sample_gaussian_clone
    gen = torch.Generator().manual_seed(config.seed)
    n_classes = len(config.class_xi)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        counts = [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]
        xs = [
            sampler(count, shape, xi, config.gain, gen, rho=config.channel_correlation)
            for count, xi in zip(counts, config.class_xi)
        ]
        ys = [torch.full((count,), c, dtype=torch.int64) for c, count in enumerate(counts)]
        order = torch.randperm(n, generator=gen)
        return torch.cat(xs)[order], torch.cat(ys)[order]  # (n, D), (n,)

    x_train, y_train = draw(config.n_train)
    x_val, y_val = draw(config.n_val)
    return ImageData(x_train, y_train, x_val, y_val, shape=shape, num_classes=n_classes)
