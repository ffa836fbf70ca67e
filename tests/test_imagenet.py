"""ImageNet32 loading from tiny files written in the exact on-disk formats."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from imprint.config import ImageNetData, load_config
from imprint.data import DataError, load_dataset
from imprint.data.files import superclass_table
from imprint.data.safe import safe_unpickle
from imprint.imp import run_imp
from tests.conftest import CONFIGS

PER_BATCH = 6


def write_imagenet32(root, fmt="pickle", n_val=8, seed=0):
    """Ten train batches and val_data; returns (train images, train labels 1..1000, mean)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for _ in range(10):
        x = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        y = rng.integers(1, 1001, size=PER_BATCH).tolist()
        xs.append(x)
        ys.extend(y)
    mean = np.concatenate(xs).mean(axis=0)  # float64, as in the real files
    for i, x in enumerate(xs, start=1):
        batch = {"data": x, "labels": ys[(i - 1) * PER_BATCH : i * PER_BATCH], "mean": mean}
        _write(root / f"train_data_batch_{i}", batch, fmt)
    val = {
        "data": rng.integers(0, 256, size=(n_val, 3072), dtype=np.uint8),
        "labels": rng.integers(1, 1001, size=n_val).tolist(),
    }
    _write(root / "val_data", val, fmt)
    return np.concatenate(xs), np.array(ys), mean, val


def _write(path, batch, fmt):
    if fmt == "pickle":
        with open(path, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    else:
        np.savez(str(path) + ".npz", **{k: np.asarray(v) for k, v in batch.items()})


@pytest.mark.parametrize("fmt", ["pickle", "npz"])
def test_layout_labels_and_mean(tmp_path, fmt):
    x, y, mean, val = write_imagenet32(tmp_path, fmt)
    data = load_dataset(ImageNetData(root=str(tmp_path), n_val=5, val_source="official"))
    assert data.shape == (3, 32, 32) and data.num_classes == 1000
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (60, 3072)
    assert torch.equal(data.x_train, torch.from_numpy(x))
    assert torch.equal(data.y_train, torch.from_numpy(y - 1))  # 0-based
    assert torch.equal(data.x_val, torch.from_numpy(val["data"][:5]))
    assert data.y_val.tolist() == [v - 1 for v in val["labels"][:5]]
    # channel-major: index c*H*W + y*W + x
    img = data.x_train[0].reshape(3, 32, 32)
    assert img[2, 5, 7] == data.x_train[0, 2 * 1024 + 5 * 32 + 7]
    # the paper's (x - mean) / 255, per batch
    batch = data.normalize(data.x_train[:2])
    expected = (torch.from_numpy(x[:2]).double() - torch.from_numpy(mean)) / 255
    assert torch.allclose(batch.double(), expected, atol=1e-5)


def test_tasks_and_fraction(tmp_path):
    _, y, _, _ = write_imagenet32(tmp_path)
    table = superclass_table()
    assert np.bincount(table).tolist() == [118, 100, 95, 85, 104, 111, 99, 95, 96, 97]
    assert table[0] == 1 and table[1] == 0  # kit_fox: mammals; English_setter: dogs
    sup = load_dataset(ImageNetData(root=str(tmp_path), task="superclasses", val_source="official"))
    assert sup.num_classes == 10 and sup.y_train.tolist() == table[y - 1].tolist()
    mod = load_dataset(ImageNetData(root=str(tmp_path), task="modulo", val_source="official"))
    assert mod.num_classes == 10 and mod.y_train.tolist() == ((y - 1) % 10).tolist()
    part = load_dataset(ImageNetData(root=str(tmp_path), train_fraction=0.3, val_source="official"))
    assert part.x_train.shape[0] == 18 and part.y_train.tolist() == (y[:18] - 1).tolist()


def test_hostile_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "val_data"
    with open(path, "wb") as handle:
        pickle.dump({"data": Payload(), "labels": [1]}, handle)
    with pytest.raises(
        DataError, match="refused to load 'posix.system'|refused to load 'os.system'"
    ):
        safe_unpickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "is not a readable pickle"),
        ("garbage", "is not a readable pickle"),
        ("missing", "does not exist"),
        ("shape", "'data' must be a uint8 array of shape (N, 3072)"),
        ("labels", "labels must be in 1..1000. Got 0..1000"),
    ],
)
def test_damaged_files_give_clear_errors(tmp_path, damage, message):
    write_imagenet32(tmp_path)
    path = tmp_path / "train_data_batch_3"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"\x80\x02garbage" * 10)
    elif damage == "missing":
        path.unlink()
    elif damage == "shape":
        _write(path, {"data": np.zeros((4, 100), np.uint8), "labels": [1] * 4}, "pickle")
    elif damage == "labels":
        _write(path, {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1000]}, "pickle")
    with pytest.raises(DataError) as info:
        load_dataset(ImageNetData(root=str(tmp_path), val_source="official"))
    assert message in str(info.value)
    assert "train_data_batch_3" in str(info.value)


@pytest.mark.parametrize("name", ["classes", "superclasses", "modulo", "fraction30"])
def test_paper_configs_run_end_to_end_on_fixture_files(tmp_path, name):
    write_imagenet32(tmp_path / "data", n_val=20)
    config = load_config(
        CONFIGS / "paper" / f"imagenet32_{name}.toml",
        [
            f'data.root="{tmp_path / "data"}"',
            "data.n_val=10",
            "model.hidden=[16, 16, 16]",
            "train.steps=6",
            "train.batch_size=8",
            "train.eval_every=3",
            "prune.rewind_step=2",
            "prune.max_rounds=2",
        ],
    )
    result = run_imp(config, tmp_path / "run", device="cpu", progress=False, log=lambda _: None)
    assert len(result.rounds) == 3
    assert result.rounds[2]["layer_density"][0] == pytest.approx(0.49, abs=0.01)
