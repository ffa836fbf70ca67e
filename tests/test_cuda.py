"""On a CUDA device (skipped without one; benchmarks/gpu_check.sh runs them): the
engines agree with the CPU's and with each other, and a run completes."""

from __future__ import annotations

import copy

import pytest
import torch

from imprint.cli import main
from imprint.engine import ReplicaFCN, train_step
from imprint.sparse import SparseFCN, sparse_train_step
from tests.conftest import smoke_run_args
from tests.test_engine import _images, _masked, _model
from tests.test_sparse import _assert_float32_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _replicas(device):
    models = [_model(s) for s in range(3)]
    masks = [_masked(m, s) for s, m in enumerate(models)]
    stacked = {n: torch.stack([m[n] for m in masks]).to(device) for n in masks[0]}
    return [copy.deepcopy(m).to(device) for m in models], stacked


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_a_cuda_step_is_the_cpu_step(sparse):
    """Loss and gradients of three replicas on the GPU against the CPU's dense step,
    within float32 rounding (TF32 is off: train.precision = "fp32"; the bound of
    tests/test_sparse.py, the GPU's kernels summing in yet other orders)."""
    x, y = _images(0, 120, True)
    offset = x.float().mean(0)
    x, y = x.view(3, 40, -1), y.view(3, 40)
    cpu_models, _ = _replicas("cpu")
    expected = train_step(ReplicaFCN(cpu_models), x, y, offset, 1 / 255)
    gpu_models, stacked = _replicas("cuda")
    net = ReplicaFCN(gpu_models)
    args = (x.cuda(), y.cuda(), offset.cuda(), 1 / 255)
    if sparse:
        engine = SparseFCN(net, stacked, [0, 1, 2])
        got = sparse_train_step(engine, *args)
        grads = [
            g.cpu()
            if p is None
            else torch.zeros(w.numel()).index_copy_(0, p.flat.cpu(), g.cpu()).view(w.shape)
            for g, p, w in zip(
                got.grads,
                [q for layer in engine.patterns for q in (layer, None, None, None)],
                ReplicaFCN(cpu_models).parameters(),
            )
        ]
    else:
        got = train_step(net, *args)
        grads = [g.cpu() for g in got.grads]
    _assert_float32_close(got.loss.cpu(), expected.loss, "loss")
    for index, (a, b) in enumerate(zip(grads, expected.grads)):
        masked = b.clone()
        if sparse and index % 4 == 0:  # a sparse layer's gradient exists on its pattern
            masked *= stacked[f"layers.{index // 4}.weight"].cpu()
        _assert_float32_close(a, masked, f"gradient {index}")


@pytest.mark.parametrize("mode", ["off", "on"])
def test_smoke_runs_on_cuda_with_either_engine(tmp_path, mode):
    assert main(smoke_run_args(tmp_path, f"train.sparse={mode}", device="cuda")) == 0
