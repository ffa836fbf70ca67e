"""Data larger than half the memory: batches streamed into one array, rows taken in
place (imprint.data.files.take_rows), and the result the same as plain indexing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint.config import ImageNetData
from imprint.data import load_dataset
from imprint.data.files import held_out, take_rows
from tests.test_imagenet import write_imagenet32


@pytest.mark.parametrize("size", [0, 1, 7, 40])
def test_take_rows_is_indexing_in_place(size):
    rng = np.random.default_rng(size)
    x = rng.integers(0, 256, size=(40, 5), dtype=np.uint8)
    rows = np.sort(rng.choice(40, size=size, replace=False))
    expected = x[rows]
    got = take_rows(x, rows, chunk=3)  # chunks smaller than the gaps and the runs
    assert np.array_equal(got, expected)
    if 0 < size < 40:
        assert np.shares_memory(got, x)  # no second copy


def test_take_rows_copies_what_it_may_not_write_and_refuses_unsorted_rows():
    x = np.arange(20, dtype=np.uint8).reshape(10, 2)
    x.flags.writeable = False
    got = take_rows(x, np.array([1, 4]))
    assert np.array_equal(got, x[[1, 4]]) and not np.shares_memory(got, x)
    for rows in ([3, 1], [0, 3, 2], [1, 1]):  # descending, out of order, repeated
        with pytest.raises(ValueError, match="ascending"):
            take_rows(np.zeros((5, 2), np.uint8), np.array(rows))


@pytest.mark.parametrize("fmt", ["pickle", "npz"])
def test_streamed_imagenet_holds_the_files_splits(tmp_path, fmt):
    """Streamed batches and rows taken in place give exactly the held-out split and
    the training rows of plain indexing into the concatenated files."""
    x, y, _, val = write_imagenet32(tmp_path, fmt)
    data = load_dataset(ImageNetData(root=str(tmp_path), n_val=9, seed=3))
    held = held_out(x.shape[0], 9, 3)
    rest = np.setdiff1d(np.arange(x.shape[0]), held)
    assert torch.equal(data.x_val, torch.from_numpy(x[held]))
    assert torch.equal(data.x_train, torch.from_numpy(x[rest]))
    assert torch.equal(data.y_train, torch.from_numpy(y[rest] - 1))
    assert data.x_test is not None
    assert torch.equal(data.x_test, torch.from_numpy(val["data"]))


def test_compressed_batches_grow_the_array(tmp_path):
    """npz files smaller than their images (compressed) still load whole."""
    x, _, _, _ = write_imagenet32(tmp_path, "pickle")
    for i in range(1, 11):
        path = tmp_path / f"train_data_batch_{i}"
        path.unlink()
        part = x[(i - 1) * 6 : i * 6]
        np.savez_compressed(
            str(path) + ".npz", data=np.zeros_like(part), labels=np.ones(6, dtype=np.int64)
        )
    data = load_dataset(ImageNetData(root=str(tmp_path), val_source="official", n_val=4))
    assert data.x_train.shape == (60, 3072) and int(data.x_train.sum()) == 0
