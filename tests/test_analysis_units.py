"""Unit selection, node ablation and activity statistics, against direct computations."""

from __future__ import annotations

import pytest
import torch

from imprint.analysis.ablation import ablation_order, node_ablation
from imprint.analysis.activity import excess_kurtosis, hidden_activity
from imprint.analysis.units import select_units, unit_images
from imprint.config import NLGPData
from imprint.data import load_dataset
from imprint.model import FCN
from imprint.train import evaluate


def test_select_units_modes():
    c_in = torch.tensor([0, 5, 1, 9, 2, 5, 0, 3])
    assert select_units(c_in, "most", 3).tolist() == [3, 1, 5]
    assert select_units(c_in, "least", 3).tolist() == [4, 7, 1]  # C_in >= 2 only
    sample = select_units(c_in, "sample", 4, seed=1)
    assert len(set(sample.tolist())) == 4 and all(c_in[sample] > 0)
    assert select_units(c_in, "most", 100).numel() == 6  # connected units only
    with pytest.raises(ValueError, match="'mode' parameter must be one of"):
        select_units(c_in, "best", 3)


def test_unit_images_are_channel_major_and_unpermuted():
    rows = torch.arange(2 * 3 * 4 * 5).reshape(2, 60)
    images = unit_images(rows, (3, 4, 5), torch.tensor([1]))
    assert images.shape == (1, 3, 4, 5)
    assert images[0, 2, 3, 4] == rows[1, 2 * 20 + 3 * 5 + 4]
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    assert torch.equal(unit_images(rows[:, perm], (3, 4, 5), torch.tensor([1]), perm), images)


@pytest.fixture(scope="module")
def small_net():
    data = load_dataset(NLGPData(height=5, width=5, n_train=64, n_val=200, seed=1))
    model = FCN(25, [12], data.num_classes)
    model.reset_parameters(torch.Generator().manual_seed(0))
    return model.eval(), data


def test_ablation_matches_manual_removal(small_net):
    model, data = small_net
    c_in = torch.tensor([3, 25, 7, 0, 12, 25, 1, 9, 4, 4, 8, 2])
    top1_of = lambda m: evaluate(m, data).top1  # noqa: E731
    curve = node_ablation(model, top1_of, c_in, [0, 2, 12], "most")
    assert curve.top1[0] == evaluate(model, data).top1  # nothing removed
    order = ablation_order(c_in, "most")
    assert order[:2].tolist() == [1, 5]
    manual = FCN(25, [12], data.num_classes)
    manual.load_state_dict(model.state_dict())
    with torch.no_grad():
        manual.layers[0].weight[[1, 5]] = 0
        manual.layers[0].bias[[1, 5]] = 0
    assert curve.top1[1] == evaluate(manual.eval(), data).top1
    # the model itself is untouched
    assert (model.layers[0].weight[1] != 0).any()
    with pytest.raises(ValueError, match="'removed' parameter entries must be in"):
        node_ablation(model, top1_of, c_in, [13])


def test_excess_kurtosis_closed_forms(seed):
    gen = torch.Generator().manual_seed(seed)
    gauss = torch.randn((200_000, 2), generator=gen, dtype=torch.float64)
    uniform = torch.rand((200_000, 1), generator=gen, dtype=torch.float64)
    signs = torch.randint(0, 2, (200_000, 1), generator=gen).double() * 2 - 1
    k = excess_kurtosis(torch.cat([gauss, uniform, signs, torch.ones((200_000, 1))], dim=1))
    assert k.per_unit[0] == pytest.approx(0.0, abs=0.05)
    assert k.per_unit[2] == pytest.approx(-1.2, abs=0.02)  # uniform
    assert k.per_unit[3] == pytest.approx(-2.0, abs=1e-3)  # +-1
    assert k.per_unit[4] != k.per_unit[4]  # constant column: NaN, left out of the mean
    assert k.mean == pytest.approx(sum(k.per_unit[:4]) / 4)


def test_hidden_activity_is_the_first_layer_preactivation(small_net):
    model, data = small_net
    pre = hidden_activity(model, data, layer=0, max_samples=50)
    with torch.no_grad():
        expected = model.layers[0](model.norms[0](data.normalize(data.x_val[:50])))
    assert pre.shape == (50, 12) and torch.allclose(pre, expected)


def test_the_kurtosis_null_keeps_each_units_inputs_and_weights():
    """shuffle_within_units permutes a unit's nonzero weights among its own inputs: the
    same support and the same values per unit, another assignment; the reading's null
    is the kurtosis of those shuffled units (equal to the reading when a unit's weights
    are all equal, so that shuffling changes nothing)."""
    from imprint.analysis.activity import kurtosis_reading, shuffle_within_units

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, generator=gen) * (torch.rand(6, 10, generator=gen) < 0.5)
    w[5] = 0.0  # an unconnected unit stays unconnected
    s = shuffle_within_units(w, seed=1)
    assert torch.equal(s != 0, w != 0)
    for unit in range(6):
        assert torch.equal(s[unit].sort().values, w[unit].sort().values)
    assert not torch.equal(s, w)
    assert torch.equal(shuffle_within_units(w, seed=1), s)  # seeded
    x = torch.randn(4000, 10, generator=gen) ** 3  # heavy-tailed inputs
    connected = (w != 0).any(dim=1)
    reading, _ = kurtosis_reading(x @ w.T, connected, x @ s.T)
    null, _ = kurtosis_reading(x @ s.T, connected)
    assert reading.null == pytest.approx(null.value) and reading.null != reading.value
    equal = (w != 0).float()  # equal weights per unit: shuffling is the identity
    same, _ = kurtosis_reading(x @ equal.T, connected, x @ shuffle_within_units(equal).T)
    assert same.null == pytest.approx(same.value, rel=1e-6)
    plain, _ = kurtosis_reading(x @ w.T, connected)
    assert plain.null == 0.0  # without shuffled activity: the Gaussian null
