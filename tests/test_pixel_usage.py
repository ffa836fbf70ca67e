"""The locality index over pixel usage (lambda_pix): its null is the configuration model
(each unit's C_in and each pixel's connections kept), checked against curveball trades;
masks that crowd the centre but pair at random read lambda > 0 and lambda_pix ~ 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint.analysis.locality import neighbour_locality, neighbour_pairs
from imprint.analysis.maps import mass_within_radius_null
from imprint.readings.pixel_usage import (
    pixel_usage_enrichment,
    pixel_usage_locality,
    pixel_usage_null,
)

pytestmark = pytest.mark.numerics

SHAPE = (1, 12, 12)


def _centre_crowded(units: int, c_in: int, seed: int, width: float = 2.5) -> torch.Tensor:
    """Each unit draws c_in distinct pixels with probability ~ a Gaussian blob in the
    centre: heavy pixel-usage structure, no pairing of neighbours."""
    gen = np.random.default_rng(seed)
    _, h, w = SHAPE
    y, x = np.mgrid[0:h, 0:w]
    p = np.exp(-(((y - h / 2 + 0.5) ** 2 + (x - w / 2 + 0.5) ** 2) / (2 * width**2))).ravel()
    p /= p.sum()
    mask = np.zeros((units, h * w), dtype=bool)
    for k in range(units):
        mask[k, gen.choice(h * w, size=c_in, replace=False, p=p)] = True
    return torch.from_numpy(mask)


def _curveball(mask: torch.Tensor, trades: int, seed: int) -> torch.Tensor:
    """A degree-preserving randomisation (Strona et al.'s curveball): two units swap a
    random share of the inputs only one of them has. Row and column sums are kept."""
    gen = np.random.default_rng(seed)
    rows = [set(np.flatnonzero(r)) for r in mask.numpy()]
    for _ in range(trades):
        a, b = gen.choice(len(rows), size=2, replace=False)
        only_a, only_b = list(rows[a] - rows[b]), list(rows[b] - rows[a])
        pool = only_a + only_b
        if not only_a or not only_b:
            continue
        gen.shuffle(pool)
        new_a = set(pool[: len(only_a)])
        rows[a] = (rows[a] - set(only_a)) | new_a
        rows[b] = (rows[b] - set(only_b)) | set(pool[len(only_a) :])
    out = np.zeros_like(mask.numpy())
    for k, r in enumerate(rows):
        out[k, sorted(r)] = True
    return torch.from_numpy(out)


def test_equal_pixel_degrees_give_the_uniform_null():
    degrees = torch.full((144,), 3.0)
    assert pixel_usage_null(degrees, SHAPE).item() == pytest.approx(
        mass_within_radius_null(SHAPE, 1.5), rel=1e-12
    )
    batch = pixel_usage_null(torch.stack([degrees, 2 * degrees]), SHAPE)
    assert batch.shape == (2,) and torch.allclose(batch, batch[:1].expand(2))


def test_the_null_is_the_mean_over_degree_preserving_randomisations():
    """f_pix (an approximation) against the mean neighbour fraction of 60 curveball
    randomisations of a centre-crowded mask: within 3% of it."""
    mask = _centre_crowded(80, 6, seed=1)
    fractions = []
    current = mask
    for draw in range(60):
        current = _curveball(current, 400, seed=draw)
        assert torch.equal(current.sum(0), mask.sum(0)) and torch.equal(current.sum(1), mask.sum(1))
        near, pairs = neighbour_pairs(current, SHAPE)
        fractions.append((near.sum() / pairs.sum()).item())
    f_pix = pixel_usage_null(mask.sum(0).double(), SHAPE).item()
    assert np.mean(fractions) == pytest.approx(f_pix, rel=0.03)
    # and far from the uniform null: pixel usage alone raises f
    assert f_pix > 2 * mass_within_radius_null(SHAPE, 1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_centre_crowded_random_pairs_read_local_but_not_beyond_pixel_usage(seed):
    mask = _centre_crowded(120, 6, seed)
    plain = neighbour_locality(mask, SHAPE)
    pix = pixel_usage_locality(mask, SHAPE)
    assert plain.value > 3 * plain.sd > 0  # the uniform null is fooled
    assert abs(pix.value) < 3 * pix.sd + 0.01  # the pixel-usage null is not
    assert pix.low < 0.0 < pix.high or abs(pix.value) < 0.01


def test_configuration_model_masks_read_zero():
    mask = _curveball(_centre_crowded(120, 6, seed=5), 20_000, seed=9)
    pix = pixel_usage_locality(mask, SHAPE)
    assert abs(pix.value) < 3 * pix.sd + 0.01


def test_neighbour_pairs_read_near_one():
    """Every unit holds two adjacent pixels, anywhere: lambda_pix close to 1."""
    gen = torch.Generator().manual_seed(3)
    mask = torch.zeros(100, 144, dtype=torch.bool)
    for k in range(100):
        y, x = torch.randint(0, 12, (2,), generator=gen).tolist()
        mask[k, y * 12 + x] = True
        mask[k, y * 12 + (x + 1 if x < 11 else x - 1)] = True
    pix = pixel_usage_locality(mask, SHAPE)
    assert pix.value > 0.9 and pix.n == 100


def test_too_few_pairs_has_no_number():
    mask = torch.zeros(10, 144, dtype=torch.bool)
    mask[:, 0] = True
    assert pixel_usage_locality(mask, SHAPE).reason.startswith("too few pairs")


def test_enrichment_over_pixel_usage_is_f_over_f_pix():
    mask = _centre_crowded(120, 6, seed=4)
    near, pairs = neighbour_pairs(mask, SHAPE)
    f = (near.sum() / pairs.sum()).item()
    f_pix = pixel_usage_null(mask.sum(0).double(), SHAPE).item()
    reading = pixel_usage_enrichment(mask, SHAPE)
    assert reading.value == pytest.approx(f / f_pix, rel=1e-12) and reading.null == 1.0
    assert abs(reading.value - 1) < 3 * reading.sd + 0.02  # random pairing: about 1
    lam = pixel_usage_locality(mask, SHAPE)
    assert lam.value == pytest.approx((f - f_pix) / (1 - f_pix), rel=1e-9)


def test_the_expected_map_holds_the_pairs_spread_as_pixel_usage_gives():
    """The expected S_sc map sums to the mask's pairs; its mass within 1.5 px is f_pix
    of them; over curveball randomisations the observed maps average to it."""
    from imprint.analysis.maps import locality_maps
    from imprint.readings.pixel_usage import pixel_usage_map

    mask = _centre_crowded(80, 6, seed=2)
    expected = pixel_usage_map(mask, SHAPE)
    _, pairs = neighbour_pairs(mask, SHAPE)
    assert expected.sum().item() == pytest.approx(pairs.sum().item())
    dy, dx = torch.meshgrid(torch.arange(-11, 12), torch.arange(-11, 12), indexing="ij")
    near = (dy**2 + dx**2 <= 1.5**2) & ((dy != 0) | (dx != 0))
    f_pix = pixel_usage_null(mask.sum(0).double(), SHAPE).item()
    assert (expected[near].sum() / expected.sum()).item() == pytest.approx(f_pix, rel=1e-12)
    total = torch.zeros_like(expected)
    current = mask
    for draw in range(40):
        current = _curveball(current, 400, seed=100 + draw)
        total += locality_maps(current, SHAPE).s_sc.double()
    observed = total / 40
    centre = (dy.abs() <= 4) & (dx.abs() <= 4) & ((dy != 0) | (dx != 0))
    assert observed[centre].sum().item() == pytest.approx(expected[centre].sum().item(), rel=0.05)
