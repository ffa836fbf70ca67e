"""Random-shift augmentation (data.shift): images moved in the batch sampler, the same
in the engine and the reference round, resumable, refused where it has no meaning."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from imprint.config import TrainConfig
from imprint.data import DataError, ImageData, load_dataset
from imprint.imp import run_imp
from imprint.model import FCN
from imprint.prune import full_masks, random_prune
from imprint.reference import random_shifts, reference_round, shift_images
from imprint.runs import RunFolder
from imprint.train import sample_batch, train_round
from tests.conftest import interrupt_at, smoke_config


def test_shift_images_moves_each_image_with_zero_fill():
    gen = torch.Generator().manual_seed(0)
    shape = (2, 5, 6)
    x = torch.randint(1, 255, (7, 60), generator=gen, dtype=torch.uint8)
    shifts = random_shifts(gen, 7, 3, torch.device("cpu"))
    moved = shift_images(x, shifts, shape).reshape(7, 2, 5, 6)
    images = x.reshape(7, 2, 5, 6)
    for n, (dy, dx) in enumerate(shifts.tolist()):
        for y in range(5):
            for xx in range(6):
                inside = 0 <= y - dy < 5 and 0 <= xx - dx < 6
                want = (
                    images[n, :, y - dy, xx - dx] if inside else torch.zeros(2, dtype=torch.uint8)
                )
                assert torch.equal(moved[n, :, y, xx], want), (n, dy, dx, y, xx)
    assert shifts.abs().max() <= 3 and shifts.dtype == torch.int64


def test_no_shift_draws_nothing_more():
    config = smoke_config()
    data = load_dataset(config.data)
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x, y = sample_batch(data, [a], 16)
    torch.randint(data.x_train.shape[0], (16,), generator=b)
    assert torch.equal(a.get_state(), b.get_state())
    shifted = load_dataset(smoke_config("data.shift=2").data)
    assert shifted.shift == 2 and torch.equal(shifted.x_train, data.x_train)


@pytest.mark.numerics
def test_a_shifted_round_is_the_reference_round():
    dtype = torch.float64
    gen = torch.Generator().manual_seed(1)
    model = FCN(64, [24], 3).to(dtype)
    model.reset_parameters(gen)
    masks = random_prune(full_masks(model.state_dict()), {0: 0.5}, gen)
    x = torch.randint(0, 256, (200, 64), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 3, (200,), generator=gen)
    data = ImageData(
        x, y, x[:20], y[:20], (1, 8, 8), 3, offset=x.to(dtype).mean(0), scale=1 / 255, shift=3
    )
    reference = copy.deepcopy(model)
    config = TrainConfig(steps=25, batch_size=16, lr=0.05, eval_every=25, eval_batch_size=20)
    train_round(model, masks, data, config, torch.Generator().manual_seed(2))
    reference_round(reference, masks, data, 25, 16, torch.Generator().manual_seed(2), lr=0.05)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-9, atol=1e-12)
    plain = copy.deepcopy(reference)
    reference_round(
        plain,
        masks,
        dataclasses.replace(data, shift=0),
        25,
        16,
        torch.Generator().manual_seed(2),
        lr=0.05,
    )
    assert not torch.equal(
        plain.state_dict()["layers.0.weight"], model.state_dict()["layers.0.weight"]
    )


def test_a_shifted_run_resumes_inside_a_round_identically(tmp_path, monkeypatch):
    sets = ("data.shift=2", "prune.max_rounds=1", "train.checkpoint_every=10")
    plain = tmp_path / "plain"
    run_imp(smoke_config(*sets), plain, device="cpu", progress=False, log=lambda _: None)
    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1, 20)
        with pytest.raises(KeyboardInterrupt):
            run_imp(smoke_config(*sets), out, device="cpu", progress=False, log=lambda _: None)
    run_imp(smoke_config(*sets), out, device="cpu", progress=False, log=lambda _: None)
    a, b = RunFolder(plain), RunFolder(out)
    for r in a.completed_rounds():
        assert all(torch.equal(a.round_state(r)[k], b.round_state(r)[k]) for k in a.round_state(r))


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (("data.shift=8",), "data.shift = 8 moves 8x8 images out of sight"),
        (("data.shift=1", "data.permute_pixels=true"), "data.shift moves images"),
    ],
)
def test_a_shift_without_meaning_is_refused(sets, words):
    with pytest.raises(DataError, match=words):
        load_dataset(smoke_config(*sets).data)
