"""The real Fashion-MNIST files, where the OS ships them (Debian's
dataset-fashion-mnist, which the test command installs when it can)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imprint.config import parse_config
from imprint.data import load_dataset
from imprint.data.mnist import DEFAULT_ROOTS

ROOT = Path(DEFAULT_ROOTS["fashion_mnist"])
pytestmark = pytest.mark.skipif(
    not ROOT.is_dir(),
    reason=f"{ROOT} absent: apt-get install dataset-fashion-mnist (Debian/Ubuntu) to run",
)


@pytest.fixture(scope="module")
def data():
    config = parse_config(  # no data.root: the default
        {"data": {"name": "fashion_mnist", "val_source": "official"}}
    )
    assert config.data.root == str(ROOT)
    return load_dataset(config.data)


def test_three_splits_of_the_real_files():
    """The default: 10,000 training images held out for validation, the official
    10,000 the test set."""
    data = load_dataset(parse_config({"data": {"name": "fashion_mnist"}}).data)
    assert data.x_test is not None and data.y_test is not None
    assert (data.x_train.shape[0], data.x_val.shape[0], data.x_test.shape[0]) == (
        50_000,
        10_000,
        10_000,
    )
    assert torch.bincount(data.y_test.long()).tolist() == [1000] * 10
    assert data.splits["seed"] == 0 and len(data.splits["held_out_sha256"]) == 64


def test_counts_and_class_balance(data):
    assert tuple(data.x_train.shape) == (60_000, 784) and data.x_train.dtype == torch.uint8
    assert tuple(data.x_val.shape) == (10_000, 784)
    assert data.shape == (1, 28, 28) and data.num_classes == 10
    assert torch.bincount(data.y_train.long()).tolist() == [6000] * 10
    assert torch.bincount(data.y_val.long()).tolist() == [1000] * 10


def test_known_pixel_statistics(data):
    """The published normalisation constants of Fashion-MNIST's training set (mean
    0.2860, sd 0.3530 of the [0, 1] pixel values), and its first image (an ankle boot,
    class 9)."""
    pixels = data.x_train.double() / 255
    assert pixels.mean().item() == pytest.approx(0.2860, abs=5e-4)
    assert pixels.std().item() == pytest.approx(0.3530, abs=5e-4)
    assert int(data.y_train[0]) == 9 and int(data.x_train[0].sum()) == 76247


@pytest.mark.parametrize("task", ["superclasses", "modulo_superclasses"])
def test_balanced_superclasses_of_the_real_files(task):
    """Tops, bottoms, footwear, bags (and their modulo control): 6,000 training and
    1,000 validation images each (999 where 1,000 does not split over 3 labels)."""
    config = parse_config(
        {"data": {"name": "fashion_mnist", "task": task, "balance": True, "val_source": "official"}}
    )
    data = load_dataset(config.data)
    assert data.num_classes == 4
    assert torch.bincount(data.y_train.long()).tolist() == [6000] * 4
    assert all(count in (999, 1000) for count in torch.bincount(data.y_val.long()).tolist())
