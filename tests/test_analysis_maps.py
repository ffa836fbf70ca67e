from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from imprint.analysis import maps
from imprint.analysis.connectivity import (
    connectivity,
    effective_mask,
    effective_weights,
    ipr,
    ipr_null,
    pixel_map,
)
from imprint.analysis.maps import (
    connection_resolved_maps,
    locality_maps,
    locality_maps_pairloop,
    mass_within_radius,
    mass_within_radius_null,
)

SHAPES = [(1, 5, 5), (3, 4, 6), (2, 7, 3), (3, 1, 5)]
METHODS = ["fft", "pairs", "auto"]


# ---- helpers and brute-force twins -------------------------------------------------


def _random_mask(units: int, shape, density: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((units, math.prod(shape)), generator=gen) < density


def _net_masks(seed: int, dims=(12, 5, 4, 3), density=0.5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        masks[f"layers.{layer}.weight"] = torch.rand((fan_out, fan_in), generator=gen) < density
        masks[f"layers.{layer}.bias"] = torch.ones(fan_out, dtype=torch.bool)
    return masks


def _net_weights(seed: int, dims=(12, 5, 4, 3)) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1000)
    return {
        f"layers.{layer}.weight": torch.randn((fan_out, fan_in), generator=gen)
        for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:]))
    }


def _paths_brute(masks, weights, layer: int, unit: int, p: int) -> tuple[int, float]:
    """Number of alive paths from input p to ``unit`` of ``layer``, and the sum over
    those paths of the product of their weights, by recursion over the layer below."""
    mask = masks[f"layers.{layer}.weight"]
    weight = weights[f"layers.{layer}.weight"] if weights else None
    if layer == 0:
        alive = bool(mask[unit, p])
        return int(alive), float(weight[unit, p]) * alive if weight is not None else 0.0
    count, total = 0, 0.0
    for j in range(mask.shape[1]):
        if mask[unit, j]:
            sub_count, sub_total = _paths_brute(masks, weights, layer - 1, j, p)
            count += sub_count
            total += float(weight[unit, j]) * sub_total if weight is not None else 0.0
    return count, total


