from __future__ import annotations

import pytest
import torch

from imprint.analysis.invariance import (
    cluster_by_shift,
    pairwise_shift_similarity,
    shift_similarity,
    translational_invariance,
)
from imprint.analysis.response import class_response


def _naive(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop over every pair i <= j and every shift; overlaps cut by slicing (zero padding)."""
    n, _, height, width = images.shape
    x = images.double()
    shifts = [(dy, dx) for dy in range(-height + 1, height) for dx in range(-width + 1, width)]
    shifts.sort(key=lambda s: (abs(s[0]) + abs(s[1]), s[0], s[1]))  # documented tie order
    similarity = torch.zeros((n, n), dtype=torch.float64)
    best_shift = torch.zeros((n, n, 2), dtype=torch.long)
    for i in range(n):
        for j in range(i, n):  # the lower triangle mirrors the upper one
            norm = (x[i].norm() * x[j].norm()).item()
            values = []
            for dy, dx in shifts:
                y0, y1 = max(0, dy), min(height, height + dy)
                x0, x1 = max(0, dx), min(width, width + dx)
                overlap = x[i, :, y0:y1, x0:x1] * x[j, :, y0 - dy : y1 - dy, x0 - dx : x1 - dx]
                values.append(overlap.sum().item() / norm if norm > 0 else 0.0)
            top = max(values)
            k = next(k for k, v in enumerate(values) if v >= top - 1e-9)
            similarity[i, j] = similarity[j, i] = top
            best_shift[i, j] = torch.tensor(shifts[k])
            best_shift[j, i] = -best_shift[i, j]
    return similarity, best_shift


def _place(pattern: torch.Tensor, shape, y: int, x: int) -> torch.Tensor:
    """A (C, h, w) pattern with its top-left corner at (y, x) of a (C, H, W) zero image."""
    image = torch.zeros(shape, dtype=pattern.dtype)
    _, h, w = pattern.shape
    image[:, y : y + h, x : x + w] = pattern
    return image


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 4, 6), (1, 3, 7), (2, 6, 4)])
@pytest.mark.parametrize("kind", ["binary", "real"])
def test_matches_naive_loop(shape, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    if kind == "binary":
        images = (torch.rand((6, *shape), generator=gen) < 0.3).float()
        images[2] = 0.0  # an empty mask among them
    else:
        images = torch.randn((6, *shape), generator=gen)
        images *= torch.rand((6, *shape), generator=gen) < 0.5  # a weighted mask
    similarity, shift = pairwise_shift_similarity(images)
    expected, expected_shift = _naive(images)
    torch.testing.assert_close(similarity, expected, rtol=0, atol=1e-12)
    assert torch.equal(shift, expected_shift)
    # chunking changes nothing
    chunked, chunked_shift = pairwise_shift_similarity(images, chunk_size=1)
    torch.testing.assert_close(chunked, similarity, rtol=0, atol=1e-12)
    assert torch.equal(chunked_shift, shift)


def test_shifted_copy_scores_one_with_the_shift():
    shape = (3, 8, 9)
    gen = torch.Generator().manual_seed(0)
    pattern = torch.rand((3, 3, 2), generator=gen) < 0.6
    pattern[0, 0, 0] = pattern[2, 2, 1] = True  # spans the whole 3x2 box
    a = _place(pattern, shape, 4, 5)
    b = _place(pattern, shape, 1, 6)
    similarity, (dy, dx) = shift_similarity(a, b, shape)
    assert similarity == pytest.approx(1.0, abs=1e-12)
    assert (dy, dx) == (3, -1)  # moving b by (3, -1) lands it on a
    assert shift_similarity(b, a, shape)[1] == (-3, 1)
    # flattened channel-major rows work the same; scale does not matter
    flat = shift_similarity(a.flatten(), 2.5 * b.float().flatten(), shape)
    assert flat[0] == pytest.approx(1.0, abs=1e-12) and flat[1] == (3, -1)


def test_different_patterns_score_below_one():
    shape = (1, 6, 6)
    block = _place(torch.ones((1, 2, 2)), shape, 1, 1)
    line = _place(torch.ones((1, 1, 4)), shape, 3, 0)
    similarity, _ = shift_similarity(block, line, shape)
    assert similarity == pytest.approx(2 / (2 * 2))  # best overlap 2 of ||a|| ||b|| = 2 * 2
    # a single pixel against a 2x2 block: overlap 1 / (1 * 2)
    pixel = _place(torch.ones((1, 1, 1)), shape, 5, 5)
    assert shift_similarity(block, pixel, shape)[0] == pytest.approx(0.5)


def test_channels_move_together():
    shape = (2, 5, 5)
    pattern = torch.ones((1, 2, 3))
    red = _place(torch.cat([pattern, torch.zeros_like(pattern)]), shape, 0, 0)
    green = _place(torch.cat([torch.zeros_like(pattern), pattern]), shape, 2, 1)
    assert shift_similarity(red, green, shape) == (0.0, (0, 0))


def test_empty_masks_are_zero_without_nan():
    images = torch.zeros((3, 2, 4, 5))
    images[1, 0, 1, 2] = 1.0
    similarity, shift = pairwise_shift_similarity(images)
    assert not similarity.isnan().any()
    expected = torch.zeros((3, 3), dtype=torch.float64)
    expected[1, 1] = 1.0  # only a non-empty image matches itself
    torch.testing.assert_close(similarity, expected, rtol=0, atol=1e-12)
    assert torch.equal(shift, torch.zeros((3, 3, 2), dtype=torch.long))
    assert shift_similarity(images[0], images[0], (2, 4, 5)) == (0.0, (0, 0))


def _planted(shape, seed: int):
    """Three shapes, each at several positions, in a shuffled order.

    Returns images (n, C, H, W) bool and the planted groups as sorted index lists.
    """
    channels = shape[0]
    plus = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    block = torch.ones((2, 3), dtype=torch.bool)
    diagonal = torch.eye(4, dtype=torch.bool)
    shapes = [plus, block, diagonal]
    positions = [[(0, 0), (5, 6), (2, 8)], [(7, 1), (0, 7), (4, 4), (8, 8)], [(1, 3), (6, 6)]]
    images, groups = [], []
    for k, (pattern, where) in enumerate(zip(shapes, positions)):
        # every channel holds the pattern, except one channel that is empty for the
        # second shape: channel content is part of the pattern
        stacked = pattern.expand(channels, *pattern.shape).clone()
        if k == 1 and channels > 1:
            stacked[1] = False
        for y, x in where:
            groups.append(k)
            images.append(_place(stacked, shape, y, x))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    images = torch.stack(images)[order]
    labels = torch.tensor(groups)[order]
    planted = [sorted((labels == k).nonzero().flatten().tolist()) for k in range(3)]
    return images, sorted(planted, key=lambda c: (-len(c), c[0]))


@pytest.mark.parametrize("shape", [(1, 12, 12), (3, 12, 13)])
def test_clustering_recovers_planted_groups(shape, seed):
    images, planted = _planted(shape, seed)
    similarity, _ = pairwise_shift_similarity(images)
    assert cluster_by_shift(similarity, 0.9) == planted


def test_cluster_order_singletons_and_chaining():
    similarity = torch.tensor(
        [
            [1.0, 0.0, 0.95, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [0.95, 0.0, 1.0, 0.0, 0.92],
            [0.0, 0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.92, 0.0, 1.0],
        ]
    )
    # 0 ~ 2 ~ 4 chain into one cluster; the rest are singletons in index order
    assert cluster_by_shift(similarity, 0.9) == [[0, 2, 4], [1], [3]]
    assert cluster_by_shift(similarity, 0.93) == [[0, 2], [1], [3], [4]]
    # the threshold is inclusive and one direction of an asymmetric input suffices
    asymmetric = torch.tensor([[1.0, 0.9], [0.0, 1.0]])
    assert cluster_by_shift(asymmetric, 0.9) == [[0, 1]]


def test_translational_invariance_finds_shifted_units(seed):
    shape = (3, 12, 13)
    channels, height, width = shape
    images, planted = _planted(shape, seed)
    n_planted = images.shape[0]
    gen = torch.Generator().manual_seed(seed)
    # each shape carries one weight pattern wherever it sits: weights = a fixed
    # random field (the same for every unit), restricted to the mask and shifted
    # with it, so aligned weighted masks agree exactly
    fields = [torch.randn((channels, 4, 4), generator=gen) for _ in range(3)]
    weights = torch.zeros(images.shape)
    for unit in range(n_planted):
        group = next(k for k, members in enumerate(planted) if unit in members)
        ys, xs = images[unit].any(0).nonzero().min(0).values.tolist()
        field = _place(fields[group], (channels, height + 4, width + 4), ys, xs)
        weights[unit] = field[:, :height, :width] * images[unit]
    # extra units: random masks of density 0.3, one-input units, disconnected units
    noise = torch.rand((5, *shape), generator=gen) < 0.3
    single = torch.zeros((2, *shape), dtype=torch.bool)
    single[0, 0, 3, 3] = single[1, 1, 7, 2] = True
    empty = torch.zeros((2, *shape), dtype=torch.bool)
    mask = torch.cat([images, noise, single, empty]).reshape(-1, channels * height * width)
    weights = torch.cat([weights.flatten(1), torch.randn((9, mask.shape[1]), generator=gen)])
    weights = weights * mask

    result = translational_invariance(mask, weights, shape, seed=seed)
    # default selection: C_in >= 2, most connected first
    assert sorted(result.units) == list(range(n_planted + 5))
    cin = mask.sum(1)
    assert [cin[u] for u in result.units] == sorted(cin[list(result.units)].tolist(), reverse=True)
    assert [list(c.members) for c in result.clusters] == planted
    for cluster in result.clusters:
        assert cluster.n_positions == len(cluster.members)  # every copy at its own place
        assert cluster.spread > 1
        assert cluster.weight_similarity == pytest.approx(1.0, abs=1e-9)
        assert cluster.weight_similarity_null < 0.9
        for member, (y, x) in zip(cluster.members, cluster.positions):
            image = mask[member].reshape(shape).double().sum(0)
            assert y == pytest.approx((image.sum(1) * torch.arange(height)).sum() / image.sum())
            assert x == pytest.approx((image.sum(0) * torch.arange(width)).sum() / image.sum())
    assert result.fraction_shifted == pytest.approx(n_planted / (n_planted + 5))
    assert result.null_fraction_shifted < 0.2
    assert result.mean_best_similarity > result.null_mean_best_similarity
    assert result.weight_similarity == pytest.approx(1.0, abs=1e-9)
    assert result.weight_similarity_null < result.weight_similarity

    # explicit units and the cap
    assert translational_invariance(mask, weights, shape, units=[0, 1]).units == (0, 1)
    capped = translational_invariance(mask, weights, shape, max_units=4)
    assert capped.units == tuple(torch.argsort(-cin, stable=True)[:4].tolist())


def test_translational_invariance_without_matches():
    shape = (1, 6, 6)
    mask = torch.zeros((3, 36), dtype=torch.bool)
    result = translational_invariance(mask, torch.zeros((3, 36)), shape)
    assert result.units == () and result.clusters == ()
    assert torch.isnan(torch.tensor(result.fraction_shifted))
    assert torch.isnan(torch.tensor(result.weight_similarity))


def test_translational_invariance_errors():
    mask = torch.ones((2, 12), dtype=torch.bool)
    with pytest.raises(ValueError, match=r"The 'mask' parameter must be \(units, C\*H\*W\)"):
        translational_invariance(mask, mask.float(), (1, 3, 3))
    with pytest.raises(ValueError, match=r"The 'weights' parameter must have the mask's shape"):
        translational_invariance(mask, torch.ones((2, 11)), (1, 3, 4))
    with pytest.raises(ValueError, match=r"The 'threshold' parameter must be in \(0, 1\]. Got 0"):
        translational_invariance(mask, mask.float(), (1, 3, 4), threshold=0.0)
    with pytest.raises(ValueError, match=r"The 'units' parameter must hold distinct indices"):
        translational_invariance(mask, mask.float(), (1, 3, 4), units=[0, 2])
    with pytest.raises(ValueError, match=r"The 'shape' parameter must be \(C, H, W\)"):
        shift_similarity(mask[0], mask[1], (3, 4))
    with pytest.raises(ValueError, match=r"The 'images' parameter must be a \(n, C, H, W\)"):
        pairwise_shift_similarity(torch.ones((3, 4, 5)))
    with pytest.raises(ValueError, match=r"The 'similarity' parameter must be a square"):
        cluster_by_shift(torch.ones((2, 3)), 0.5)


def test_class_response_function_of_class_and_noise(seed):
    gen = torch.Generator().manual_seed(seed)
    n, n_classes = 600, 5
    labels = torch.randint(0, n_classes, (n,), generator=gen)
    # a response per class, spread enough that the mixed unit below is clearly both
    code = torch.linspace(-1.5, 1.5, n_classes)[torch.randperm(n_classes, generator=gen)]
    activations = torch.stack(
        [
            code[labels],  # a function of the class
            torch.randn(n, generator=gen),  # pure noise
            code[labels] + 0.5 * torch.randn(n, generator=gen),  # both
            torch.full((n,), 0.0),  # dead unit
        ],
        dim=1,
    )
    result = class_response(activations, labels, n_classes, seed=seed)
    assert result.independence[0].item() == pytest.approx(0.0, abs=1e-12)
    assert result.independence[1].item() > 0.97
    assert 0.05 < result.independence[2].item() < 0.95
    assert result.independence[3].isnan()
    # the null is what a class-blind unit gives: 1 - about (K - 1) / (n - 1)
    null = result.null_independence
    assert null[:3] == pytest.approx(torch.full((3,), 1 - (n_classes - 1) / (n - 1)), abs=0.01)
    assert result.independence[1].item() == pytest.approx(null[1].item(), abs=0.02)
    assert result.mean_independence < result.null_mean_independence
    # class means and counts against a loop
    for c in range(n_classes):
        chosen = labels == c
        assert result.class_counts[c] == chosen.sum()
        torch.testing.assert_close(result.class_means[:, c], activations[chosen].double().mean(0))
    # the same seed gives the same null
    again = class_response(activations, labels, n_classes, seed=seed)
    assert torch.equal(again.null_independence.nan_to_num(), null.nan_to_num())


def test_class_response_absent_class_and_errors():
    activations = torch.tensor([[1.0], [2.0], [4.0]])
    labels = torch.tensor([0, 0, 2])
    result = class_response(activations, labels, 3)
    assert result.class_means[0, 1].isnan() and result.class_counts.tolist() == [2, 0, 1]
    # eta^2 = between / total: means 1.5 and 4, grand mean 7/3
    between = 2 * (1.5 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2
    total = (1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2
    assert result.eta_squared[0].item() == pytest.approx(between / total)
    with pytest.raises(ValueError, match=r"The 'labels' parameter must be in \[0, 2\). Got 0..2"):
        class_response(activations, labels, 2)
    with pytest.raises(ValueError, match=r"The 'labels' parameter must be \(n,\) = \(3,\)"):
        class_response(activations, labels[:2], 3)
    with pytest.raises(ValueError, match=r"The 'n_classes' parameter must be >= 2. Got 1"):
        class_response(activations, labels, 1)
    with pytest.raises(ValueError, match=r"The 'labels' parameter must hold integers"):
        class_response(activations, labels.float(), 3)
