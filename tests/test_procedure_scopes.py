"""Every mask rule under global scope (one threshold over the pruned layers, one total
count), the seeded streams the rules draw from, and SynFlow's schedule: the paths a
layer-wise run never takes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from imprint.imp import derive_seed
from imprint.procedures import get_procedure
from imprint.procedures.base import Interval, start_from_fresh_init
from imprint.procedures.gmp import GMP
from imprint.procedures.synflow import ITERATIONS, _steps
from imprint.prune import layer_counts, weight_counts
from tests.conftest import round_inputs, smoke_config

INDEX = 3


def _global(procedure: str):
    config = smoke_config(f"prune.procedure={procedure}", "prune.scope=global")
    inputs = round_inputs(config, INDEX, options=True)
    state = {k: v.clone() for k, v in inputs.init_state.items()}
    gen = torch.Generator().manual_seed(5)
    for name in state:  # trained-looking weights and biases: every entry its own size
        if name.startswith("layers."):
            state[name] = torch.randn(state[name].shape, generator=gen)
    return dataclasses.replace(inputs, dense_final=state, previous_final=state)


@pytest.mark.parametrize("name", ["snip", "grasp", "synflow"])
def test_weights_only_criteria_keep_one_total_under_global_scope(name):
    """W (1 - fraction)^r weights in all over the pruned layers, every bias kept; the
    per-layer counts are not the layer-wise schedule's."""
    inputs = _global(name)
    masks = get_procedure(name).mask(inputs)
    layers = inputs.layers
    total = sum(inputs.init_state[f"layers.{layer}.weight"].numel() for layer in layers)
    assert inputs.weight_target() == round(total * 0.7**INDEX)
    counts = weight_counts(masks, layers)
    assert sum(counts.values()) == round(total * 0.7**INDEX)
    assert all(bool(masks[f"layers.{layer}.bias"].all()) for layer in layers)
    layerwise = round_inputs(smoke_config(f"prune.procedure={name}"), INDEX).weight_target()
    assert counts != layerwise


def test_oneshot_keeps_one_total_over_layers_by_one_threshold():
    inputs = _global("oneshot")
    masks = get_procedure("oneshot").mask(inputs)
    layers = inputs.layers
    totals = [t for _, t in layer_counts(masks)]
    alive = sum(layer_counts(masks)[layer][0] for layer in layers)
    assert alive == inputs.target() == round(sum(totals[layer] for layer in layers) * 0.7**INDEX)
    names = [n for n in masks if int(n.split(".")[1]) in layers]
    kept = torch.cat([inputs.dense_final[n].abs()[masks[n]] for n in names])
    gone = torch.cat([inputs.dense_final[n].abs()[~masks[n]] for n in names])
    assert kept.min() >= gone.max()


def test_random_masks_under_global_scope_prune_each_layer_at_its_rate():
    inputs = _global("random")
    masks = get_procedure("random").mask(inputs)
    for layer in inputs.layers:
        alive, total = layer_counts(masks)[layer]
        assert alive == total - round(0.3 * total)  # one step of IMP's rate from dense
    again = get_procedure("random").mask(inputs)
    assert all(torch.equal(masks[k], again[k]) for k in masks)  # its own seeded stream
    other = get_procedure("random").mask(dataclasses.replace(inputs, index=INDEX + 1))
    assert not all(torch.equal(masks[k], other[k]) for k in masks)


def test_gmp_prunes_one_total_by_magnitude_under_global_scope():
    inputs = _global("gmp")
    state, masks = inputs.dense_final, inputs.dense_masks()
    layers = inputs.layers
    first = sum(layer_counts(masks)[layer][0] for layer in layers)
    out = GMP.during(
        Interval(k=2, n=4, state=state, masks=masks, first=first, target=100, layers=layers)
    )
    expected = round(first + (100 - first) * (1 - (1 - 2 / 4) ** 3))
    assert sum(layer_counts(out)[layer][0] for layer in layers) == expected
    names = [n for n in out if int(n.split(".")[1]) in layers]
    kept = torch.cat([state[n].abs()[out[n]] for n in names])
    gone = torch.cat([state[n].abs()[~out[n]] for n in names])
    assert kept.min() >= gone.max()