def _maps_brute(mask: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair p != q of every unit, independent of the library's loop."""
    channels, height, width = shape
    s_sc = torch.zeros((2 * height - 1, 2 * width - 1), dtype=torch.int64)
    s_dc = torch.zeros_like(s_sc)
    for row in mask:
        for p, q in itertools.permutations((row > 0).nonzero().flatten().tolist(), 2):
            (cp, yp, xp), (cq, yq, xq) = (
                (i // (height * width), i // width % height, i % width) for i in (p, q)
            )
            target = s_sc if cp == cq else s_dc
            target[yp - yq + height - 1, xp - xq + width - 1] += 1
    return s_sc, s_dc


def _separation(height: int, width: int) -> torch.Tensor:
    """(H - |dy|)(W - |dx|): ordered pixel pairs of one channel at each displacement."""
    dy = torch.arange(-(height - 1), height).abs().view(-1, 1)
    dx = torch.arange(-(width - 1), width).abs().view(1, -1)
    return (height - dy) * (width - dx)


def _assert_same(result, s_sc, s_dc) -> None:
    assert result.s_sc.dtype == torch.int64 and result.s_dc.dtype == torch.int64
    assert torch.equal(result.s_sc, s_sc)
    assert torch.equal(result.s_dc, s_dc)


# ---- effective masks and weights ---------------------------------------------------


def test_effective_mask_counts_every_path(seed):
    masks, weights = _net_masks(seed), _net_weights(seed)
    for layer in range(3):
        eff = effective_mask(masks, layer)
        agg = effective_weights(weights, masks, layer)
        assert eff.dtype == torch.int64 and agg.dtype == torch.float64
        assert eff.shape == agg.shape == (masks[f"layers.{layer}.weight"].shape[0], 12)
        for unit, p in itertools.product(range(eff.shape[0]), range(eff.shape[1])):
            count, total = _paths_brute(masks, weights, layer, unit, p)
            assert eff[unit, p] == count
            assert agg[unit, p].item() == pytest.approx(total, rel=1e-12, abs=1e-12)


def test_effective_mask_of_two_layers_is_the_integer_product(seed):
    masks = _net_masks(seed, dims=(30, 20, 10), density=0.4)
    m0, m1 = masks["layers.0.weight"], masks["layers.1.weight"]
    assert torch.equal(effective_mask(masks, 0), m0.long())
    assert torch.equal(effective_mask(masks, 1), m1.long() @ m0.long())
    weights = _net_weights(seed, dims=(30, 20, 10))
    w0, w1 = weights["layers.0.weight"].double(), weights["layers.1.weight"].double()
    assert torch.allclose(effective_weights(weights, masks, 0), w0 * m0)
    assert torch.allclose(effective_weights(weights, masks, 1), (w1 * m1) @ (w0 * m0))
    # aggregated weights live on the effective mask's support
    assert not (effective_weights(weights, masks, 1)[effective_mask(masks, 1) == 0]).any()


def test_effective_mask_ignores_the_order_of_hidden_units(seed):
    masks = _net_masks(seed, dims=(16, 9, 4))
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(seed))
    shuffled = dict(masks)
    shuffled["layers.0.weight"] = masks["layers.0.weight"][perm]
    shuffled["layers.1.weight"] = masks["layers.1.weight"][:, perm]
    assert torch.equal(effective_mask(shuffled, 1), effective_mask(masks, 1))


def test_effective_mask_is_exact_up_to_two_to_the_53():
    width = 256  # dense: every entry of layer l counts width**l paths
    masks = {f"layers.{i}.weight": torch.ones((width, width), dtype=torch.bool) for i in range(8)}
    assert bool((effective_mask(masks, 6) == width**6).all())  # 2**48
    with pytest.raises(OverflowError, match="reach 2\\*\\*53"):
        effective_mask(masks, 7)  # 2**56


def test_effective_mask_errors_name_the_parameter():
    masks = _net_masks(0)
    with pytest.raises(ValueError, match="The 'layer' parameter must be an int >= 0. Got -1."):
        effective_mask(masks, -1)
    with pytest.raises(ValueError, match="The 'masks' parameter has no entry 'layers.3.weight'"):
        effective_mask(masks, 3)
    with pytest.raises(ValueError, match="'layers.0.weight' must be bool. Got torch.float32"):
        effective_mask({**masks, "layers.0.weight": masks["layers.0.weight"].float()}, 1)
    bad = {**masks, "layers.1.weight": torch.ones((4, 7), dtype=torch.bool)}
    with pytest.raises(ValueError, match="takes 7 inputs but layer 0 has 5 units"):
        effective_mask(bad, 1)
    weights = {"layers.0.weight": torch.ones((5, 11))}
    with pytest.raises(ValueError, match="'layers.0.weight' must have shape \\(5, 11\\)"):
        effective_weights(weights, masks, 0)


# ---- connectivity and pixel maps ---------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_connectivity_and_pixel_map_match_loops(shape, seed):
    channels, height, width = shape
    masks = _net_masks(seed, dims=(math.prod(shape), 6, 5), density=0.3)
    for mask in (masks["layers.0.weight"], effective_mask(masks, 1)):
        result = connectivity(mask)
        counts = torch.zeros(shape, dtype=torch.int64)
        reached = torch.zeros(shape, dtype=torch.int64)
        for k, row in enumerate(mask.tolist()):
            assert result.c_in[k] == sum(1 for v in row if v > 0)
            for p, v in enumerate(row):
                c, y, x = p // (height * width), p // width % height, p % width
                counts[c, y, x] += int(v)
                reached[c, y, x] += int(v > 0)
        assert result.n_units == mask.shape[0]
        assert result.n_disconnected == int((result.c_in == 0).sum())
        assert torch.equal(pixel_map(mask, shape), counts)
        assert torch.equal(pixel_map(mask, shape, binary=True), reached)
        # relabelling the inputs leaves every unit's C_in as it is
        perm = torch.randperm(mask.shape[1], generator=torch.Generator().manual_seed(seed))
        assert torch.equal(connectivity(mask[:, perm]).c_in, result.c_in)


def test_connectivity_closed_forms():
    empty = connectivity(torch.zeros((4, 10), dtype=torch.bool))
    assert empty.n_disconnected == 4 and empty.c_in.tolist() == [0] * 4
    full = connectivity(torch.ones((3, 10), dtype=torch.bool))
    assert full.n_disconnected == 0 and full.c_in.tolist() == [10] * 3
    with pytest.raises(ValueError, match="The 'mask' parameter must be bool or non-negative"):
        connectivity(-torch.ones((2, 3)))
    with pytest.raises(ValueError, match="The 'mask' parameter must be 2-D \\(units, D\\)"):
        connectivity(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="The 'shape' parameter must have C\\*H\\*W equal"):
        pixel_map(torch.ones((2, 12), dtype=torch.bool), (1, 3, 3))


# ---- locality maps -----------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_pairloop_matches_brute_force(shape, seed):
    mask = _random_mask(5, shape, 0.4, seed)
    _assert_same(locality_maps_pairloop(mask, shape), *_maps_brute(mask, shape))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("density", [0.05, 0.3, 0.9])
@pytest.mark.parametrize("shape", SHAPES)
def test_methods_match_the_pair_loop(shape, density, method, seed):
    mask = _random_mask(7, shape, density, seed)
    reference = locality_maps_pairloop(mask, shape)
    result = locality_maps(mask, shape, method)
    _assert_same(result, reference.s_sc, reference.s_dc)
    assert result.n_units == 7 and result.shape == shape
    # batches of two units give the same integers
    _assert_same(locality_maps(mask, shape, method, chunk_size=2), reference.s_sc, reference.s_dc)


def test_auto_splits_units_between_methods(seed, monkeypatch):
    shape = (3, 4, 6)
    gen = torch.Generator().manual_seed(seed)
    # C_in from 0 to 72 in one mask; with this crossover units above C_in = 5 go to the FFT
    mask = torch.rand((24, 72), generator=gen).argsort(dim=1) < torch.arange(0, 72, 3)[:, None]
    monkeypatch.setattr(maps, "_PAIR_PER_FFT", 0.1)
    reference = locality_maps_pairloop(mask, shape)
    _assert_same(locality_maps(mask, shape, "auto", chunk_size=3), reference.s_sc, reference.s_dc)


def _every_c_in_mask(shape, seed: int) -> torch.Tensor:
    """One unit for each C_in from 0 to D (a full unit), inputs at random."""
    d = math.prod(shape)
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((d + 1, d), generator=gen).argsort(dim=1) < torch.arange(d + 1)[:, None]


@pytest.mark.parametrize("shape", [(3, 4, 6), (1, 5, 7), (2, 6, 1)])
def test_pair_method_at_every_c_in(shape, seed):
    # C_in 0, 1 (no pair), 2 (one pair), ..., D: many groups and padded units
    mask = _every_c_in_mask(shape, seed)
    reference = locality_maps_pairloop(mask, shape)
    for chunk_size in (None, 1, 5):
        for method in ("pairs", "auto"):
            result = locality_maps(mask, shape, method, chunk_size=chunk_size)
            _assert_same(result, reference.s_sc, reference.s_dc)


@pytest.mark.parametrize("types", [(np.int64,), (np.int32, np.int64), (np.int16,)])
def test_pair_method_in_each_integer_type(types, seed, monkeypatch):
    # (3, 4, 6): pad = 5 * 7 * 11 = 385 fits every type; forcing each one in turn
    shape = (3, 4, 6)
    monkeypatch.setattr(maps, "_PAIR_DTYPES", types)
    mask = _random_mask(9, shape, 0.4, seed)
    reference = locality_maps_pairloop(mask, shape)
    _assert_same(locality_maps(mask, shape, "pairs"), reference.s_sc, reference.s_dc)


def test_pair_method_picks_int32_past_int16(seed):
    # (1, 100, 100): pad = 199**2 = 39601 > 32767, so codes go to int32
    shape = (1, 100, 100)
    mask = _random_mask(4, shape, 0.01, seed)
    reference = locality_maps_pairloop(mask, shape)
    _assert_same(locality_maps(mask, shape, "pairs"), reference.s_sc, reference.s_dc)


def test_pair_method_in_small_batches_and_pair_slices(seed, monkeypatch):
    # buffers of a few numbers: pairs sliced within a unit, many bincounts, uncached
    # pair indices
    shape = (2, 3, 5)
    mask = _every_c_in_mask(shape, seed)
    reference = locality_maps_pairloop(mask, shape)
    monkeypatch.setattr(maps, "_CACHED_SLOTS", 4)
    for batch, min_units in ((7, 1), (5, 16), (50, 3), (400, 16)):
        monkeypatch.setattr(maps, "_BATCH_NUMBERS", batch)
        monkeypatch.setattr(maps, "_MIN_BATCH_UNITS", min_units)
        for chunk_size in (None, 2):
            result = locality_maps(mask, shape, "pairs", chunk_size=chunk_size)
            _assert_same(result, reference.s_sc, reference.s_dc)


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
@pytest.mark.parametrize(("batch", "min_units"), [(2**20, 16), (30, 4), (5, 16), (1, 1)])
def test_batches_cover_each_unit_and_pair_once(batch, min_units, chunk_size, monkeypatch):
    monkeypatch.setattr(maps, "_BATCH_NUMBERS", batch)
    monkeypatch.setattr(maps, "_MIN_BATCH_UNITS", min_units)
    for first, last, n_pairs in ((0, 1, 1), (3, 40, 6), (5, 9, 45), (0, 20, 1000)):
        seen = torch.zeros((last, n_pairs), dtype=torch.int64)
        for lo, hi, a, b in maps._batches(first, last, n_pairs, chunk_size):
            assert first <= lo < hi <= last and 0 <= a < b <= n_pairs
            assert (b - a) * (hi - lo) <= max(batch, min_units)
            assert chunk_size is None or hi - lo <= chunk_size
            seen[lo:hi, a:b] += 1
        assert bool((seen[first:] == 1).all()) and not seen[:first].any()


def test_pair_method_on_a_sparse_cifar_layer(seed):
    # the benchmark's case, fewer units: 1% of 3072 inputs, int16 codes
    shape = (3, 32, 32)
    mask = _random_mask(48, shape, 0.01, seed)
    reference = locality_maps_pairloop(mask, shape)
    for method in METHODS:
        _assert_same(locality_maps(mask, shape, method), reference.s_sc, reference.s_dc)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 40, 1000, 4099])
