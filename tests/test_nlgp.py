from __future__ import annotations

import math

import pytest
import torch

from imprint.config import NLGPData
from imprint.data import load_dataset, pixel_permutation
from imprint.data.nlgp import (
    latent_kernel,
    nlgp_covariance,
    nlgp_gamma,
    sample_gaussian_clone,
    sample_nlgp,
)


@pytest.mark.parametrize("gain", [0.5, 3.0, 10.0])
def test_nlgp_pixels_have_unit_variance(gain, seed):
    gen = torch.Generator().manual_seed(seed)
    x = sample_nlgp(20_000, (2, 6, 6), (0.7, 3.0), gain, gen, rho=0.3)
    assert x.shape == (20_000, 72) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.02
    assert (x.var(dim=0) - 1).abs().max().item() < 0.06


def test_large_gain_is_nearly_binary():
    gen = torch.Generator().manual_seed(0)
    x = sample_nlgp(2000, (1, 8, 8), (1.0, 1.0), 100.0, gen)
    # pixels sit near +-1/sqrt(gamma)
    assert ((x.abs() - 1 / math.sqrt(nlgp_gamma(100.0))).abs() < 0.1).float().mean() > 0.9


def test_clone_covariance_matches_nlgp(seed):
    gen = torch.Generator().manual_seed(seed)
    shape, xi, gain = (1, 6, 6), (0.7, 3.0), 10.0
    x = sample_nlgp(40_000, shape, xi, gain, gen).double()
    g = sample_gaussian_clone(40_000, shape, xi, gain, gen).double()
    exact = nlgp_covariance(latent_kernel(*shape, xi_x=xi[0], xi_y=xi[1]), gain)
    assert (torch.cov(x.T) - exact).abs().max() < 0.05
    assert (torch.cov(g.T) - exact).abs().max() < 0.05
    # ...and the clone is Gaussian (no excess kurtosis), the NLGP at g = 10 is not.
    kurt = lambda v: ((v - v.mean(0)) ** 4).mean(0) / v.var(0) ** 2 - 3  # noqa: E731
    assert kurt(g).abs().mean() < 0.1
    assert kurt(x).mean() < -1.0


def test_anisotropic_correlation_lengths():
    gen = torch.Generator().manual_seed(0)
    x = sample_nlgp(5000, (1, 8, 8), (3.0, 0.7), 10.0, gen).reshape(-1, 8, 8)
    horizontal = (x[:, :, 1:] * x[:, :, :-1]).mean()  # neighbours along x
    vertical = (x[:, 1:, :] * x[:, :-1, :]).mean()
    assert horizontal > 0.7 and vertical < 0.4


def test_dataset_is_seeded_balanced_and_permutable():
    config = NLGPData(height=6, width=5, n_train=403, n_val=100, seed=3)
    a, b = load_dataset(config), load_dataset(config)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert a.shape == (1, 6, 5) and a.x_train.shape == (403, 30) and a.num_classes == 4
    assert torch.bincount(a.y_train).tolist() == [101, 101, 101, 100]
    p = load_dataset(config.model_copy(update={"permute_pixels": True}))
    perm = pixel_permutation(30, 3)
    assert torch.equal(p.permutation, perm)
    assert torch.equal(p.x_train, a.x_train[:, perm])
    inverse = torch.argsort(perm)
    assert torch.equal(p.x_train[:, inverse], a.x_train)
    assert not torch.equal(perm, torch.arange(30))
