"""A group's per-round figures pooled over its seeds (imprint.analyses.pooled): sums are
sums, means and sds are over seeds, the ablation's difference is paired seed by seed;
quiet pixels are the ones that barely vary, whatever the scale of the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint.analyses import Seeds
from imprint.analyses.pooled import (
    pool_ablation,
    pool_connectivity,
    pool_curves,
    pool_locality_maps,
    pool_pixel_map,
    quiet_share,
)
from imprint.analysis.connectivity import quiet_pixels
from imprint.plots import plot_pixel_map
from imprint.unit_plots import plot_ablation
from tests.conftest import clipped_texts

RNG = np.random.default_rng(0)


def _seeds(arrays=None, results=None, curves=None, n=3) -> Seeds:
    return Seeds(
        4,
        list(range(n)),
        results or [{} for _ in range(n)],
        arrays or [{} for _ in range(n)],
        curves or [[] for _ in range(n)],
    )


def test_maps_and_counts_are_summed_over_seeds():
    arrays = [
        {
            "s_sc_l0": RNG.integers(0, 9, (7, 7)),
            "s_dc_l0": np.zeros((7, 7), dtype=np.int64),
            "s_sc_pixel_usage_l0": RNG.random((7, 7)),
            "c_in_l0": RNG.integers(0, 5, 10),
            "pixel_map": RNG.integers(0, 4, (1, 4, 4)),
        }
        for _ in range(3)
    ]
    s = _seeds(arrays)
    maps = pool_locality_maps(s, 0).shown
    assert np.array_equal(maps["s_sc"].numpy(), sum(a["s_sc_l0"] for a in arrays))
    assert np.allclose(maps["expected"].numpy(), sum(a["s_sc_pixel_usage_l0"] for a in arrays))
    assert maps["s_dc"] is None  # one channel: no different-channel pairs to draw
    assert "summed over 3 seeds" in maps["title"]
    c_in = pool_connectivity(s, 0).shown["c_in"]
    assert sorted(c_in.tolist()) == sorted(np.concatenate([a["c_in_l0"] for a in arrays]).tolist())
    total = pool_pixel_map(s, 0).shown["map"].numpy()
    assert np.array_equal(total, sum(a["pixel_map"] for a in arrays))
    assert pool_locality_maps(_seeds(arrays[:2] + [{}]), 0).skip  # a seed without the map


def test_curves_are_mean_and_sd_at_the_steps_every_seed_has():
    curves = [
        [
            {
                "step": t,
                "train_loss": 1 / t + k,
                "val_loss": 2 / t,
                "train_top1": 0.1 * k,
                "val_top1": 0.5,
            }
            for t in steps
        ]
        for k, steps in enumerate(([10, 20, 30], [10, 20, 30], [10, 20]))
    ]
    shown = pool_curves(_seeds(curves=curves), 0).shown
    assert [row["step"] for row in shown["curves"]] == [10, 20]
    assert shown["curves"][0]["train_loss"] == pytest.approx(0.1 + 1.0)
    assert shown["spread"][0]["train_loss"] == pytest.approx(1.0)  # sd of 0, 1, 2
    assert shown["spread"][1]["val_top1"] == pytest.approx(0.0)


def _ablation(most, random):
    return {
        "ablation": {
            "most": {"removed": [0, 5, 10], "top1": most},
            "random": {"removed": [0, 5, 10], "top1": random},
        },
        "ablation_chance": 0.25,
    }


def test_ablation_is_mean_sd_and_a_paired_difference():
    most = [[0.9, 0.5, 0.25], [0.9, 0.7, 0.25], [0.9, 0.6, 0.25]]
    random = [[0.9, 0.8, 0.25], [0.9, 0.75, 0.25], [0.9, 0.85, 0.25]]
    shown = pool_ablation(_seeds(results=[_ablation(m, r) for m, r in zip(most, random)]), 0).shown
    by_mode = {c.mode: c for c in shown["curves"]}
    assert by_mode["most"].top1[1] == pytest.approx(0.6)
    assert shown["spread"]["most"][1] == pytest.approx(0.1)
    removed, mean, sd = shown["difference"]
    assert removed == [0, 5, 10] and mean[1] == pytest.approx(-0.2)
    # paired: the sd of the per-seed differences (-0.3, -0.05, -0.25), not of the means
    assert sd[1] == pytest.approx(np.std([-0.3, -0.05, -0.25], ddof=1))
    assert shown["units"] == 10 and shown["chance"] == 0.25
    figure = plot_ablation(
        shown["curves"], 10, 0.25, spread=shown["spread"], difference=shown["difference"], seeds=3
    )
    assert len(figure.axes) == 2  # the curves, and the paired difference below
    assert not clipped_texts(figure)
    unequal = [_ablation(m, r) for m, r in zip(most, random)]
    unequal[2]["ablation"]["most"]["removed"] = [0, 4, 10]
    assert "different numbers" in pool_ablation(_seeds(results=unequal), 0).skip


def test_quiet_pixels_are_those_that_barely_vary_at_any_scale():
    images = torch.rand(500, 36)
    images.view(500, 6, 6)[:, 0, :] = 0.0  # the top row: always black
    images.view(500, 6, 6)[:, :, 5] = 0.5 + 0.001 * torch.rand(500, 6)  # nearly constant
    quiet = quiet_pixels(images, (1, 6, 6))
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[0, :] = True
    expected[:, 5] = True
    assert torch.equal(quiet, expected)
    assert torch.equal(quiet_pixels((255 * images).round().to(torch.uint8), (1, 6, 6)), expected)
    pmap = np.ones((1, 6, 6))
    assert quiet_share(pmap, expected.numpy()) == pytest.approx(11 / 36)
    figure = plot_pixel_map(torch.ones(1, 6, 6), quiet=expected.numpy(), share=11 / 36)
    assert "11 quiet pixels, 30.6% of connections" in figure.axes[0].get_title().replace("\n", " ")
    with pytest.raises(ValueError, match="images"):
        quiet_pixels(torch.rand(1, 36), (1, 6, 6))


def test_what_cannot_pool_says_what_is_missing_and_one_seed_has_no_spread():
    empty = _seeds()
    for pool, missing in (
        (pool_curves, "training curves"),
        (pool_connectivity, "layer 0's C_in"),
        (pool_pixel_map, "a pixel map"),
        (pool_locality_maps, "layer 0's S_sc map"),
        (pool_ablation, "a node ablation"),
    ):
        reason = pool(empty, 0).skip
        assert f"not every one of the 3 seeds has {missing}" in reason, reason
        assert "round 4" in reason
    one = _seeds(results=[_ablation([0.9, 0.6, 0.25], [0.9, 0.8, 0.25])], n=1)
    shown = pool_ablation(one, 0).shown
    assert shown["spread"]["most"] == [0.0, 0.0, 0.0]  # one seed: no sd, not NaN
    assert shown["difference"][2] == [0.0, 0.0, 0.0] and shown["seeds"] == 1


def test_pooled_titles_and_quiet_pixels_of_every_seed():
    quiet = [np.zeros((4, 4), dtype=bool) for _ in range(3)]
    for q in quiet:
        q[0, :] = True
    quiet[1][3, 3] = True  # quiet in one seed only: not quiet over the seeds
    arrays = [
        {"pixel_map": np.ones((1, 4, 4), dtype=np.int64), "quiet_pixels": q, "c_in_l1": np.ones(4)}
        for q in quiet
    ]
    results = [{"pixel_map": {"quiet_threshold": "sd below 10% of the median pixel's"}}] * 3
    shown = pool_pixel_map(_seeds(arrays, results), 0).shown
    assert shown["quiet"].sum() == 4 and not shown["quiet"][3, 3]
    assert shown["share"] == pytest.approx(12 / 48)
    assert shown["threshold"] == "sd below 10% of the median pixel's"
    assert shown["title"] == "connections per input pixel, summed over 3 seeds"
    assert (
        "quiet"
        not in pool_pixel_map(_seeds([{"pixel_map": a["pixel_map"]} for a in arrays]), 0).shown
    )
    title = pool_connectivity(_seeds(arrays), 1).shown["title"]
    assert title == "layer 1: C_in of the units of 3 seeds pooled (12 connected, 0 disconnected)"
    assert np.isnan(quiet_share(np.zeros((1, 2, 2)), np.ones((2, 2), dtype=bool)))
    curves = [
        [{"step": 10, "train_loss": 1.0, "val_loss": 1.0, "train_top1": 0.5, "val_top1": 0.5}]
    ]
    shown = pool_curves(_seeds(curves=curves * 3), 0).shown
    assert shown["title"] == "round 4: mean ± sd over 3 seeds"
    assert shown["spread"][0]["step"] == 10 and shown["spread"][0]["val_top1"] == 0.0


def test_colour_maps_keep_their_different_channel_pairs_and_two_seeds_have_a_spread():
    arrays = [
        {
            "s_sc_l0": np.full((3, 3), k),
            "s_dc_l0": np.full((3, 3), 2 * k),
            "s_sc_pixel_usage_l0": np.ones((3, 3)),
            "c_in_l0": np.array([0, k, 2]),
        }
        for k in (1, 2)
    ]
    s = _seeds(arrays, n=2)
    assert np.array_equal(pool_locality_maps(s, 0).shown["s_dc"].numpy(), np.full((3, 3), 6))
    assert "(4 connected, 2 disconnected)" in pool_connectivity(s, 0).shown["title"]
    curves = [
        [{"step": 5, "train_loss": v, "val_loss": v, "train_top1": v, "val_top1": v}]
        for v in (0, 1)
    ]
    spread = pool_curves(_seeds(curves=curves, n=2), 0).shown["spread"][0]
    assert spread["train_loss"] == pytest.approx(2**-0.5)  # the sample sd of 0 and 1