@pytest.mark.parametrize("density", [0.0, 0.003, 0.02, 0.2, 1.0])
def test_flat_nonzero_matches_numpy(size, density, seed):
    # sparse arrays take the three-step scan, dense ones numpy's, and a tail of < 16
    # bytes is scanned on its own
    gen = torch.Generator().manual_seed(seed)
    bits = (torch.rand(size, generator=gen) < density).numpy()
    expected = np.flatnonzero(bits)
    for shaped in (bits, bits.reshape(1, size), bits.reshape(size, 1)):
        found = maps._flat_nonzero(shaped)
        assert found.dtype == np.int64 and np.array_equal(found, expected)
    single = np.zeros(size, dtype=bool)
    for p in {0, size // 2, size - 1} if size else ():
        single[p] = True  # one entry at the start, middle or end of a block or the tail
        assert maps._flat_nonzero(single).tolist() == [p]
        single[p] = False


@pytest.mark.parametrize("method", [*METHODS, "loop"])
def test_locality_closed_forms(method):
    def run(mask, shape):
        if method == "loop":
            return locality_maps_pairloop(mask, shape)
        return locality_maps(mask, shape, method)

    shape = (2, 4, 5)
    zeros = torch.zeros((7, 9), dtype=torch.int64)
    empty = run(torch.zeros((3, 40), dtype=torch.bool), shape)
    _assert_same(empty, zeros, zeros)
    assert empty.n_units == 3 and empty.n_pairs_sc == empty.n_pairs_dc == 0

    one = torch.zeros((1, 40), dtype=torch.bool)
    one[0, 27] = True
    _assert_same(run(one, shape), zeros, zeros)

    # full units: every ordered pixel pair, (H - |dy|)(W - |dx|) per channel pair
    full = run(torch.ones((3, 40), dtype=torch.bool), shape)
    separation = _separation(4, 5)
    expected_sc = 3 * 2 * separation
    expected_sc[3, 4] = 0
    _assert_same(full, expected_sc, 3 * 2 * separation)

    # a 2x2 block: 4 pairs at each of (0, +-1), (+-1, 0) and one at each diagonal
    block = torch.zeros((1, 2, 4, 5), dtype=torch.bool)
    block[0, 1, 1:3, 2:4] = True
    expected_sc = zeros.clone()
    expected_sc[2:5, 3:6] = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]])
    _assert_same(run(block.reshape(1, 40), shape), expected_sc, zeros)

    # two units: the maps add; the same pixel in two channels is a pair at d = 0
    stacked = torch.zeros((2, 2, 4, 5), dtype=torch.bool)
    stacked[0, :, 2, 1] = True
    stacked[1] = block[0]
    expected_dc = zeros.clone()
    expected_dc[3, 4] = 2
    _assert_same(run(stacked.reshape(2, 40), shape), expected_sc, expected_dc)


