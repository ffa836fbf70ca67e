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
    prune_by_scores,
    prune_to_counts,
    prune_weights_by_scores,
    random_prune,
    schedule_counts,
    validate_masks,
    weight_counts,
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


def magnitudes_of(weights, layers):
    from imprint.prune import magnitudes

    return magnitudes(weights, layers)


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
        (lambda w, m: magnitude_prune(w, m, -0.1), "'fraction[0]' parameter must be in [0, 1)"),
        (lambda w, m: prune_by_scores(w, m), "Pass exactly one of the 'fraction' and 'keep'"),
        (
            lambda w, m: prune_by_scores(w, m, fraction=0.1, keep={0: 1}),
            "Pass exactly one of the 'fraction' and 'keep'",
        ),
        (
            lambda w, m: prune_by_scores(w, m, keep={0: 1}, scope="global"),
            "'keep' parameter must be one total count when scope='global'",
        ),
        (
            lambda w, m: prune_by_scores(w, m, keep=3, scope="layer"),
            "'keep' parameter must map layers to counts when scope='layer'",
        ),
        (
            lambda w, m: prune_by_scores(w, m, keep={0: 10**6}),
            "'keep' parameter for layer 0 must be in [0, 252]. Got 1000000.",
        ),
        (
            lambda w, m: prune_by_scores(w, m, keep={0: -1}),
            "'keep' parameter for layer 0 must be in [0, 252]. Got -1.",
        ),
        (
            lambda w, m: prune_by_scores(magnitudes_of(w, (0, 1)), m, keep=10**6, scope="global"),
            "'keep' parameter must be in [0, 343]. Got 1000000.",
        ),
        (
            lambda w, m: prune_by_scores({"layers.0.weight": w["layers.0.weight"]}, m, keep={0: 1}),
            "needs entry 'layers.0.bias' of the mask's shape",
        ),
        (
            lambda w, m: prune_by_scores(
                {**w, "layers.0.weight": w["layers.0.weight"][:, :2]}, m, keep={0: 1}
            ),
            "needs entry 'layers.0.weight' of the mask's shape",
        ),
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


def test_validate_masks_names_each_fault():
    weights = _weights(0)
    good = full_masks(weights)
    for masks, message in (
        ({**good, "layers.9.weight": good["layers.0.weight"]}, "'layers.9.weight' has no matching"),
        ({**good, "layers.0.bias": good["layers.0.bias"].float()}, "'layers.0.bias' must be bool"),
        ({k: v for k, v in good.items() if k != "layers.2.bias"}, "'layers.2.bias' is missing"),
    ):
        with pytest.raises(ValueError) as info:
            validate_masks(masks, weights, source="mask.safetensors")
        assert str(info.value).startswith("mask.safetensors: entry ") and message in str(info.value)


def test_ties_remove_the_lower_index_first():
    """Equal scores: the entries of lower flat index (weights before the bias) go first,
    so that a mask is a function of its scores alone."""
    weights = {"layers.0.weight": torch.zeros(2, 3), "layers.0.bias": torch.zeros(2)}
    masks = full_masks(weights)
    scores = {name: torch.ones_like(value) for name, value in weights.items()}
    kept = prune_by_scores(scores, masks, keep={0: 5})
    assert kept["layers.0.weight"].tolist() == [[False, False, False], [True, True, True]]
    assert kept["layers.0.bias"].tolist() == [True, True]
    both = prune_by_scores(scores, masks, keep=3, scope="global")
    assert both["layers.0.weight"].flatten().tolist() == [False] * 5 + [True]
    assert both["layers.0.bias"].tolist() == [True, True]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_weights_only_pruning_keeps_every_bias(scope):
    """prune_weights_by_scores (SNIP, GraSP, SynFlow): ``keep`` counts weights, the
    highest-scoring weights stay, and every alive bias stays whatever the weights'
    scores; with global scope one threshold over the named layers' weights."""
    weights = _weights(3)
    masks = full_masks(weights)
    masks["layers.1.bias"][0] = False  # a dead bias stays dead
    scores = {f"layers.{layer}.weight": weights[f"layers.{layer}.weight"].abs() for layer in (0, 1)}
    keep = {0: 30, 1: 11} if scope == "layer" else 41
    out = prune_weights_by_scores(scores, masks, keep=keep, scope=scope)
    for layer in (0, 1):
        assert torch.equal(out[f"layers.{layer}.bias"], masks[f"layers.{layer}.bias"])
    assert torch.equal(out["layers.2.weight"], masks["layers.2.weight"])  # not named: as it was
    counts = weight_counts(out, [0, 1])
    if scope == "layer":
        assert counts == {0: 30, 1: 11}
        for layer in (0, 1):
            s = scores[f"layers.{layer}.weight"]
            kept = out[f"layers.{layer}.weight"]
            assert s[kept].min() >= s[~kept].max()
    else:
        assert counts[0] + counts[1] == 41
        kept_scores = torch.cat(
            [scores[f"layers.{k}.weight"][out[f"layers.{k}.weight"]] for k in (0, 1)]
        )
        gone = torch.cat([scores[f"layers.{k}.weight"][~out[f"layers.{k}.weight"]] for k in (0, 1)])
        assert kept_scores.min() >= gone.max()
