"""The non-linear Gaussian process (NLGP) of Ingrosso & Goldt, and its Gaussian clone.

A latent Gaussian field z ~ N(0, C) with separable covariance C = K_y (x) K_x,
K_ij = exp(-(i - j)^2 / xi^2), is squashed pixel by pixel:

    x = erf(g z / sqrt 2) / sqrt(gamma),   gamma = (2 / pi) arcsin(g^2 / (1 + g^2)),

so every pixel has unit variance. g -> 0 is Gaussian; large g gives nearly binary,
sharp-edged images. The Gaussian clone has exactly the NLGP's covariance,

    Sigma = (2 / (pi gamma)) arcsin(g^2 C / (1 + g^2)),

and no higher cumulants. Colour images share the latent field across channels with
a correlation ``rho`` (C = K_c (x) K_y (x) K_x, K_c = (1 - rho) I + rho 11^T).
"""

from __future__ import annotations

import math

import torch

__all__ = ["latent_kernel", "nlgp_gamma", "nlgp_covariance", "sample_nlgp", "sample_gaussian_clone"]

_JITTER = 1e-6  # keeps the Cholesky factor of nearly singular kernels (large xi) finite


def _kernel_1d(n: int, xi: float) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    return torch.exp(-((i[:, None] - i[None, :]) ** 2) / xi**2)  # (n, n)


def latent_kernel(
    channels: int, height: int, width: int, xi_x: float, xi_y: float, rho: float = 0.0
) -> torch.Tensor:
    """Covariance C of the latent field, (D, D) float64, channel-major like the images."""
    k_c = (1.0 - rho) * torch.eye(channels, dtype=torch.float64) + rho
    return torch.kron(torch.kron(k_c, _kernel_1d(height, xi_y)), _kernel_1d(width, xi_x))


def nlgp_gamma(gain: float) -> float:
    """Variance of erf(g z / sqrt 2) for z ~ N(0, 1)."""
    return (2.0 / math.pi) * math.asin(gain**2 / (1.0 + gain**2))


def nlgp_covariance(latent: torch.Tensor, gain: float) -> torch.Tensor:
    """Exact covariance of the NLGP pixels given the latent covariance (unit diagonal)."""
    gamma = nlgp_gamma(gain)
    return (2.0 / (math.pi * gamma)) * torch.asin(gain**2 * latent / (1.0 + gain**2))


def _cholesky(matrix: torch.Tensor) -> torch.Tensor:
    """The Cholesky factor of a covariance; one that is not positive definite (some
    correlation lengths and gains give no valid covariance in float64) is a DataError
    naming the options, not a linear-algebra traceback."""
    from imprint.data.base import DataError

    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype)
    factor, info = torch.linalg.cholesky_ex(matrix + _JITTER * eye)
    if int(info) != 0 or not bool(torch.isfinite(factor).all()):
        raise DataError(
            "data.class_xi, data.gain and data.channel_correlation give a covariance that is "
            "not positive definite here (no Gaussian with it can be sampled): use shorter "
            "correlation lengths, a smaller image or data.process = 'nlgp'."
        )
    return factor


def _latent_samples(
    n: int, shape: tuple[int, int, int], xi: tuple[float, float], rho: float, gen: torch.Generator
) -> torch.Tensor:
    """z ~ N(0, K_c (x) K_y (x) K_x) via the separable factors: (n, C, H, W) float64."""
    channels, height, width = shape
    xi_x, xi_y = xi
    k_c = (1.0 - rho) * torch.eye(channels, dtype=torch.float64) + rho
    l_c, l_y, l_x = (_cholesky(k) for k in (k_c, _kernel_1d(height, xi_y), _kernel_1d(width, xi_x)))
    white = torch.randn((n, channels, height, width), generator=gen, dtype=torch.float64)
    return torch.einsum("cd,yv,xw,ndvw->ncyx", l_c, l_y, l_x, white)


def sample_nlgp(
    n: int,
    shape: tuple[int, int, int],
    xi: tuple[float, float],
    gain: float,
    gen: torch.Generator,
    rho: float = 0.0,
) -> torch.Tensor:
    """n NLGP images, flattened channel-major: (n, C*H*W) float32 with unit pixel variance."""
    z = _latent_samples(n, shape, xi, rho, gen)
    x = torch.erf(gain * z / math.sqrt(2.0)) / math.sqrt(nlgp_gamma(gain))
    return x.reshape(n, -1).float()


def sample_gaussian_clone(
    n: int,
    shape: tuple[int, int, int],
    xi: tuple[float, float],
    gain: float,
    gen: torch.Generator,
    rho: float = 0.0,
) -> torch.Tensor:
    """n Gaussian images with the NLGP's covariance: (n, C*H*W) float32."""
    sigma = nlgp_covariance(latent_kernel(*shape, xi_x=xi[0], xi_y=xi[1], rho=rho), gain)
    factor = _cholesky(sigma)  # (D, D)
    white = torch.randn((n, sigma.shape[0]), generator=gen, dtype=torch.float64)
    return (white @ factor.T).float()