@pytest.mark.parametrize("shape", SHAPES)
def test_maps_are_symmetric_and_count_all_pairs(shape, seed):
    mask = _random_mask(9, shape, 0.35, seed)
    result = locality_maps(mask, shape)
    channels, height, width = shape
    assert torch.equal(result.s_sc, result.s_sc.flip(0, 1))
    assert torch.equal(result.s_dc, result.s_dc.flip(0, 1))
    assert result.s_sc[height - 1, width - 1] == 0
    c_in = mask.sum(dim=1)
    assert result.n_pairs_sc + result.n_pairs_dc == int((c_in * (c_in - 1)).sum())
    if channels == 1:
        assert result.n_pairs_dc == 0
    dy, dx = result.displacements()
    assert dy[0, 0] == -(height - 1) and dx[-1, -1] == width - 1 and dy[height - 1, 0] == 0


def test_maps_ignore_units_channels_and_position(seed):
    shape = (3, 5, 6)
    gen = torch.Generator().manual_seed(seed)
    mask = _random_mask(8, shape, 0.3, seed)
    result = locality_maps(mask, shape)
    # the order of the units and the labelling of the channels do not matter
    units = torch.randperm(8, generator=gen)
    channels = torch.randperm(3, generator=gen)
    relabelled = mask.view(8, 3, 30)[units][:, channels].reshape(8, 90)
    _assert_same(locality_maps(relabelled, shape), result.s_sc, result.s_dc)
    # a pattern moved across the image keeps its map
    pattern = torch.zeros((1, 3, 5, 6), dtype=torch.bool)
    pattern[0, 0, 0, 0] = pattern[0, 0, 1, 2] = pattern[0, 2, 0, 1] = True
    moved = pattern.roll(shifts=(2, 3), dims=(2, 3))  # stays inside: no wrap-around
    a, b = locality_maps(pattern.reshape(1, 90), shape), locality_maps(moved.reshape(1, 90), shape)
    _assert_same(b, a.s_sc, a.s_dc)
    # transposing the images transposes the maps
    transposed = mask.view(8, 3, 5, 6).transpose(2, 3).reshape(8, 90)
    _assert_same(locality_maps(transposed, (3, 6, 5)), result.s_sc.T, result.s_dc.T)


