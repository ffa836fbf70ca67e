"""Sparse execution of a round (imprint.sparse) against the dense engine.

The sparse step does the dense step's arithmetic on the live weights only, summing in
another order (CSR rows, SDDMM dot products, index_add for the first layer's BN
terms). In float64 the two agree to ~1e-15 of each tensor's scale (measured: at most
3.4e-15), so 1e-10 leaves rounding no room to hide a wrong term. In float32 the
difference is rounding: K-term sums (K <= 40 here: the batch, the widths) err by
~sqrt(K) u ~ 4e-7 of their terms' scale (u = 2^-24), the BN backward divides by the
batch's standard deviation, and five SGD steps add the errors up. Measured after five
steps, as a fraction of each tensor's largest entry: at most 2e-6 with the native
AVX-512 kernels, 1.7e-5 with the generic ones (ATEN_CPU_CAPABILITY=default), on a
bias whose entries are small next to the gradients that built them. SPARSE_RTOL =
1e-4 leaves a 6x margin, while a 1e-3 error of the learning rate moves every tensor by
~1e-3 of its scale and fails it. Whole runs use tests/test_train.py's bounds.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from imprint.engine import MaskedSGD, ReplicaFCN, eval_logits, train_step
from imprint.imp import run_experiment
from imprint.procedures import PROCEDURES
from imprint.runs import RunFolder, member_dir
from imprint.sparse import (
    MIN_SPARSE_MACS,
    Pattern,
    SparseFCN,
    choose_sparse_layers,
    crossover_density,
    sparse_eval_logits,
    sparse_train_step,
)
from tests.conftest import smoke_config
from tests.test_engine import CLASSES, _images, _masked, _model
from tests.test_train import IMAGES, _assert_state_close, pruned_round

FLOAT64_RTOL = 1e-10
SPARSE_RTOL = 1e-4


def _assert_float32_close(actual: torch.Tensor, expected: torch.Tensor, where: str) -> None:
    """Equal up to SPARSE_RTOL of each entry or of the tensor's largest entry."""
    if not expected.is_floating_point():
        assert torch.equal(actual, expected), where
        return
    scale = expected.abs().max().item()
    torch.testing.assert_close(
        actual, expected, rtol=SPARSE_RTOL, atol=SPARSE_RTOL * scale, msg=where
    )


def _pair(replicas: int, dtype, sparse_layers):
    """The same masked replicas twice: a dense ReplicaFCN and a SparseFCN."""
    models = [_model(s, dtype=dtype) for s in range(replicas)]
    masks = [_masked(m, s) for s, m in enumerate(models)]
    stacked = {n: torch.stack([m[n] for m in masks]) for n in masks[0]}
    dense = ReplicaFCN([copy.deepcopy(m) for m in models])
    sparse = SparseFCN(ReplicaFCN([copy.deepcopy(m) for m in models]), stacked, sparse_layers)
    return dense, sparse, stacked


def _dense_grad(grad: torch.Tensor, name: str, sparse: SparseFCN) -> torch.Tensor:
    """A dense weight gradient at a sparse layer's pattern (the entries the step forms)."""
    layer = int(name.split(".")[1])
    pattern = sparse.patterns[layer]
    if name.endswith(".weight") and name.startswith("layers.") and pattern is not None:
        return grad.reshape(-1)[pattern.flat]
    return grad


@pytest.mark.numerics
@pytest.mark.parametrize("replicas", [1, 3])
@pytest.mark.parametrize("layers", [[0, 1, 2], [1], [0]], ids=["all", "middle", "first"])
@pytest.mark.parametrize("uint8", [True, False], ids=["uint8", "float"])
@pytest.mark.parametrize("per_input", [False, True], ids=["scalar_scale", "per_input_scale"])
def test_float64_step_is_the_dense_step(replicas, layers, uint8, per_input):
    """Loss, hits, every gradient and the BN running averages of one step, float64."""
    dtype = torch.float64
    dense, sparse, _ = _pair(replicas, dtype, layers)
    x, y = _images(0, replicas * 40, uint8, dtype=dtype)
    offset = x.to(dtype).mean(0) if uint8 else None
    scale = 1 / 255 if uint8 else 0.5
    if per_input:
        gen = torch.Generator().manual_seed(1)
        scale = scale * (0.5 + torch.rand(x.shape[1], generator=gen, dtype=dtype))
    x, y = x.view(replicas, 40, -1), y.view(replicas, 40)
    a = train_step(dense, x, y, offset, scale)
    b = sparse_train_step(sparse, x, y, offset, scale)
    torch.testing.assert_close(b.loss, a.loss, rtol=FLOAT64_RTOL, atol=0.0)
    assert torch.equal(a.correct, b.correct)
    for name, ga, gb, param in zip(dense.parameter_names(), a.grads, b.grads, sparse.parameters()):
        expected = _dense_grad(ga, name, sparse)
        assert gb.shape == param.shape, name
        scale_of = expected.abs().max().item()
        torch.testing.assert_close(
            gb, expected, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * scale_of, msg=name
        )
    for name, value in dense.state().items():
        torch.testing.assert_close(sparse.net.state()[name], value, rtol=FLOAT64_RTOL, atol=0.0)


