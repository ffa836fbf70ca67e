from __future__ import annotations

import itertools

import pytest
import torch

from imprint.analysis.locality import null_pair_distance, pair_distance_locality, to_image_space


def _brute(mask: torch.Tensor, shape) -> tuple[float, int]:
    """Loop over every ordered same-channel pair of every unit."""
    channels, height, width = shape
    total, pairs = 0.0, 0
    for unit in mask:
        idx = unit.nonzero().flatten().tolist()
        for p, q in itertools.permutations(idx, 2):
            cp, rp = divmod(p, height * width)
            cq, rq = divmod(q, height * width)
            if cp != cq:
                continue
            (yp, xp), (yq, xq) = divmod(rp, width), divmod(rq, width)
            total += (xp - xq) ** 2 + (yp - yq) ** 2
            pairs += 1
    return (total / pairs if pairs else float("nan")), pairs


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 4, 6), (2, 7, 3)])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.9])
def test_matches_brute_force(shape, density, seed):
    gen = torch.Generator().manual_seed(seed)
    d = shape[0] * shape[1] * shape[2]
    mask = torch.rand((6, d), generator=gen) < density
    result = pair_distance_locality(mask, shape)
    actual, pairs = _brute(mask, shape)
    assert result.n_pairs == pairs
    if pairs:
        assert result.actual == pytest.approx(actual, rel=1e-12)


def test_null_is_the_mean_over_all_distinct_pairs():
    for h, w in [(4, 4), (3, 7), (12, 12)]:
        full = torch.ones((1, h * w), dtype=torch.bool)
        assert null_pair_distance(h, w) == pytest.approx(_brute(full, (1, h, w))[0])
        # a full mask has exactly the null's statistics: ratio 1
        assert pair_distance_locality(full, (1, h, w)).ratio == pytest.approx(1.0)


def test_closed_forms():
    empty = torch.zeros((3, 16), dtype=torch.bool)
    assert pair_distance_locality(empty, (1, 4, 4)).n_pairs == 0
    one = torch.zeros((1, 16), dtype=torch.bool)
    one[0, 5] = True
    assert pair_distance_locality(one, (1, 4, 4)).n_pairs == 0
    block = torch.zeros((1, 4, 4), dtype=torch.bool)
    block[0, 1:3, 1:3] = True  # a 2x2 block: 8 neighbour pairs |d|^2 = 1, 4 diagonal = 2
    result = pair_distance_locality(block.reshape(1, 16), (1, 4, 4))
    assert result.n_pairs == 12 and result.actual == pytest.approx(16 / 12)
    assert result.ratio > 1


def test_random_masks_average_to_one():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand((2000, 144), generator=gen) < 0.05
    assert pair_distance_locality(mask, (1, 12, 12)).ratio == pytest.approx(1.0, abs=0.03)


def test_to_image_space_undoes_the_permutation():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand((4, 30), generator=gen) < 0.3
    perm = torch.randperm(30, generator=gen)
    network = image[:, perm]  # what the network sees: input j <- pixel perm[j]
    assert torch.equal(to_image_space(network, perm), image)
    assert torch.equal(to_image_space(image, None), image)


def test_per_unit_ratios_match_single_unit_calls(seed):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand((5, 3 * 4 * 5), generator=gen) < 0.3
    pooled = pair_distance_locality(mask, (3, 4, 5))
    for k in range(5):
        alone = pair_distance_locality(mask[k : k + 1], (3, 4, 5))
        if alone.n_pairs:
            assert pooled.per_unit[k] == pytest.approx(alone.ratio)
