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
from imprint.reference import reference_round, reference_step

IN, HIDDEN, CLASSES = 30, [12, 9], 5
# float64 leaves rounding no room to hide a wrong term; float32 is what runs.
TOLERANCE = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-4, "atol": 1e-6},
}


def _model(
    seed: int, hidden=HIDDEN, inputs: int = IN, classes: int = CLASSES, dtype=torch.float32
) -> FCN:
    """An FCN with non-trivial BN parameters and running averages."""
    model = FCN(inputs, hidden, classes).to(dtype)
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
    seed: int,
    n: int,
    uint8: bool,
    inputs: int = IN,
    classes: int = CLASSES,
    dtype=torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if uint8:
        x = torch.randint(0, 256, (n, inputs), generator=gen, dtype=torch.uint8)
    else:
        x = (torch.randn((n, inputs), generator=gen) * 3 + 1).to(dtype)
    return x, torch.randint(0, classes, (n,), generator=gen)


def _normalise(x: torch.Tensor, offset, scale: float, dtype=torch.float32) -> torch.Tensor:
    x = x.to(dtype)
    return (x - offset) * scale if offset is not None else x * scale


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("uint8", [True, False], ids=["uint8", "float"])
@pytest.mark.parametrize("per_input", [False, True], ids=["scalar_scale", "per_input_scale"])
def test_gradients_match_autograd(seed, uint8, dtype, per_input):
    """Also with a scale per input (data.normalization = "channel")."""
    model = _model(seed, dtype=dtype)
    _masked(model, seed)
    x, y = _images(seed, 40, uint8, dtype=dtype)
    offset = x.to(dtype).mean(0) if uint8 else None
    scale = 1 / 255 if uint8 else 0.5
    if per_input:
        gen = torch.Generator().manual_seed(seed + 1)
        scale = scale * (0.5 + torch.rand(x.shape[1], generator=gen, dtype=dtype))
    reference = copy.deepcopy(model).train()
    loss = F.cross_entropy(reference(_normalise(x, offset, scale, dtype)), y)
    loss.backward()

    net = ReplicaFCN([model])
    result = train_step(net, x[None], y[None], offset, scale)
    assert result.loss.shape == (1,) and result.grads[0].dtype == dtype
    torch.testing.assert_close(result.loss[0], loss.detach(), **TOLERANCE[dtype])
    named = dict(reference.named_parameters())
    names = net.parameter_names()
    for name, grad in zip(names, result.grads):
        expected = named[name].grad
        assert grad.shape == net.parameters()[names.index(name)].shape, name
        torch.testing.assert_close(grad.view(expected.shape), expected, **TOLERANCE[dtype])
    # the BN running averages moved exactly as the module's did
    net.write_to([model])
    for name, value in reference.state_dict().items():
        if "running" in name or "tracked" in name:
            torch.testing.assert_close(model.state_dict()[name], value, **TOLERANCE[dtype])