@pytest.mark.numerics
@pytest.mark.parametrize("replicas", [1, 3])
@pytest.mark.parametrize(
    ("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 5e-4)], ids=["plain", "momentum_wd"]
)
def test_float32_steps_and_sgd_stay_within_rounding(replicas, momentum, weight_decay):
    """Five SGD steps (the update of the values and their momentum): every tensor of
    the nets, BN statistics included, within float32 rounding; pruned entries exactly
    zero; the values equal the dense weights at the pattern after every step."""
    dense, sparse, stacked = _pair(replicas, torch.float32, [0, 1, 2])
    x, y = _images(0, replicas * 40, True)
    offset = x.float().mean(0)
    x, y = x.view(replicas, 40, -1), y.view(replicas, 40)
    sgd_dense = MaskedSGD(dense, stacked, 0.1, momentum, weight_decay)
    sgd_sparse = MaskedSGD(sparse, sparse.optimizer_masks(stacked), 0.1, momentum, weight_decay)
    for _ in range(5):
        sgd_dense.step(train_step(dense, x, y, offset, 1 / 255).grads)
        sgd_sparse.step(sparse_train_step(sparse, x, y, offset, 1 / 255).grads)
        sparse.sync()
        for layer, pattern in enumerate(sparse.patterns):
            assert pattern is not None
            weight = sparse.net.weights[layer]
            assert torch.equal(weight.reshape(-1)[pattern.flat], sparse.values[layer])
            mask = stacked[f"layers.{layer}.weight"]
            assert (weight[~mask] == 0).all()
    for name, value in dense.state().items():
        _assert_float32_close(sparse.net.state()[name], value, name)
    if momentum:
        buffers = sparse.to_dense(sgd_sparse.state())
        for name, a, b in zip(dense.parameter_names(), buffers, sgd_dense.state()):
            _assert_float32_close(a, b, f"momentum of {name}")


def test_pattern_is_block_diagonal_and_its_transpose():
    """The CSR matrix of a pattern is the replicas' masked weights on the diagonal
    blocks; its transpose holds the same entries; empty last rows and columns keep
    the full shape."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 5, 7, generator=gen) < 0.3
    mask[-1, -1, :] = False  # the block matrix's last row is empty
    mask[-1, :, -1] = False  # and its last column
    mask[0, 0, 0] = True
    weights = torch.randn(3, 5, 7, generator=gen) * mask
    pattern = Pattern.from_mask(mask)
    values = weights.reshape(-1)[pattern.flat]
    full = torch.block_diag(*weights)
    assert torch.equal(pattern.matrix(values).to_dense(), full)
    assert torch.equal(pattern.transposed(values).to_dense(), full.T)
    assert pattern.nnz == int(mask.sum())
    assert pattern.matrix(values).shape == (15, 21) and pattern.transposed(values).shape == (21, 15)
    assert pattern.crow.shape == (16,) and pattern.crow_t.shape == (22,)


def test_choose_sparse_layers_follows_the_mode_and_the_crossover():
    device = torch.device("cpu")
    dims = [3072, 1024, 10]
    crossover = crossover_density(device)
    assert crossover is not None and 0 < crossover < 1

    def masks(density):
        gen = torch.Generator().manual_seed(0)
        return {
            f"layers.{k}.weight": torch.rand(1, dims[k + 1], dims[k], generator=gen) < density
            for k in range(2)
        }

    below, above = masks(crossover / 2), masks(min(1.0, crossover * 2))
    assert choose_sparse_layers("off", below, dims, 1, 1000, device) == []
    assert choose_sparse_layers("on", above, dims, 1, 1000, device) == [0, 1]
    dense = {name: torch.ones_like(mask) for name, mask in above.items()}
    assert choose_sparse_layers("on", dense, dims, 1, 1000, device) == []  # nothing pruned
    assert choose_sparse_layers("auto", above, dims, 1, 1000, device) == []
    # the 1024 x 10 output layer is below MIN_SPARSE_MACS at batch 100
    assert 100 * 1024 * 10 < MIN_SPARSE_MACS <= 100 * 3072 * 1024
    assert choose_sparse_layers("auto", below, dims, 1, 100, device) == [0]
    assert choose_sparse_layers("auto", below, [3072, 1024, 10], 1, 1000, device) == [0, 1]
    with pytest.raises(ValueError, match="train.sparse must be one of"):
        choose_sparse_layers("maybe", below, dims, 1, 100, device)


@pytest.fixture(scope="module")
def smoke():
    from imprint.data import load_dataset

    config = smoke_config()
    return config, load_dataset(config.data)


@pytest.mark.numerics
@pytest.mark.parametrize(("momentum", "seeds"), [(0.9, [0]), (0.0, [1, 2, 3])])
def test_resume_inside_a_sparse_round_is_bitwise_identical(smoke, momentum, seeds):
    """On the sparse path, resuming from every checkpoint ends bit for bit where the
    uninterrupted round ends; checkpoints hold the dense layout (momentum included)."""
    config, data = smoke
    train = config.train.model_copy(
        update={"momentum": momentum, "checkpoint_every": 7, "sparse": "on"}
    )

    def round_from(resume=None, on_checkpoint=None):
        rates = {0: 0.8, 1: 0.8}
        return pruned_round(config, data, seeds, train, rates, resume, on_checkpoint)

    plain = round_from()
    assert plain[0].sparse_layers == [0, 1]  # the output layer is not pruned
    states = []
    round_from(on_checkpoint=states.append)
    assert states
    for state in states:
        shapes = {k: tuple(v.shape) for k, v in state.tensors.items()}
        assert shapes["net.weights.0"] == (len(seeds), 32, 64)
        if momentum:
            assert shapes["momentum.0"] == (len(seeds), 32, 64)
        resumed = round_from(resume=state)
        for a, c in zip(plain, resumed):
            assert a.curves == c.curves, state.step
            for name, value in a.final_state.items():
                assert torch.equal(value, c.final_state[name]), (state.step, name)


def _run(tmp_path, name: str, *overrides: str):
    config = smoke_config(*overrides)
    result = run_experiment(config, tmp_path / name, "cpu", False, lambda m: None)
    return RunFolder(result.folder)


@pytest.mark.numerics
@pytest.mark.parametrize("procedure", sorted(PROCEDURES))
def test_every_procedure_trains_the_same_on_either_engine(procedure, tmp_path):
    """Each procedure's run with train.sparse = "on" against "off": the same masks, and
    every round's final weights and accuracies within float32 rounding (the bounds of
    tests/test_train.py). Round 0 prunes nothing and runs dense; GMP prunes inside its
    rounds, rebuilding the sparse structure at each pruning step."""
    sets = [f"prune.procedure={procedure}", "prune.max_rounds=2"]
    if procedure == "reinit":  # follows an IMP run's masks
        reference = _run(tmp_path, "imp", "prune.max_rounds=2")
        sets.append(f'prune.reference_run="{reference.root}"')
    off = _run(tmp_path, "off", *sets, "train.sparse=off")
    on = _run(tmp_path, "on", *sets, "train.sparse=on")
    rounds = off.completed_rounds()
    assert on.completed_rounds() == rounds
    engine = json.loads(on.manifest_path.read_text())["engine"]
    assert engine == {
        "sparse": "on",
        "crossover_density": crossover_density(torch.device("cpu")),
        "device": "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "min_sparse_macs": MIN_SPARSE_MACS,
    }
    for r in rounds:
        metrics_on, metrics_off = on.round_metrics(r), off.round_metrics(r)
        assert metrics_off["sparse_layers"] == []
        # round 0 is dense (gmp's too: it prunes from round 1); the output layer is
        # never pruned; gmp's rounds turn sparse at their first pruning step
        assert metrics_on["sparse_layers"] == ([] if r == 0 else [0, 1]), r
        masks_on, masks_off = on.round_masks(r), off.round_masks(r)
        assert all(torch.equal(masks_on[k], masks_off[k]) for k in masks_off), r
        state_on, state_off = on.round_state(r), off.round_state(r)
        _assert_state_close(state_on, state_off, f"round {r}")
        n_val = 256
        for key in ("best_val_top1", "final_val_top1"):
            assert abs(metrics_on[key] - metrics_off[key]) * n_val <= IMAGES + 1e-6, (r, key)


@pytest.mark.numerics
def test_three_seeds_together_train_the_same_on_either_engine(tmp_path):
    """Three replicas in one block-diagonal matrix against the dense batched run."""
    config = smoke_config("seeds.group=[0, 1, 2]")
    off, on = tmp_path / "off", tmp_path / "on"
    for folder, mode in ((off, "off"), (on, "on")):
        changed = config.model_copy(
            update={"train": config.train.model_copy(update={"sparse": mode})}
        )
        run_experiment(changed, folder, device="cpu", progress=False, log=lambda m: None)
    for seed in (0, 1, 2):
        a, b = RunFolder(member_dir(off, seed)), RunFolder(member_dir(on, seed))
        for r in a.completed_rounds():
            assert all(torch.equal(a.round_masks(r)[k], v) for k, v in b.round_masks(r).items())
            _assert_state_close(b.round_state(r), a.round_state(r), f"seed {seed} round {r}")


@pytest.mark.numerics
@pytest.mark.parametrize("replicas", [1, 3])
@pytest.mark.parametrize("shared", [True, False], ids=["shared_batch", "own_batches"])
@pytest.mark.parametrize("per_input", [False, True], ids=["scalar_scale", "per_input_scale"])
def test_float64_evaluation_is_the_dense_evaluation(replicas, shared, per_input):
    """Evaluation-mode logits (BN running averages) on the sparse layers' patterns."""
    dtype = torch.float64
    dense, sparse, _ = _pair(replicas, dtype, [0, 2])
    x, _ = _images(1, replicas * 30, True, dtype=dtype)
    offset = x.to(dtype).mean(0)
    scale = 1 / 255
    if per_input:
        scale = scale * (0.5 + torch.rand(x.shape[1], generator=torch.Generator().manual_seed(2)))
        scale = scale.to(dtype)
    x = x[:30] if shared else x.view(replicas, 30, -1)
    expected = eval_logits(dense, x, offset, scale)
    got = sparse_eval_logits(sparse, x, offset, scale)
    assert got.shape == expected.shape == (replicas, 30, CLASSES)
    torch.testing.assert_close(got, expected, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL)


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["off", "on"])
def test_round_engine_applies_the_optimiser_and_carries_momentum_across_masks(mode):
    """The round's engine against MaskedSGD by hand on the dense step: momentum, weight
    decay, the data's offset and scale reach the update; new masks mid-round (a
    procedure pruning while training) zero the newly pruned entries and their momentum
    and keep the rest's, on either engine (dense: bitwise; sparse: within rounding)."""
    from imprint.config import TrainConfig
    from imprint.sparse import RoundEngine

    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-3, batch_size=40, sparse=mode)
    dense, sparse, stacked = _pair(3, torch.float32, [])
    engine = RoundEngine(sparse.net, stacked, config, train_step)
    assert engine.sparse_layers == ([0, 1] if mode == "on" else [])  # the pruned layers
    assert (engine.sparse is not None) == (mode == "on")  # and they do run sparse
    by_hand = MaskedSGD(dense, stacked, 0.1, 0.9, 5e-3)
    x, y = _images(0, 120, True)
    offset, scale = x.float().mean(0), 1 / 255
    x, y = x.view(3, 40, -1), y.view(3, 40)
    fewer = {name: mask.clone() for name, mask in stacked.items()}
    fewer["layers.0.weight"][:, :, ::2] = False  # prune half of the first layer's inputs
    for step in range(6):
        if step == 3:
            engine.set_masks(fewer)
            by_hand.set_masks(fewer)
        engine.step(x, y, offset, scale)
        by_hand.step(train_step(dense, x, y, offset, scale).grads)
    assert (sparse.net.weights[0][~fewer["layers.0.weight"]] == 0).all()
    for name, value in dense.state().items():
        if mode == "off":
            assert torch.equal(sparse.net.state()[name], value), name
        else:
            _assert_float32_close(sparse.net.state()[name], value, name)
    for name, a, b in zip(dense.parameter_names(), engine.momentum(), by_hand.state()):
        _assert_float32_close(a, b, f"momentum of {name}")
    logits = engine.logits(x[0], offset, scale)
    _assert_float32_close(logits, eval_logits(dense, x[0], offset, scale), "logits")


def test_crossover_per_device_and_capability(monkeypatch):
    """AVX-512 variants share one entry; an unknown capability takes DEFAULT's; CUDA
    has none until measured."""
    import imprint.sparse as sparse_module

    table = {("cpu", "AVX512"): 0.3, ("cpu", "AVX2"): 0.2, ("cpu", "DEFAULT"): 0.1}
    monkeypatch.setattr(sparse_module, "CROSSOVER", {**table, ("cuda", ""): None})
    for capability, expected in (("AVX512_VNNI", 0.3), ("AVX2", 0.2), ("NEON", 0.1)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert crossover_density(torch.device("cpu")) == expected, capability
    assert crossover_density(torch.device("cuda")) is None
