"""Readings with uncertainty: the neighbour locality index against a pair loop, its
closed forms, and the bootstrap helpers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from imprint.analysis.locality import (
    MIN_PAIRS,
    neighbour_locality,
    neighbour_pairs,
)
from imprint.analysis.maps import locality_maps, mass_within_radius, mass_within_radius_null
from imprint.analysis.uncertainty import (
    Reading,
    across_seeds,
    bootstrap_counts,
    mean_reading,
    ratio_reading,
    reading_from_columns,
)

pytestmark = pytest.mark.numerics


def _pair_loop(mask: torch.Tensor, shape: tuple[int, int, int], radius: float):
    """Brute force: every ordered pair of distinct same-channel inputs of every unit."""
    channels, height, width = shape
    near, pairs = [], []
    for row in mask.tolist():
        inputs = [p for p, on in enumerate(row) if on]
        n_near = n_pairs = 0
        for p, q in itertools.permutations(inputs, 2):
            cp, cq = p // (height * width), q // (height * width)
            if cp != cq:
                continue
            yp, xp = divmod(p % (height * width), width)
            yq, xq = divmod(q % (height * width), width)
            n_pairs += 1
            n_near += (yp - yq) ** 2 + (xp - xq) ** 2 <= radius * radius
        near.append(n_near)
        pairs.append(n_pairs)
    return torch.tensor(near, dtype=torch.float64), torch.tensor(pairs, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(1, 5, 7), (3, 4, 4), (2, 6, 3)])
@pytest.mark.parametrize("radius", [1.0, 1.5, 2.0, 2.9])
def test_neighbour_pairs_match_the_pair_loop(seed, shape, radius):
    gen = torch.Generator().manual_seed(seed)
    density = torch.rand(9, 1, generator=gen)  # units from nearly empty to nearly full
    mask = torch.rand(9, math.prod(shape), generator=gen) < density
    near, pairs = neighbour_pairs(mask, shape, radius)
    loop_near, loop_pairs = _pair_loop(mask, shape, radius)
    assert torch.equal(near, loop_near)
    assert torch.equal(pairs, loop_pairs)


def test_pooled_fraction_is_the_s_sc_mass_within_the_radius():
    """The index says what the map shows: f = mass of S_sc within the radius."""
    gen = torch.Generator().manual_seed(3)
    shape = (2, 8, 8)
    mask = torch.rand(40, 128, generator=gen) < 0.2
    near, pairs = neighbour_pairs(mask, shape, 1.5)
    maps = locality_maps(mask, shape)
    assert near.sum() / pairs.sum() == pytest.approx(mass_within_radius(maps.s_sc, 1.5), abs=1e-12)


def test_closed_forms():
    shape = (1, 12, 12)
    # Every unit holds one horizontal neighbour pair: index 1.
    adjacent = torch.zeros(20, 144, dtype=torch.bool)
    for k in range(20):
        adjacent[k, k] = adjacent[k, k + 1 if (k + 1) % 12 else k - 1] = True
    adjacent[:, 100] = adjacent[:, 101] = True  # and a second pair in the same place
    reading = neighbour_locality(adjacent, shape)
    assert reading.ok
    # Pairs within each unit: {k, k+-1} and {100, 101} neighbours; cross pairs far apart.
    near, pairs = _pair_loop(adjacent, shape, 1.5)
    f0 = mass_within_radius_null(shape, 1.5)
    expected = ((near.sum() / pairs.sum()).item() - f0) / (1 - f0)
    assert reading.value == pytest.approx(expected, abs=1e-12)
    # Opposite corners only: no neighbour pair at all, index -f0 / (1 - f0) < 0.
    corners = torch.zeros(10, 144, dtype=torch.bool)
    corners[:, [0, 143, 11, 132]] = True
    far = neighbour_locality(corners, shape)
    assert far.value == pytest.approx(-f0 / (1 - f0), abs=1e-12)
    assert far.sd < 1e-12  # every unit identical: every resample gives the same value


def test_random_masks_read_zero_within_their_spread():
    shape = (1, 16, 16)
    gen = torch.Generator().manual_seed(0)
    values = []
    for _ in range(20):
        reading = neighbour_locality(torch.rand(200, 256, generator=gen) < 0.05, shape, seed=1)
        values.append(reading.value)
        assert abs(reading.value) < 4 * reading.sd + 1e-9
    mean, sd, _ = across_seeds(values)
    assert abs(mean) < 3 * sd / math.sqrt(len(values))
    # The bootstrap sd estimates the spread between independent draws.
    assert 0.5 < reading.sd / sd < 2.0


def test_too_few_pairs_gives_a_reason_not_a_number():
    mask = torch.zeros(3, 144, dtype=torch.bool)
    mask[:, :3] = True  # 3 units x 6 ordered pairs < MIN_PAIRS
    reading = neighbour_locality(mask, (1, 12, 12))
    assert not reading.ok and math.isnan(reading.value)
    assert reading.reason.startswith("too few pairs")
    assert reading.format() == reading.reason
    empty = neighbour_locality(torch.zeros(8, 144, dtype=torch.bool), (1, 12, 12))
    assert not empty.ok and "too few pairs" in empty.reason
    assert 3 * 6 < MIN_PAIRS


def test_bootstrap_counts_are_resamples_and_reproducible():
    counts = bootstrap_counts(7, 50, seed=4)
    assert counts.shape == (50, 7)
    assert torch.all(counts.sum(dim=1) == 7)
    assert torch.equal(counts, bootstrap_counts(7, 50, seed=4))
    assert not torch.equal(counts, bootstrap_counts(7, 50, seed=5))


def test_mean_and_ratio_readings():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, float("nan")])
    reading = mean_reading(values, null=0.0)
    assert reading.value == 2.5 and reading.n == 4
    # Bootstrap sd of a mean ~ population sd / sqrt(n).
    assert reading.sd == pytest.approx(math.sqrt(1.25 / 4), rel=0.15)
    assert reading.low <= 2.5 <= reading.high
    ratio = ratio_reading(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([2.0, 0.0, 4.0]))
    assert ratio.value == pytest.approx(4 / 6) and ratio.n == 2
    few = ratio_reading(torch.ones(2), torch.ones(2), min_units=3, what="pairs")
    assert not few.ok and "too few pairs" in few.reason


def test_columns_round_trip():
    reading = Reading(0.5, 0.1, 0.3, 0.7, 0.0, 12)
    assert reading_from_columns(reading.columns("x"), "x") == reading
    missing = Reading(float("nan"), null=0.0, n=2, reason="too few pairs (4 over 2 units)")
    back = reading_from_columns(missing.columns("x"), "x")
    assert back.reason == missing.reason and not back.ok
    assert reading.format() == "0.50 ± 0.10"


def test_across_seeds():
    assert across_seeds([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    mean, sd, n = across_seeds([1.0, float("nan"), None])
    assert (mean, n) == (1.0, 1) and math.isnan(sd)


def test_enrichment_is_the_neighbour_fraction_over_its_null():
    from imprint.analysis.locality import NEIGHBOUR_RADIUS
    from imprint.readings import ReadingInputs, compute_readings

    gen = torch.Generator().manual_seed(7)
    shape = (1, 10, 10)
    mask = torch.rand(30, 100, generator=gen) < 0.15
    near, pairs = _pair_loop(mask, shape, NEIGHBOUR_RADIUS)
    f0 = mass_within_radius_null(shape, NEIGHBOUR_RADIUS)
    columns = compute_readings(ReadingInputs(mask, shape), "round")  # the registry's
    f = (near.sum() / pairs.sum()).item()
    assert columns["neighbour_enrichment"] == pytest.approx(f / f0, abs=1e-12)
    assert columns["locality_index"] == pytest.approx((f - f0) / (1 - f0), abs=1e-12)
    assert columns["neighbour_enrichment_null"] == 1.0
    near2, pairs2 = _pair_loop(mask, shape, 2.0)
    assert columns["mass_within_r"] == pytest.approx((near2.sum() / pairs2.sum()).item())


def test_format_spread_shows_digits_the_spread_needs():
    from imprint.analysis.uncertainty import format_spread

    assert format_spread(0.0063, 0.0010, 2) == "0.0063 ± 0.0010"
    assert format_spread(0.5, 0.1, 2) == "0.50 ± 0.10"
    # equal values whose mean rounds differently in float: no spread, no extra digits
    assert format_spread(0.168070, 2e-17, 2, percent=True) == "16.81 ± 0.00%"
    assert format_spread(float("nan"), 0.1) == "n/a"
    assert format_spread(-0.00004, 0.0014) == "0.0000 ± 0.0014"  # no sign on a rounded 0
    assert format_spread(-0.0004, 0.0014) == "-0.0004 ± 0.0014"
    assert format_spread(0.25, float("nan"), 2, percent=True) == "25.00%"


def test_small_samples_at_their_edges():
    """Edges a mutation run found untested: two seeds have an sd, min_units units are
    enough, and what is not a number reads as NaN, None and text included."""
    from imprint.analysis.uncertainty import as_number, mean_reading

    mean, sd, n = across_seeds([1.0, 3.0])
    assert (mean, n) == (2.0, 2) and sd == pytest.approx(2**0.5)
    assert mean_reading(torch.tensor([0.5, 1.5]), min_units=2).value == 1.0
    assert mean_reading(torch.tensor([0.5]), min_units=2).reason.startswith("too few")
    assert all(math.isnan(as_number(v)) for v in (None, "", "x", True, [1]))
    assert as_number("0.25") == 0.25


def test_the_spread_resamples_units_not_pairs():
    """Pairs of one unit are not independent: 100 units of 50 pairs each, half of them
    all-neighbour and half none, read f = 0.5 with the spread of 100 units,
    sqrt(0.25 / 100) = 0.05, not that of 5,000 pairs (0.007). A bootstrap over pairs
    would give the second."""
    numerator = torch.tensor([50.0, 0.0] * 50)
    denominator = torch.full((100,), 50.0)
    reading = ratio_reading(numerator, denominator)
    assert reading.value == pytest.approx(0.5)
    assert reading.sd == pytest.approx(0.05, rel=0.1)
    assert reading.low < 0.5 - 1.5 * 0.05 and reading.high > 0.5 + 1.5 * 0.05
    mask = torch.zeros(100, 144, dtype=torch.bool)  # the same through the locality reading
    mask[:50, :2] = True  # two horizontal neighbours: every pair a neighbour pair
    mask[50:, [0, 100]] = True  # two pixels far apart: no neighbour pair
    locality = neighbour_locality(mask, (1, 12, 12))  # (f - f0) / (1 - f0), f0 ~ 0.02
    assert locality.n == 100 and 0.04 < locality.sd < 0.07  # 100 units, not 200 pairs


def test_the_edges_of_the_uncertainty_helpers():
    """What each helper returns at its edges, by value: too few samples for a spread,
    too few units or pairs (null and n kept), a unit with a fractional denominator,
    the seed, and the digits a spread needs."""
    from imprint.analysis.uncertainty import (
        N_BOOT,
        Reading,
        _digits,
        format_spread,
        reading_from_columns,
    )

    assert Reading(0.123456).format() == "0.12" and Reading(0.123456).format(4) == "0.1235"
    one = mean_reading(torch.tensor([1.0, 3.0]), null=0.5, n_boot=1)  # no spread from 1 draw
    assert (one.value, one.null, one.n) == (2.0, 0.5, 2) and math.isnan(one.sd)
    two = mean_reading(torch.tensor([1.0, 3.0]), n_boot=2, seed=3)
    assert math.isfinite(two.sd)  # two draws give a spread
    single = mean_reading(torch.tensor([2.0]))
    assert single.ok and single.value == 2.0 and single.n == 1
    none = mean_reading(torch.tensor([]), null=0.25)
    assert not none.ok and none.null == 0.25 and none.n == 0
    short = ratio_reading(torch.tensor([0.4]), torch.tensor([0.5]), null=0.3)
    assert not short.ok and short.null == 0.3 and short.n == 1  # 0.5 pairs < 1
    exact = ratio_reading(torch.tensor([0.5, 0.25]), torch.tensor([0.5, 0.5]), min_units=2)
    assert exact.ok and exact.value == pytest.approx(0.75) and exact.n == 2  # at both minima
    # the spread is the resampling of ``seed``: by value, and 0 by default
    num = torch.tensor([1.0, 0.0, 3.0, 2.0], dtype=torch.float64)
    den = torch.tensor([2.0, 1.0, 4.0, 2.0], dtype=torch.float64)
    counts = bootstrap_counts(4, N_BOOT, 3).double()
    by_hand = ((counts @ num) / (counts @ den)).std().item()
    assert ratio_reading(num, den, seed=3).sd == pytest.approx(by_hand, rel=1e-12)
    assert ratio_reading(num, den).sd == ratio_reading(num, den, seed=0).sd
    assert ratio_reading(num, den).sd != ratio_reading(num, den, seed=1).sd
    values = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    counts = bootstrap_counts(3, N_BOOT, 5).double()
    assert mean_reading(values, seed=5).sd == pytest.approx(((counts @ values) / 3).std().item())
    assert mean_reading(values).sd == mean_reading(values, seed=0).sd
    assert across_seeds([]) == (across_seeds([])[0], across_seeds([])[1], 0)
    assert across_seeds([float("nan")])[2] == 0 and across_seeds([1.0])[2] == 1
    # digits: more only when the sd would print as zero, at most 4
    assert _digits(0.005, 2) == 2 and _digits(0.0049, 2) == 4 and _digits(0.01, 2) == 2
    assert _digits(0.03, 1) == 3 and _digits(1e-7, 2) == 4 and _digits(0.0, 2) == 2
    assert format_spread(0.5, 0.03, 1) == "0.500 ± 0.030"
    assert format_spread(0.5, 0.0003, 1, percent=True) == "50.000 ± 0.030%"
    assert format_spread(2.0, 1e-9) == "2.00 ± 0.00"  # float rounding, not a spread
    back = reading_from_columns({"x": "", "x_n": "nan"}, "x")
    assert math.isnan(back.value) and back.n == 0
    assert reading_from_columns({"x": None, "x_n": "4"}, "x").n == 4


def test_the_locality_readings_pass_their_options_through():
    """Radius, thresholds, resampling seed and nulls reach the reading, by value."""
    from imprint.analysis.locality import (
        MIN_UNITS,
        mass_within_r,
        neighbour_enrichment,
        null_pair_distance,
    )

    shape = (1, 12, 12)
    mask = torch.rand(60, 144, generator=torch.Generator().manual_seed(2)) < 0.08
    plain = neighbour_locality(mask, shape)
    assert plain.null == 0.0 and plain.ok
    near, pairs = neighbour_pairs(mask, shape)
    f0 = mass_within_radius_null(shape, 1.5)
    by_hand = ratio_reading(near, pairs, transform=lambda f: (f - f0) / (1 - f0), seed=3)
    assert neighbour_locality(mask, shape, seed=3).sd == pytest.approx(by_hand.sd, rel=1e-12)
    assert plain.sd == neighbour_locality(mask, shape, seed=0).sd
    assert plain.sd != neighbour_locality(mask, shape, seed=1).sd
    assert neighbour_locality(mask, shape, radius=2.5).value != plain.value
    few = neighbour_locality(mask, shape, min_pairs=10**9)
    assert not few.ok and few.reason.startswith("too few pairs") and few.null == 0.0
    assert not neighbour_locality(mask, shape, min_units=10**6).ok
    assert neighbour_locality(mask, shape, min_units=MIN_UNITS, min_pairs=MIN_PAIRS).ok
    whole = neighbour_locality(torch.ones(3, 9, dtype=torch.bool), (1, 3, 3), radius=10)
    assert math.isnan(whole.value) and whole.null == 0.0
    assert whole.reason == "radius 10 covers the whole image"
    enrichment = neighbour_enrichment(mask, shape, seed=3)
    assert enrichment.null == 1.0
    assert enrichment.value == pytest.approx((near.sum() / pairs.sum()).item() / f0)
    assert enrichment.sd != neighbour_enrichment(mask, shape).sd
    mass = mass_within_r(mask, shape)
    assert mass.null == pytest.approx(mass_within_radius_null(shape, 2.0))
    assert mass.sd != mass_within_r(mask, shape, seed=1).sd
    lonely = torch.zeros(1, 144, dtype=torch.bool)
    lonely[0, :2] = True
    assert not mass_within_r(lonely, shape).ok  # too few pairs
    assert neighbour_pairs(mask, shape, radius=0.5)[0].sum() == 0  # no pixel that near
    with pytest.raises(ValueError, match="'radius' parameter must be a number >= 0"):
        neighbour_pairs(mask, shape, radius=-1)
    assert math.isnan(null_pair_distance(1, 1)) and null_pair_distance(1, 2) == pytest.approx(
        2.0 * 2 / 1 * (3 / 12)
    )
