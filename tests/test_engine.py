"""The hand-written step against autograd over the plain FCN module and torch.optim.SGD."""

from __future__ import annotations

import copy
import platform
import sys

import pytest
import torch
import torch.nn.functional as F

from imprint.engine import MaskedSGD, ReplicaFCN, eval_logits, retain_freed_memory, train_step
from imprint.model import FCN
from imprint.prune import full_masks, random_prune

IN, HIDDEN, CLASSES = 30, [12, 9], 5


def _model(seed: int, hidden=HIDDEN, inputs: int = IN, classes: int = CLASSES) -> FCN:
    """An FCN with non-trivial BN parameters and running averages."""
    model = FCN(inputs, hidden, classes)
    gen = torch.Generator().manual_seed(seed)
    model.reset_parameters(gen)
    with torch.no_grad():
        for norm in model.norms:
            norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=gen))
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=gen))
            norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=gen))
            norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=gen))
    return model


def _masked(model: FCN, seed: int) -> dict[str, torch.Tensor]:
    """Random masks (40% of the hidden layers removed), applied to the model."""
    masks = random_prune(
        full_masks(model.state_dict()), {0: 0.4, 1: 0.4}, torch.Generator().manual_seed(seed)
    )
    state = model.state_dict()
    with torch.no_grad():
        for name, mask in masks.items():
            state[name].mul_(mask)
    return masks