@pytest.mark.numerics
@pytest.mark.parametrize(
    ("momentum", "weight_decay"),
    [(0.0, 0.0), (0.0, 5e-4), (0.9, 5e-4)],
    ids=["plain", "weight_decay", "momentum_wd"],
)
def test_steps_match_module_and_torch_sgd(seed, momentum, weight_decay):
    """Twenty masked steps in float64: the engine against nn.Module + torch.optim.SGD
    + re-zeroing (in float32 the two drift apart by rounding, amplified over steps)."""
    dtype = torch.float64
    model = _model(seed, dtype=dtype)
    masks = _masked(model, seed)
    x_all, y_all = _images(seed, 200, uint8=True)
    offset, scale = x_all.to(dtype).mean(0), 1 / 255
    reference = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(
        reference.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    net = ReplicaFCN([model])
    sgd = MaskedSGD(net, {k: v[None] for k, v in masks.items()}, 0.1, momentum, weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        idx = torch.randint(200, (32,), generator=gen)
        inputs = _normalise(x_all[idx], offset, scale, dtype)
        loss, _ = reference_step(reference, optimizer, inputs, y_all[idx], masks)
        result = train_step(net, x_all[idx][None], y_all[idx][None], offset, scale)
        sgd.step(result.grads)
        torch.testing.assert_close(result.loss[0], loss.detach(), rtol=1e-9, atol=0.0)
    net.write_to([model])
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-9, atol=1e-12)
    for name, mask in masks.items():  # pruned entries exactly zero, momentum or not
        assert (model.state_dict()[name][~mask] == 0).all(), name


@pytest.mark.numerics
def test_float32_steps_stay_close_to_the_module(seed):
    """The float32 step that runs, five steps against the module: rounding only."""
    model = _model(seed)
    masks = _masked(model, seed)
    x_all, y_all = _images(seed, 200, uint8=True)
    offset, scale = x_all.float().mean(0), 1 / 255
    reference = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    net = ReplicaFCN([model])
    sgd = MaskedSGD(net, {k: v[None] for k, v in masks.items()}, 0.1, 0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(5):
        idx = torch.randint(200, (32,), generator=gen)
        inputs = _normalise(x_all[idx], offset, scale)
        reference_step(reference, optimizer, inputs, y_all[idx], masks)
        sgd.step(train_step(net, x_all[idx][None], y_all[idx][None], offset, scale).grads)
    net.write_to([model])
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("per_input", [False, True], ids=["scalar_scale", "per_input_scale"])
def test_eval_logits_match_the_module_in_eval_mode(seed, dtype, per_input):
    models = [_model(seed, dtype=dtype), _model(seed + 10, dtype=dtype)]
    x, _ = _images(seed, 50, uint8=True)
    offset, scale = x.to(dtype).mean(0), 1 / 255
    if per_input:
        scale = scale * torch.linspace(0.5, 1.5, x.shape[1], dtype=dtype)
    logits = eval_logits(ReplicaFCN(models), x, offset, scale)
    assert logits.shape == (2, 50, CLASSES) and logits.dtype == dtype
    for r, model in enumerate(models):
        with torch.no_grad():
            expected = model.eval()(_normalise(x, offset, scale, dtype))
        torch.testing.assert_close(logits[r], expected, **TOLERANCE[dtype])


# Replicas against separate nets: the same arithmetic through different kernels (one
# (R, m, k) x (R, k, n) bmm against R of them with R = 1), whose summation order, and so
# rounding, the BLAS picks per shape and per CPU: bitwise equal on the AMD EPYC (AVX2)
# the project was developed on, not on an AVX-512 Xeon. So the promise is float32
# rounding, not bitwise equality. Each product is a K-term dot product (K <= 64 here:
# the batch or a width) with per-op relative rounding u = 2^-24 ~ 6e-8: worst case
# K u ~ 4e-6, typically sqrt(K) u ~ 5e-7, of the size of the terms, i.e. of the
# tensor's scale, not of each entry. Three SGD steps (lr 0.1, momentum 0.9) carry that
# into the weights without amplifying it much (measured on the Xeon: at most 8 u of the
# tensor's largest entry). An error of 1e-5 of the tensor's scale (~170 u) leaves a
# margin of >20x, while a 1e-3 change of one replica's learning rate moves entries by
# ~2e-4 of the scale (checked: it fails).
REPLICA_RTOL = 1e-5


def assert_rounding_close(actual: torch.Tensor, expected: torch.Tensor, where: str) -> None:
    """Equal up to float32 rounding: REPLICA_RTOL of each entry or of the tensor's scale."""
    if not expected.is_floating_point():
        assert torch.equal(actual, expected), where
        return
    scale = expected.abs().max().item()
    torch.testing.assert_close(
        actual,
        expected,
        rtol=REPLICA_RTOL,
        atol=REPLICA_RTOL * scale,
        msg=lambda message: f"{where}: {message}",
    )


@pytest.mark.numerics
@pytest.mark.parametrize(
    ("inputs", "hidden", "classes", "batch"),
    [(64, [32, 16], 2, 64), (30, [12, 9], 5, 16)],
    ids=["smoke_shapes", "odd_shapes"],
)
def test_replicas_step_like_separate_nets(inputs, hidden, classes, batch):
    """Replica r of a batched step equals the same step on replica r alone, up to
    float32 rounding: the batched and single matmuls may round differently (see
    REPLICA_RTOL); on the developer's AVX2 machine they happen to agree bitwise."""
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
        for name, a, b in zip(alone.parameter_names(), together.parameters(), alone.parameters()):
            assert_rounding_close(a[r], b[0], f"replica {r}, {name}")
            # pruned entries are exactly zero on either path
            if name in masks[r]:
                assert (a[r].view(masks[r][name].shape)[~masks[r][name]] == 0).all(), name


@pytest.mark.numerics
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
    bad = {"layers.0.bias": torch.ones(1, 1, 12, dtype=torch.bool)}  # the internal layout
    with pytest.raises(ValueError, match=r"mask 'layers.0.bias' must have shape \(1, 12\)"):
        MaskedSGD(net, bad, 0.1)


def test_masked_sgd_zeroes_pruned_entries_once_and_keeps_them():
    model = _model(0)
    masks = random_prune(full_masks(model.state_dict()), {0: 0.5}, torch.Generator())
    net = ReplicaFCN([model])  # weights not yet masked
    assert (net.weights[0][0][~masks["layers.0.weight"]] != 0).all()
    sgd = MaskedSGD(net, {k: v[None] for k, v in masks.items()}, 0.1)
    assert (net.weights[0][0][~masks["layers.0.weight"]] == 0).all()
    x, y = _images(0, 16, uint8=False)
    sgd.step(train_step(net, x[None], y[None]).grads)
    assert (net.weights[0][0][~masks["layers.0.weight"]] == 0).all()
    assert (net.weights[0][0][masks["layers.0.weight"]] != 0).all()


def test_dense_masks_cost_nothing():
    net = ReplicaFCN([_model(0)])
    masks = {k: v[None] for k, v in full_masks(_model(0).state_dict()).items()}
    assert MaskedSGD(net, masks, 0.1).masked == []


def test_retain_freed_memory_is_set_once():
    first = retain_freed_memory()
    assert retain_freed_memory() is first  # cached: one call per process
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first  # glibc accepts the thresholds


@pytest.mark.numerics
@pytest.mark.parametrize(
    ("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 5e-4)], ids=["plain", "momentum_wd"]
)
def test_a_round_is_the_reference_round(seed, momentum, weight_decay):
    """A whole round of train_round (the batched engine, sampling, masked SGD) in float64
    against imprint.reference.reference_round, the plain-autograd definition of a round:
    the same batches, the same weights, BN averages and pruned zeros."""
    from imprint.config import TrainConfig
    from imprint.data import ImageData
    from imprint.train import train_round

    dtype = torch.float64
    model = _model(seed, dtype=dtype)
    masks = _masked(model, seed)
    x_all, y_all = _images(seed, 300, uint8=True)
    data = ImageData(
        x_all,
        y_all,
        x_all[:40],
        y_all[:40],
        (1, 1, IN),
        CLASSES,
        offset=x_all.to(dtype).mean(0),
        scale=1 / 255,
    )
    reference = copy.deepcopy(model)
    config = TrainConfig(
        steps=30,
        batch_size=16,
        lr=0.05,
        momentum=momentum,
        weight_decay=weight_decay,
        eval_every=30,
        eval_batch_size=40,
    )
    train_round(model, masks, data, config, torch.Generator().manual_seed(seed))
    reference_round(
        reference,
        masks,
        data,
        30,
        16,
        torch.Generator().manual_seed(seed),
        lr=0.05,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-9, atol=1e-12)
    for name, mask in masks.items():
        assert (model.state_dict()[name][~mask] == 0).all(), name