def test_each_stream_has_its_own_seed():
    """generator(purpose, round): seeded by (purpose, seeds.prune, round); the fresh
    initialisation of reinit by ("reinit", seeds.init, round)."""
    inputs = round_inputs(smoke_config(), INDEX)

    def draw(gen):
        return torch.rand(4, generator=gen)

    expected = torch.Generator().manual_seed(derive_seed("prune", 0, INDEX))
    assert torch.equal(draw(inputs.generator("prune")), draw(expected))
    at_zero = torch.Generator().manual_seed(derive_seed("scores", 0, 0))
    assert torch.equal(draw(inputs.generator("scores", round_index=0)), draw(at_zero))
    assert not torch.equal(draw(inputs.generator("prune")), draw(inputs.generator("scores")))
    other = round_inputs(smoke_config("seeds.prune=1"), INDEX)
    assert not torch.equal(draw(inputs.generator("prune")), draw(other.generator("prune")))
    masks = inputs.dense_masks()
    fresh = start_from_fresh_init(inputs, masks)
    built = inputs.build_state(derive_seed("reinit", inputs.config.seeds.init, INDEX))
    assert all(
        torch.equal(fresh[k], built[k] * masks[k] if k in masks else built[k]) for k in fresh
    )
    later = start_from_fresh_init(dataclasses.replace(inputs, index=INDEX + 1), masks)
    assert not torch.equal(fresh["layers.0.weight"], later["layers.0.weight"])
    assert not torch.equal(fresh["layers.0.weight"], inputs.init_state["layers.0.weight"])


def test_synflow_schedule_is_exponential_in_density():
    """Step k of ITERATIONS keeps round(total (target / total)^(k / ITERATIONS)): the
    density falls geometrically from 1 to the target, per layer or in all."""
    assert ITERATIONS == 100
    assert _steps(100, 1000, 50) == round(1000 * 0.1**0.5) == 316
    assert _steps(100, 1000, 1) == round(1000 * 0.1**0.01) == 977
    assert _steps({0: 100, 1: 8}, {0: 1000, 1: 8}, 50) == {0: 316, 1: 8}
    assert _steps({0: 0}, {0: 0}, 10) == {0: 0}  # an empty layer stays empty
    assert _steps(0, 0, 10) == 0


def test_score_batches_and_random_masks_come_from_their_streams():
    """SNIP's batch: train.batch_size indices drawn from the ("scores", seeds.prune, 0)
    stream over the whole training set; GraSP's: per_class images of each class in
    label order; random masks: scores from the ("prune", seeds.prune, round) stream."""
    from imprint.procedures.gradients import score_batch
    from imprint.prune import prune_by_scores, random_scores

    inputs = round_inputs(smoke_config(), INDEX)
    data = inputs.data
    gen = torch.Generator().manual_seed(derive_seed("scores", 0, 0))
    idx = torch.randint(data.x_train.shape[0], (inputs.config.train.batch_size,), generator=gen)
    x, y = score_batch(inputs)
    assert torch.equal(y, data.y_train[idx])
    assert torch.equal(x, data.normalize(data.x_train[idx]).double())
    _, balanced = score_batch(inputs, 5)
    assert balanced.tolist() == [0] * 5 + [1] * 5
    random = round_inputs(smoke_config("prune.procedure=random"), INDEX)
    gen = torch.Generator().manual_seed(derive_seed("prune", 0, INDEX))
    scores = random_scores(random.previous_masks, random.layers, gen)
    expected = prune_by_scores(scores, random.previous_masks, keep=random.target())
    masks = get_procedure("random").mask(random)
    assert all(torch.equal(masks[k], expected[k]) for k in masks)