def test_maps_accept_path_counts(seed):
    shape = (1, 4, 3)
    masks = _net_masks(seed, dims=(12, 6, 5), density=0.4)
    eff = effective_mask(masks, 1)
    result = locality_maps(eff, shape)
    _assert_same(result, *_maps_brute(eff > 0, shape))


def test_pairloop_stops_after_max_pairs(seed):
    shape = (2, 3, 4)
    mask = _random_mask(6, shape, 0.6, seed)
    c_in = mask.sum(dim=1)
    total = int((c_in * (c_in - 1)).sum())
    stopped = locality_maps_pairloop(mask, shape, max_pairs=total // 2)
    assert stopped.n_pairs_sc + stopped.n_pairs_dc == total // 2
    assert stopped.n_units <= 6
    assert locality_maps_pairloop(mask, shape, max_pairs=0).n_units == 0
    everything = locality_maps_pairloop(mask, shape, max_pairs=10 * total + 1)
    assert everything.n_pairs_sc + everything.n_pairs_dc == total


def test_locality_errors_name_the_parameter():
    mask = torch.ones((2, 12), dtype=torch.bool)
    with pytest.raises(ValueError, match="The 'shape' parameter must have C\\*H\\*W equal"):
        locality_maps(mask, (1, 3, 5))
    with pytest.raises(ValueError, match="The 'shape' parameter must be \\(C, H, W\\)"):
        locality_maps(mask, (12, 1))
    with pytest.raises(ValueError, match="The 'method' parameter must be one of"):
        locality_maps(mask, (1, 3, 4), "direct")
    with pytest.raises(ValueError, match="The 'chunk_size' parameter must be an int >= 1. Got 0"):
        locality_maps(mask, (1, 3, 4), chunk_size=0)
    with pytest.raises(ValueError, match="The 'max_pairs' parameter must be an int >= 0"):
        locality_maps_pairloop(mask, (1, 3, 4), max_pairs=-1)
    with pytest.raises(ValueError, match="The 'bins' parameter must be a width or >= 2"):
        connection_resolved_maps(mask, (1, 3, 4), bins=[5, 5])
    with pytest.raises(ValueError, match="The 'bins' parameter must be a width >= 1"):
        connection_resolved_maps(mask, (1, 3, 4), bins=0)


# ---- connection-resolved maps ------------------------------------------------------


def test_connection_resolved_maps_partition_the_units(seed):
    shape = (3, 4, 4)
    gen = torch.Generator().manual_seed(seed)
    density = torch.rand((30, 1), generator=gen)  # C_in spread over 0..48
    mask = torch.rand((30, 48), generator=gen) < density
    c_in = mask.sum(dim=1)
    whole = locality_maps(mask, shape)
    result = connection_resolved_maps(mask, shape, bins=10)
    assert result.edges[0] == 0 and result.edges[-1] > int(c_in.max())
    assert all(b - a == 10 for a, b in zip(result.edges[:-1], result.edges[1:]))
    assert torch.equal(result.s_sc.sum(dim=0), whole.s_sc)
    assert torch.equal(result.s_dc.sum(dim=0), whole.s_dc)
    assert int(result.n_units.sum()) == 30
    for i, (lo, hi) in enumerate(zip(result.edges[:-1], result.edges[1:])):
        members = (c_in >= lo) & (c_in < hi)
        assert result.n_units[i] == int(members.sum())
        reference = locality_maps_pairloop(mask[members], shape)
        _assert_same(result.bin(i), reference.s_sc, reference.s_dc)
    # explicit edges: units outside them are left out
    part = connection_resolved_maps(mask, shape, bins=[5, 20, 30])
    assert part.n_units.tolist() == [
        int(((c_in >= 5) & (c_in < 20)).sum()),
        int(((c_in >= 20) & (c_in < 30)).sum()),
    ]
    assert part.s_sc.shape == (2, 7, 7)


def test_connection_resolved_maps_of_an_empty_mask():
    result = connection_resolved_maps(torch.zeros((4, 9), dtype=torch.bool), (1, 3, 3))
    assert result.edges == (0, 10) and result.n_units.tolist() == [4]
    assert not result.s_sc.any() and not result.s_dc.any()


# ---- IPR ---------------------------------------------------------------------------


def test_ipr_matches_loop_and_closed_forms(seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn((6, 15), generator=gen) * (torch.rand((6, 15), generator=gen) < 0.5)
    w[0] = 0
    w[1, 3] = 2.0
    result = ipr(w)
    for k, row in enumerate(w.double().tolist()):
        denominator = sum(v * v for v in row) ** 2
        if denominator == 0:
            assert math.isnan(result[k])
        else:
            assert result[k].item() == pytest.approx(sum(v**4 for v in row) / denominator)
    assert ipr(torch.eye(4)).tolist() == [1.0] * 4  # one input
    assert ipr(torch.full((1, 8), -0.3)).item() == pytest.approx(1 / 8)  # delocalised
    assert torch.allclose(ipr(w[2:] * 1e-30), result[2:])  # scale free, no underflow
    assert torch.allclose(ipr(w[2:] * 1e30), result[2:])
    with pytest.raises(ValueError, match="The 'w' parameter must be 2-D"):
        ipr(torch.ones(3))


def test_ipr_null_is_the_gaussian_expectation(seed):
    gen = torch.Generator().manual_seed(seed)
    for n in (1, 2, 5, 40):
        sample = ipr(torch.randn((20000, n), generator=gen)).mean().item()
        assert sample == pytest.approx(ipr_null(n), abs=0.01)
    assert ipr_null(1) == 1.0 and math.isnan(ipr_null(0))
    table = ipr_null(torch.tensor([0, 1, 4]))
    assert math.isnan(table[0]) and table[1:].tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="The 'n' parameter must be an int >= 0. Got -2"):
        ipr_null(-2)


# ---- mass within a radius ----------------------------------------------------------


def test_mass_within_radius_matches_loop(seed):
    shape = (2, 5, 4)
    result = locality_maps(_random_mask(12, shape, 0.4, seed), shape)
    for s_map in (result.s_sc, result.s_dc):
        total = int(s_map.sum())
        for r in (0, 1, 1.5, 2.3, 10):
            inside = sum(
                int(s_map[i, j])
                for i in range(9)
                for j in range(7)
                if (i - 4) ** 2 + (j - 3) ** 2 <= r * r
            )
            assert mass_within_radius(s_map, r) == pytest.approx(inside / total)
    assert mass_within_radius(result.s_sc, 0.99) == 0.0
    assert mass_within_radius(result.s_sc, math.hypot(4, 3)) == 1.0
    assert math.isnan(mass_within_radius(torch.zeros((9, 7), dtype=torch.int64), 2))
    with pytest.raises(ValueError, match="The 'r' parameter must be a number >= 0. Got -1"):
        mass_within_radius(result.s_sc, -1)
    with pytest.raises(ValueError, match="The 's_map' parameter must be a \\(2H-1, 2W-1\\)"):
        mass_within_radius(torch.zeros((4, 7)), 1)


@pytest.mark.parametrize(("shape", "c_in"), [((1, 3, 3), 3), ((2, 2, 3), 4), ((1, 2, 4), 5)])
def test_mass_null_is_the_average_over_all_masks(shape, c_in):
    d = math.prod(shape)
    subsets = list(itertools.combinations(range(d), c_in))
    masks = torch.zeros((len(subsets), d), dtype=torch.bool)
    for k, subset in enumerate(subsets):
        masks[k, list(subset)] = True
    per_mask = [locality_maps(m[None], shape).s_sc for m in masks]
    for r in (1, 1.5, 2, 3):
        average = sum(mass_within_radius(s, r) for s in per_mask) / len(per_mask)
        assert average == pytest.approx(mass_within_radius_null(shape, r), rel=1e-12)


def test_mass_null_is_the_full_mask_and_grows_to_one():
    shape = (3, 6, 7)
    full = locality_maps(torch.ones((2, 126), dtype=torch.bool), shape)
    for r in (1, 2.5, 4):
        assert mass_within_radius(full.s_sc, r) == pytest.approx(mass_within_radius_null(shape, r))
    assert mass_within_radius_null(shape, 0.5) == 0.0
    assert mass_within_radius_null(shape, 100) == pytest.approx(1.0)
    assert math.isnan(mass_within_radius_null((2, 1, 1), 1))


def test_resolved_edges_bin_what_exists():
    from imprint.analysis.maps import resolved_edges

    sparse = torch.tensor([0, 1, 2, 2, 2, 3, 3, 4, 5, 9])
    edges = resolved_edges(sparse, width=10)
    assert edges[0] == 2 and edges[-1] == 10  # units with C_in 0 or 1 left out
    assert list(edges) == sorted(set(edges))
    covered = sum(int(((sparse >= a) & (sparse < b)).sum()) for a, b in zip(edges, edges[1:]))
    assert covered == int((sparse >= 2).sum())
    wide = torch.tensor([3, 12, 25, 40])
    assert resolved_edges(wide, width=10) == (2, 10, 20, 30, 40, 41)
    assert resolved_edges(torch.tensor([0, 1, 1])) == ()
    # by hand: 13 values >= 2, quantiles at k/6 of their sorted list, positions 12 k / 6
    # = 2, 4, 6, 8, 10: C_in 2, 3, 5, 8, 12; edges those, 2, and one past the top
    thirteen = torch.tensor([0, 1, 2, 2, 2, 3, 3, 4, 5, 6, 8, 9, 12, 15, 19])
    assert resolved_edges(thirteen) == (2, 3, 5, 8, 12, 20)
    assert resolved_edges(thirteen, max_bins=2) == (2, 5, 20)  # the median alone
    assert resolved_edges(thirteen, width=9) == (2, 9, 18, 20)  # 19 >= 2 x 9: fixed bins
    assert resolved_edges(torch.tensor([2, 3, 20])) == (2, 10, 20, 21)  # 20 = 2 x 10
    assert resolved_edges(torch.tensor([2, 2, 2])) == (2, 3)


def test_ipr_null_is_matched_to_each_units_inputs(seed):
    """Gaussian weights on each unit's own inputs read an excess of 0 against 3/(C_in+2)
    (and a mean IPR at the matched null, not at 3/(D+2)); weights concentrated on one of
    their inputs read a clear excess."""
    from imprint.analysis.connectivity import ipr_excess_reading, ipr_reading

    gen = torch.Generator().manual_seed(seed)
    units, inputs = 400, 100
    c_in = torch.randint(2, 12, (units,), generator=gen)
    mask = torch.zeros(units, inputs, dtype=torch.bool)
    for k in range(units):
        mask[k, torch.randperm(inputs, generator=gen)[: c_in[k]]] = True
    gaussian = torch.randn(units, inputs, generator=gen) * mask
    reading = ipr_reading(gaussian, c_in)
    assert reading.null == pytest.approx((3 / (c_in.double() + 2)).mean().item())
    assert reading.null > 10 * ipr_null(inputs)  # far from the dense null
    assert abs(reading.value - reading.null) < 3 * reading.sd
    excess = ipr_excess_reading(gaussian, c_in)
    assert abs(excess.value) < 3 * excess.sd and excess.null == 0.0
    peaked = gaussian.clone()
    peaked[torch.arange(units), mask.float().argmax(dim=1)] *= 20  # one input dominates
    assert ipr_excess_reading(peaked, c_in).value > 0.3