def _images(
    seed: int, n: int, uint8: bool, inputs: int = IN, classes: int = CLASSES
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if uint8:
        x = torch.randint(0, 256, (n, inputs), generator=gen, dtype=torch.uint8)
    else:
        x = torch.randn((n, inputs), generator=gen) * 3 + 1
    return x, torch.randint(0, classes, (n,), generator=gen)


def _normalise(x: torch.Tensor, offset, scale: float) -> torch.Tensor:
    x = x.float()
    return (x - offset) * scale if offset is not None else x * scale


@pytest.mark.parametrize("uint8", [True, False], ids=["uint8", "float"])
def test_gradients_match_autograd(seed, uint8):
    model = _model(seed)
    _masked(model, seed)
    x, y = _images(seed, 40, uint8)
    offset = x.float().mean(0) if uint8 else None
    scale = 1 / 255 if uint8 else 0.5
    reference = copy.deepcopy(model).train()
    loss = F.cross_entropy(reference(_normalise(x, offset, scale)), y)
    loss.backward()

    net = ReplicaFCN([model])
    result = train_step(net, x[None], y[None], offset, scale)
    assert result.loss.shape == (1,)
    assert result.loss.item() == pytest.approx(loss.item(), rel=1e-5)
    named = dict(reference.named_parameters())
    for name, grad in zip(net.parameter_names(), result.grads):
        expected = named[name].grad
        assert grad.shape == (1, *expected.shape), name
        torch.testing.assert_close(grad[0], expected, rtol=1e-4, atol=1e-6, msg=name)
    # the BN running averages moved exactly as the module's did
    net.write_to([model])
    for name, value in reference.state_dict().items():
        if "running" in name or "tracked" in name:
            torch.testing.assert_close(model.state_dict()[name], value, msg=name)


@pytest.mark.parametrize(
    ("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 5e-4)], ids=["plain", "momentum_wd"]
)
def test_steps_match_module_and_torch_sgd(seed, momentum, weight_decay):
    """Twenty masked steps: the engine against nn.Module + torch.optim.SGD + re-zeroing."""
    model = _model(seed)
    masks = _masked(model, seed)
    x_all, y_all = _images(seed, 200, uint8=True)
    offset, scale = x_all.float().mean(0), 1 / 255
    reference = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(
        reference.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    params = dict(reference.named_parameters())
    net = ReplicaFCN([model])
    sgd = MaskedSGD(net, {k: v[None] for k, v in masks.items()}, 0.1, momentum, weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        idx = torch.randint(200, (32,), generator=gen)
        loss = F.cross_entropy(reference(_normalise(x_all[idx], offset, scale)), y_all[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)
        result = train_step(net, x_all[idx][None], y_all[idx][None], offset, scale)
        sgd.step(result.grads)
        assert result.loss.item() == pytest.approx(loss.item(), rel=1e-4)
    net.write_to([model])
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    for name, mask in masks.items():  # pruned entries exactly zero, momentum or not
        assert (model.state_dict()[name][~mask] == 0).all(), name


def test_eval_logits_match_the_module_in_eval_mode(seed):
    models = [_model(seed), _model(seed + 10)]
    x, _ = _images(seed, 50, uint8=True)
    offset, scale = x.float().mean(0), 1 / 255
    logits = eval_logits(ReplicaFCN(models), x, offset, scale)
    assert logits.shape == (2, 50, CLASSES) and logits.dtype == torch.float32
    for r, model in enumerate(models):
        with torch.no_grad():
            expected = model.eval()(_normalise(x, offset, scale))
        torch.testing.assert_close(logits[r], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("inputs", "hidden", "classes", "batch", "exact"),
    [(64, [32, 16], 2, 64, True), (30, [12, 9], 5, 16, False)],
    ids=["smoke_shapes", "odd_shapes"],
)
def test_replicas_step_like_separate_nets(inputs, hidden, classes, batch, exact):
    """Replica r of a batched step equals the same step on replica r alone: bitwise on
    the smoke config's shapes; on some odd shapes MKL's batched matmul rounds
    differently from its single one, so there to float tolerance."""
    models = [_model(s, hidden, inputs, classes) for s in range(3)]
    masks = [_masked(m, s) for s, m in enumerate(models)]
    x, y = _images(0, 3 * batch, True, inputs, classes)
    offset = x.float().mean(0)
    x, y = x.view(3, batch, inputs), y.view(3, batch)
    together = ReplicaFCN(models)
    stacked = {name: torch.stack([m[name] for m in masks]) for name in masks[0]}
    sgd = MaskedSGD(together, stacked, 0.1, 0.9)
    for _ in range(3):
        sgd.step(train_step(together, x, y, offset, 1 / 255).grads)
    for r, model in enumerate(models):
        alone = ReplicaFCN([model])
        single = MaskedSGD(alone, {k: v[None] for k, v in masks[r].items()}, 0.1, 0.9)
        for _ in range(3):
            single.step(train_step(alone, x[r : r + 1], y[r : r + 1], offset, 1 / 255).grads)
        for a, b in zip(together.parameters(), alone.parameters()):
            if exact:
                assert torch.equal(a[r], b[0])
            else:
                torch.testing.assert_close(a[r], b[0], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_keeps_float32_state():
    """Under a bfloat16 autocast (here the CPU's) matmuls run in bf16, everything else
    stays float32 and close to the float32 step."""
    model = _model(0)
    x, y = _images(0, 64, uint8=False)
    exact = train_step(ReplicaFCN([copy.deepcopy(model)]), x[None], y[None])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = train_step(ReplicaFCN([model]), x[None], y[None])
    for a, b in zip(low.grads, exact.grads):
        assert a.dtype == torch.float32
        assert (a - b).norm() <= 0.05 * b.norm()  # bf16 keeps ~3 significant digits
    assert low.loss.item() == pytest.approx(exact.loss.item(), rel=0.02)


def test_write_to_round_trip_and_names():
    models = [_model(1), _model(2)]
    net = ReplicaFCN(models)
    assert net.replicas == 2 and net.n_layers == 3
    assert set(net.parameter_names()) == set(dict(models[0].named_parameters()))
    copies = [_model(5), _model(6)]
    net.write_to(copies)
    for source, target in zip(models, copies):
        for name, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[name], value), name


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="'models' parameter must hold one architecture"):
        ReplicaFCN([_model(0), _model(0, hidden=[12, 8])])
    with pytest.raises(ValueError, match="at least one FCN"):
        ReplicaFCN([])
    net = ReplicaFCN([_model(0)])
    with pytest.raises(ValueError, match="'models' parameter must hold 1 models. Got 2"):
        net.write_to([_model(0), _model(1)])
    bad = {"layers.0.weight": torch.ones(12, IN, dtype=torch.bool)}  # no replica axis
    with pytest.raises(ValueError, match=r"mask 'layers.0.weight' must have shape \(1, 12, 30\)"):
        MaskedSGD(net, bad, 0.1)


def test_dense_masks_cost_nothing():
    net = ReplicaFCN([_model(0)])
    masks = {k: v[None] for k, v in full_masks(_model(0).state_dict()).items()}
    assert MaskedSGD(net, masks, 0.1).masked == []


def test_retain_freed_memory_is_set_once():
    first = retain_freed_memory()
    assert retain_freed_memory() is first  # cached: one call per process
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first  # glibc accepts the thresholds
