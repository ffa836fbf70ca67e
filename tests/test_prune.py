from __future__ import annotations

import pytest
import torch

from imprint.model import FCN
from imprint.prune import (
    apply_masks,
    connected_units,
    full_masks,
    layer_counts,
    layer_names,
    magnitude_prune,
    prune_to_counts,
    random_prune,
    schedule_counts,
    validate_masks,
)


def _weights(seed: int, dims=(20, 12, 7, 3)) -> dict[str, torch.Tensor]:
    model = FCN(dims[0], list(dims[1:-1]), dims[-1])
    model.reset_parameters(torch.Generator().manual_seed(seed))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 100)
    for layer in range(model.n_layers):  # non-zero biases so they take part in the ranking
        name = layer_names(layer)[1]
        state[name] = torch.randn(state[name].shape, generator=gen) * 0.3
    return state


def _scores(weights, masks, layer):
    names = layer_names(layer)
    score = torch.cat([weights[n].abs().flatten() for n in names])
    alive = torch.cat([masks[n].flatten() for n in names])
    return score, alive


def test_layerwise_fraction_is_exact_and_compounds(seed):
    weights = _weights(seed)
    masks = full_masks(weights)
    totals = [t for _, t in layer_counts(masks)]
    p = 0.3
    for k in range(1, 8):
        before = layer_counts(masks)
        masks = magnitude_prune(weights, masks, {0: p, 1: p}, "layer")
        after = layer_counts(masks)
        for layer in (0, 1):
            assert before[layer][0] - after[layer][0] == round(p * before[layer][0])
            # compounding: within rounding of one entry per round of (1 - p)^k
            assert abs(after[layer][0] - totals[layer] * (1 - p) ** k) <= k
        assert after[2] == before[2]  # a layer not named is untouched
        # the shared schedule reproduces the exact counts
        assert schedule_counts(totals, {0: p, 1: p}, k) == {0: after[0][0], 1: after[1][0]}


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_kept_magnitudes_dominate_pruned_ones(seed, scope):
    weights = _weights(seed)
    masks = full_masks(weights)
    for _ in range(3):
        masks = magnitude_prune(weights, masks, {0: 0.4, 1: 0.4}, scope)
    groups = [[0], [1]] if scope == "layer" else [[0, 1]]
    for group in groups:
        parts = [_scores(weights, masks, layer) for layer in group]
        score = torch.cat([s for s, _ in parts])
        alive = torch.cat([a for _, a in parts])
        assert score[alive].min() >= score[~alive].max()


def test_global_scope_uses_one_threshold_over_layers():
    weights = _weights(3)
    weights["layers.1.weight"] = weights["layers.1.weight"] * 10  # layer 1 much larger
    masks = magnitude_prune(weights, full_masks(weights), {0: 0.5, 1: 0.5}, "global")
    counts = layer_counts(masks)
    total_before = counts[0][1] + counts[1][1]
    assert counts[0][0] + counts[1][0] == total_before - round(0.5 * total_before)
    assert counts[1][0] / counts[1][1] > counts[0][0] / counts[0][1]


def test_masks_are_monotone_and_inputs_untouched(seed):
    weights = _weights(seed)
    masks = full_masks(weights)
    snapshot = {k: v.clone() for k, v in weights.items()}
    for _ in range(5):
        new = magnitude_prune(weights, masks, 0.3)
        for name in masks:
            assert not (new[name] & ~masks[name]).any()  # nothing revived
        masks = new
    for name in weights:
        assert torch.equal(weights[name], snapshot[name])


def test_random_prune_density_and_nesting(seed):
    weights = _weights(seed)
    masks = full_masks(weights)
    gen = torch.Generator().manual_seed(seed)
    new = random_prune(masks, {0: 0.5}, gen)
    alive, total = layer_counts(new)[0]
    assert alive == total - round(0.5 * total)
    again = random_prune(new, {0: 0.5}, gen)
    assert not (again[layer_names(0)[0]] & ~new[layer_names(0)[0]]).any()


def test_prune_to_counts_keeps_largest():
    weights = _weights(4)
    masks = prune_to_counts(weights, full_masks(weights), {0: 17})
    score, alive = _scores(weights, masks, 0)
    assert int(alive.sum()) == 17
    assert score[alive].min() >= score[~alive].max()
    with pytest.raises(ValueError, match="'keep' parameter for layer 0 must be in"):
        prune_to_counts(weights, masks, {0: 18})


def test_apply_masks_zeroes_exactly_and_connected_units():
    weights = _weights(5)
    masks = full_masks(weights)
    masks["layers.0.weight"][3:] = False  # only units 0..2 of layer 0 keep inputs
    masked = apply_masks(weights, masks)
    assert (masked["layers.0.weight"][3:] == 0).all()
    assert torch.equal(masked["layers.0.weight"][:3], weights["layers.0.weight"][:3])
    assert connected_units(masks)[0] == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda w, m: magnitude_prune(w, m, 1.5),
            "'fraction[0]' parameter must be in [0, 1). Got 1.5.",
        ),
        (lambda w, m: magnitude_prune(w, m, {7: 0.1}), "names layer 7; the net has 3"),
        (
            lambda w, m: magnitude_prune(w, m, 0.1, "local"),
            "'scope' parameter must be 'layer' or 'global'",
        ),
        (lambda w, m: magnitude_prune(w, m, {0: 0.1, 1: 0.2}, "global"), "must be one rate"),
    ],
)
def test_bad_arguments_are_named(call, message):
    weights = _weights(0)
    with pytest.raises(ValueError) as info:
        call(weights, full_masks(weights))
    assert message in str(info.value)


def test_validate_masks():
    weights = _weights(0)
    masks = full_masks(weights)
    validate_masks(masks, weights)
    masks["layers.0.weight"] = masks["layers.0.weight"][:, :3]
    with pytest.raises(ValueError, match="'layers.0.weight' must have shape"):
        validate_masks(masks, weights)
