"""Pruning procedures as registry entries: every criterion on IMP's density axis, its
invariants, and each score against an independent computation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from imprint.imp import _layer_rates, run_imp
from imprint.procedures import PROCEDURES, get_procedure
from imprint.procedures.grasp import hessian_gradient
from imprint.procedures.snip import snip_scores
from imprint.procedures.synflow import synflow_scores
from imprint.prune import (
    full_masks,
    layer_counts,
    prune_by_scores,
    schedule_counts,
    weight_counts,
)
from imprint.runs import RunFolder
from tests.conftest import round_inputs, smoke_config

NEW = ("snip", "grasp", "synflow")


def _quiet(_):
    return None


def _inputs(config, index=1, masks=None):
    return round_inputs(config, index, masks)


def test_registry_and_unknown_name():
    assert set(PROCEDURES) >= {"imp", "oneshot", "random", "reinit", "finetune", *NEW}
    with pytest.raises(ValueError, match="prune.procedure must be one of imp, "):
        get_procedure("magic")


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "run"
    return run_imp(smoke_config(), out, device="cpu", progress=False, log=_quiet)


@pytest.mark.parametrize("name", NEW)
def test_new_procedures_sit_on_imps_density_axis(name, imp_run, tmp_path):
    """Each round keeps IMP's schedule of every layer's weights and all its biases (the
    criteria prune weights alone); following an IMP run, exactly its weight counts. The
    masks of scores that do not change across rounds (SNIP, GraSP) are nested; a rerun
    gives the same masks."""
    config = smoke_config(f"prune.procedure={name}")
    result = run_imp(config, tmp_path / "a", device="cpu", progress=False, log=_quiet)
    folder = RunFolder(tmp_path / "a")
    masks = [folder.round_masks(r) for r in folder.completed_rounds()]
    rates = _layer_rates(config)
    totals = {layer: masks[0][f"layers.{layer}.weight"].numel() for layer in rates}
    for r, mask in enumerate(masks):
        assert weight_counts(mask, list(rates)) == schedule_counts(totals, rates, r)
        assert all(bool(mask[f"layers.{layer}.bias"].all()) for layer in rates)
    assert len(result.rounds) == len(imp_run.rounds)
    if name != "synflow":
        for before, after in zip(masks, masks[1:]):
            assert all(bool((after[k] <= before[k]).all()) for k in after)
    init = folder.load_tensors(folder.init_path)
    start = folder.round_state(2, "start")
    for key, mask in masks[2].items():  # trains from the initial weights x mask
        assert torch.equal(start[key], init[key] * mask)
    again = run_imp(config, tmp_path / "b", device="cpu", progress=False, log=_quiet)
    other = RunFolder(again.folder)
    assert all(torch.equal(masks[-1][k], other.round_masks(3)[k]) for k in masks[-1])
    following = run_imp(
        smoke_config(f"prune.procedure={name}", f'prune.reference_run="{imp_run.folder}"'),
        tmp_path / "c",
        device="cpu",
        progress=False,
        log=_quiet,
    )
    imp_folder, ours = RunFolder(imp_run.folder), RunFolder(following.folder)
    for r in ours.completed_rounds():
        assert weight_counts(ours.round_masks(r), list(rates)) == weight_counts(
            imp_folder.round_masks(r), list(rates)
        )


def _functional_loss(state, masks, x, y, eps, temperature=1.0):
    """The FCN's training loss written with plain functional ops (no nn.Module), the
    logits divided by ``temperature``."""
    h = x
    n = sum(1 for k in state if k.startswith("layers.") and k.endswith(".weight"))
    for layer in range(n):
        mean, var = h.mean(0), h.var(0, unbiased=False)
        h = (h - mean) / torch.sqrt(var + eps) * state[f"norms.{layer}.weight"] + state[
            f"norms.{layer}.bias"
        ]
        w = state[f"layers.{layer}.weight"] * masks[f"layers.{layer}.weight"]
        b = state[f"layers.{layer}.bias"] * masks[f"layers.{layer}.bias"]
        h = h @ w.T + b
        if layer < n - 1:
            h = torch.relu(h)
    return F.cross_entropy(h / temperature, y)


def _leaf_state(inputs):
    return {
        k: v.to(torch.float64).clone().requires_grad_(k.startswith("layers."))
        for k, v in inputs.init_state.items()
    }


def test_snip_scores_are_abs_gradient_times_weight():
    config = smoke_config("prune.procedure=snip")
    inputs = _inputs(config)
    scores = snip_scores(inputs)
    from imprint.procedures.gradients import score_batch

    x, y = score_batch(inputs)
    state = _leaf_state(inputs)
    masks = full_masks(inputs.init_state)
    loss = _functional_loss(state, masks, x, y, config.model.bn_eps)
    names = [k for k in scores]
    grads = torch.autograd.grad(loss, [state[k] for k in names])
    for name, g in zip(names, grads):
        torch.testing.assert_close(
            scores[name], (g * state[name]).abs().detach(), rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_hessian_gradient_matches_finite_differences(temperature):
    """H g = d/de g(w + e g) at e = 0, by central differences in float64, for the loss
    of the logits divided by prune.options.temperature."""
    config = smoke_config("prune.procedure=grasp", f"prune.options.temperature={temperature}")
    inputs = dataclasses.replace(
        _inputs(config), options=get_procedure("grasp").parse_options(config.prune.options)
    )
    weights, hg = hessian_gradient(inputs)
    from imprint.procedures.gradients import score_batch

    assert list(weights) == ["layers.0.weight", "layers.1.weight"]  # weights alone
    x, y = score_batch(inputs, inputs.options.samples_per_class)
    masks = full_masks(inputs.init_state)
    names = list(weights)

    def gradient(shift):
        state = _leaf_state(inputs)
        with torch.no_grad():
            for name in names:
                state[name] += shift.get(name, 0)
        loss = _functional_loss(state, masks, x, y, config.model.bn_eps, temperature)
        return dict(zip(names, torch.autograd.grad(loss, [state[k] for k in names])))

    g = gradient({})
    eps = 1e-4 * temperature  # g shrinks as 1/T: steps of ~1e-4 in the weights
    plus = gradient({k: eps * g[k] for k in names})
    minus = gradient({k: -eps * g[k] for k in names})
    for name in names:
        numeric = (plus[name] - minus[name]) / (2 * eps)
        torch.testing.assert_close(hg[name].detach(), numeric, rtol=1e-4, atol=1e-8)


def test_synflow_scores_in_closed_form():
    """With |w|, BN at identity up to 1/sqrt(1 + eps) and an all-ones input, every
    activation is positive and R = s1' |W2| s0' (|W1| s 1 + |b1|) + ...: for one hidden
    layer dR/dW1[j, i] = c0 c1 sum_k |W2[k, j]| and dR/db1[j] = c1 sum_k |W2[k, j]|."""
    config = smoke_config("model.hidden=[6]")
    inputs = _inputs(config)
    masks = full_masks(inputs.init_state)
    scores = synflow_scores(inputs, masks)
    c = (1 + config.model.bn_eps) ** -0.5  # BN in evaluation mode at initialisation
    w1 = inputs.init_state["layers.0.weight"].double().abs()
    w2 = inputs.init_state["layers.1.weight"].double().abs()
    column = w2.sum(0)  # (hidden,)
    expected_w1 = c * c * column[:, None] * w1
    torch.testing.assert_close(scores["layers.0.weight"], expected_w1, rtol=1e-9, atol=1e-12)
    assert set(scores) == {"layers.0.weight"}  # weights alone (one pruned layer here)


def test_prune_by_scores_layer_and_global():
    weights = {
        "layers.0.weight": torch.zeros(2, 3),
        "layers.0.bias": torch.zeros(2),
        "layers.1.weight": torch.zeros(1, 2),
        "layers.1.bias": torch.zeros(1),
    }
    masks = full_masks(weights)
    scores = {
        "layers.0.weight": torch.tensor([[-5.0, 1.0, 2.0], [3.0, -1.0, 0.5]]),
        "layers.0.bias": torch.tensor([4.0, -2.0]),
        "layers.1.weight": torch.tensor([[10.0, -10.0]]),
        "layers.1.bias": torch.tensor([0.0]),
    }
    layer = prune_by_scores(scores, masks, keep={0: 3, 1: 1})
    assert layer["layers.0.weight"].tolist() == [[False, False, True], [True, False, False]]
    assert layer["layers.0.bias"].tolist() == [True, False]
    assert layer["layers.1.weight"].tolist() == [[True, False]]
    glob = prune_by_scores(scores, masks, keep=2, scope="global")
    assert sum(int(m.sum()) for m in glob.values()) == 2
    assert bool(glob["layers.1.weight"][0, 0]) and bool(glob["layers.0.bias"][0])
    # Dead entries stay dead whatever their score.
    again = prune_by_scores(scores, layer, fraction={0: 0.34})  # 3 alive: 1 goes
    assert int(again["layers.0.weight"].sum() + again["layers.0.bias"].sum()) == 2
    assert not bool(again["layers.0.weight"][0, 0])
    with pytest.raises(ValueError, match="exactly one"):
        prune_by_scores(scores, masks)
    with pytest.raises(ValueError, match="finite"):
        prune_by_scores(
            {**scores, "layers.1.bias": torch.tensor([float("nan")])}, masks, keep={1: 1}
        )


def test_target_follows_imps_schedule():
    config = smoke_config()
    inputs = _inputs(config, index=3)
    totals = [t for _, t in layer_counts(inputs.previous_masks)]
    assert inputs.target() == schedule_counts(totals, _layer_rates(config), 3)
    glob = _inputs(smoke_config("prune.scope=global"), index=2)
    total = sum(totals[layer] for layer in glob.layers)
    assert glob.target() == round(total * 0.7**2)


def test_a_procedure_declares_its_own_options():
    """[prune.options] is the procedure's options class: validated with the config,
    named when wrong, and given to the rules as RoundInputs.options."""
    from imprint.config import ConfigError

    grasp = get_procedure("grasp")
    assert grasp.parse_options({}).temperature == 200.0  # the authors' code's T
    assert grasp.describe()["options"] == {"temperature": 200.0, "samples_per_class": 25}
    assert get_procedure("imp").describe()["options"] == {}
    with pytest.raises(ConfigError, match=r"prune.options.temp: .*takes temperature"):
        smoke_config("prune.procedure=grasp", "prune.options.temp=2")
    with pytest.raises(ConfigError, match=r"prune.options.temperature: .*'imp' takes no options"):
        smoke_config("prune.options.temperature=2")
    with pytest.raises(ConfigError, match=r"prune.options.temperature: .*greater than 0"):
        smoke_config("prune.procedure=grasp", "prune.options.temperature=0")
    # T = 200 spelled out is the default; another T ranks other weights
    config = smoke_config("prune.procedure=grasp")
    plain = _inputs(config)
    default = hessian_gradient(plain)[1]
    spelled = hessian_gradient(
        dataclasses.replace(plain, options=grasp.parse_options({"temperature": 200}))
    )[1]
    cold = hessian_gradient(
        dataclasses.replace(plain, options=grasp.parse_options({"temperature": 1}))
    )[1]
    assert all(torch.equal(default[k], spelled[k]) for k in default)
    assert not all(torch.allclose(cold[k] / 200**2, default[k], rtol=0.1) for k in default)


def test_grasp_scores_on_a_class_balanced_batch():
    """samples_per_class draws that many images of every class (GraSP's reference
    sampling, 25 by default), the same in every round; None: one random batch."""
    from imprint.procedures.gradients import score_batch

    config = smoke_config("prune.procedure=grasp", "prune.options.samples_per_class=7")
    grasp = get_procedure("grasp")
    options = grasp.parse_options(config.prune.options)
    inputs = dataclasses.replace(_inputs(config), options=options)
    x, y = score_batch(inputs, options.samples_per_class)
    assert torch.bincount(y).tolist() == [7] * inputs.data.num_classes
    again = score_batch(dataclasses.replace(inputs, index=3), 7)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    assert len(score_batch(inputs)[1]) == config.train.batch_size
    seven = hessian_gradient(inputs)[1]
    default = hessian_gradient(_inputs(config))[1]  # 25 per class
    assert not all(torch.allclose(seven[k], default[k]) for k in default)
    unbalanced = dataclasses.replace(
        inputs, options=grasp.parse_options({"samples_per_class": None})
    )
    assert not all(torch.allclose(hessian_gradient(unbalanced)[1][k], default[k]) for k in default)
