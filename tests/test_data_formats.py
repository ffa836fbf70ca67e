"""CIFAR, MNIST and image-folder loading; the shared task options; the data CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint.cli import main
from imprint.config import CIFARData, FolderData, MNISTData, parse_config
from imprint.data import DataError, load_dataset
from imprint.data.catalog import check_data
from imprint.data.files import held_out
from tests.data_fixtures import write_cifar, write_folder, write_mnist


def test_cifar10_layout_and_labels(tmp_path):
    xs, ys, _ = write_cifar(tmp_path)
    data = load_dataset(CIFARData(root=str(tmp_path), n_val=5, val_source="official"))
    assert data.shape == (3, 32, 32) and data.num_classes == 10
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (40, 3072)
    assert torch.equal(data.x_train, torch.from_numpy(np.concatenate(xs[:5])))
    assert data.y_train.tolist() == sum(ys[:5], [])  # CIFAR labels are already 0-based
    assert torch.equal(data.x_val, torch.from_numpy(xs[5][:5]))
    # (x - mean image) / 255 with the mean of the training images
    mean = np.concatenate(xs[:5]).mean(axis=0)
    expected = (np.concatenate(xs[:5])[:3] - mean) / 255
    assert np.allclose(data.normalize(data.x_train[:3]).numpy(), expected, atol=1e-5)


def test_cifar100_fine_and_coarse(tmp_path):
    _, fine, coarse = write_cifar(tmp_path, "cifar100")
    f = load_dataset(CIFARData(name="cifar100", root=str(tmp_path), val_source="official"))
    c = load_dataset(
        CIFARData(name="cifar100", root=str(tmp_path), labels="coarse", val_source="official")
    )
    assert f.num_classes == 100 and f.y_train.tolist() == fine[0]
    assert c.num_classes == 20 and c.y_train.tolist() == coarse[0]


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    written = write_mnist(tmp_path, gz=gz)
    data = load_dataset(
        MNISTData(name="fashion_mnist", root=str(tmp_path), n_val=7, val_source="official")
    )
    images, labels = written["train"]
    assert data.shape == (1, 28, 28) and data.x_train.shape == (30, 784)
    assert torch.equal(data.x_train, torch.from_numpy(images.reshape(30, 784)))
    assert data.y_train.tolist() == labels.tolist()
    assert data.x_val.shape == (7, 784)
    # pixel (y, x) of image 0 is input y*28 + x
    assert data.x_train[0, 5 * 28 + 9] == images[0, 5, 9]


def test_image_folder_resized_channel_major(tmp_path):
    write_folder(tmp_path)
    config = FolderData(root=str(tmp_path), height=8, width=6, val_source="train", n_val=3)
    data = load_dataset(config)
    assert data.shape == (3, 8, 6) and data.num_classes == 3
    assert data.x_train.shape == (9, 144) and data.x_val.shape == (3, 144)
    # the red channel (c = 0, first 48 inputs) encodes the class
    red = data.x_train[:, :48].float().mean(dim=1)
    assert torch.allclose(red, 40.0 * data.y_train.float(), atol=2)
    with pytest.raises(DataError, match="has no official validation set"):
        load_dataset(FolderData(root=str(tmp_path), val_source="official"))


def test_class_subset_mapping_fraction_and_validation(tmp_path):
    xs, ys, _ = write_cifar(tmp_path, per_file=40)
    root = str(tmp_path)
    y_all = np.array(sum(ys[:5], []))
    sub = load_dataset(CIFARData(root=root, classes=[7, 2], val_source="official"))
    keep = np.isin(y_all, [7, 2])
    assert sub.num_classes == 2
    assert sub.y_train.tolist() == np.where(y_all[keep] == 7, 0, 1).tolist()
    mod = load_dataset(CIFARData(root=root, task="modulo", modulo=3, val_source="official"))
    assert mod.y_train.tolist() == (y_all % 3).tolist() and mod.num_classes == 3
    mapping = tmp_path / "map.csv"
    mapping.write_text("label,target\n" + "".join(f"{i},{int(i >= 5)}\n" for i in range(10)))
    mapped = load_dataset(
        CIFARData(root=root, task="mapping", mapping_file=str(mapping), val_source="official")
    )
    assert mapped.y_train.tolist() == (y_all >= 5).astype(int).tolist()
    first = load_dataset(CIFARData(root=root, train_fraction=0.25, val_source="official"))
    assert first.x_train.shape[0] == 50 and first.y_train.tolist() == y_all[:50].tolist()
    rand = load_dataset(
        CIFARData(
            root=root, train_fraction=0.25, fraction_mode="random", seed=4, val_source="official"
        )
    )
    again = load_dataset(
        CIFARData(
            root=root, train_fraction=0.25, fraction_mode="random", seed=4, val_source="official"
        )
    )
    assert rand.x_train.shape[0] == 50 and torch.equal(rand.x_train, again.x_train)
    assert not torch.equal(rand.x_train, first.x_train)
    held = load_dataset(CIFARData(root=root, val_source="train", n_val=30))
    x_all = np.concatenate(xs[:5])
    chosen = held_out(200, 30, seed=0)
    assert torch.equal(held.x_val, torch.from_numpy(x_all[chosen]))
    rest = np.setdiff1d(np.arange(200), chosen)
    assert torch.equal(held.x_train, torch.from_numpy(x_all[rest]))  # in file order


def test_channel_standardisation_and_permutation(tmp_path):
    write_cifar(tmp_path, per_file=50)
    data = load_dataset(
        CIFARData(root=str(tmp_path), normalization="channel", val_source="official")
    )
    z = data.normalize(data.x_train).reshape(-1, 3, 1024)
    assert torch.allclose(z.mean(dim=(0, 2)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2)), torch.ones(3), atol=1e-3)
    perm = load_dataset(
        CIFARData(
            root=str(tmp_path), normalization="channel", permute_pixels=True, val_source="official"
        )
    )
    # the same network inputs, permuted: normalisation follows the pixels
    assert torch.allclose(
        perm.normalize(perm.x_train), data.normalize(data.x_train)[:, perm.permutation]
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"name": "cifar10", "task": "superclasses"}, "data.name = 'cifar10' has none"),
        ({"name": "mnist", "task": "mapping"}, "data.mapping_file must name a CSV file"),
        ({"name": "cifar10", "classes": [3, 3]}, "must not repeat a label"),
        ({"name": "folder", "channels": 2}, "'data.channels'"),
    ],
)
def test_data_options_validated(document, message):
    from imprint.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({"data": document})
    assert message in str(info.value)


def test_errors_name_the_file(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(DataError, match="data.classes names label 12"):
        load_dataset(CIFARData(root=str(tmp_path), classes=[1, 12], val_source="official"))
    (tmp_path / "data_batch_2").unlink()
    with pytest.raises(DataError, match="data_batch_2 does not exist"):
        load_dataset(CIFARData(root=str(tmp_path), val_source="official"))
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(MNISTData(root=str(tmp_path / "none"), val_source="official"))
    mnist = tmp_path / "m"
    write_mnist(mnist, gz=False)
    path = mnist / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: header says"):
        load_dataset(MNISTData(root=str(mnist), val_source="official"))


def test_check_data_and_cli(tmp_path, capsys):
    write_mnist(tmp_path / "m")
    report = check_data(MNISTData(root=str(tmp_path / "m"), n_val=10, val_source="official"))
    assert report.n_train == 30 and report.n_val == 10 and report.shape == (1, 28, 28)
    assert sum(report.train_counts) == 30 and report.dtype == "uint8"
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\nname = "mnist"\nroot = "{tmp_path / "m"}"\n')
    assert main(["data", "check", str(config), "--set", "data.n_val=5"]) == 0
    out = capsys.readouterr().out
    assert "train: 25 images" in out and "val:   5 images" in out  # held out of training
    assert main(["data", "check", str(config), "--set", f'data.root="{tmp_path}/x"']) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    for name in ("imagenet32", "cifar10", "mnist", "folder", "nlgp"):
        assert name in listing


def test_fashion_mnist_superclasses_balanced_and_their_modulo_control(tmp_path):
    """Tops (0, 2, 4, 6), bottoms (1), footwear (5, 7, 9), bags (8); the dress (3) is
    left out. Balanced, every superclass has the size of the smallest, each taking an
    equal share of its labels (their first images); the modulo control groups the
    same labels by label mod 4."""
    from imprint.data.files import modulo_superclass_table, superclass_table

    table = superclass_table("fashion_mnist")
    assert table.tolist() == [0, 1, 0, -1, 0, 2, 0, 2, 3, 2]
    assert modulo_superclass_table("fashion_mnist").tolist() == [0, 1, 2, -1, 0, 1, 2, 3, 0, 1]
    assert (modulo_superclass_table("imagenet32") == np.arange(1000) % 10).all()
    written = write_mnist(tmp_path, n_train=400, n_test=200, seed=3)
    root = str(tmp_path)
    for task, grouping in (
        ("superclasses", table),
        ("modulo_superclasses", modulo_superclass_table("fashion_mnist")),
    ):
        data = load_dataset(
            MNISTData(
                name="fashion_mnist", root=root, task=task, balance=True, val_source="official"
            )
        )
        labels = written["train"][1].astype(np.int64)
        mapped = grouping[labels]
        sources = [np.flatnonzero(grouping == k) for k in range(4)]
        size = min(len(s) * min(int((labels == lab).sum()) for lab in s) for s in sources)
        expected = np.zeros(labels.shape[0], dtype=bool)
        for s in sources:
            for lab in s:
                expected[np.flatnonzero(labels == lab)[: size // len(s)]] = True
        assert data.num_classes == 4
        assert data.y_train.tolist() == mapped[expected].tolist()
        counts = torch.bincount(data.y_train, minlength=4)
        assert counts.max() - counts.min() <= 2  # equal up to the per-label rounding
        images = written["train"][0].reshape(-1, 784)
        assert torch.equal(data.x_train, torch.from_numpy(images[expected]))
    unbalanced = load_dataset(
        MNISTData(name="fashion_mnist", root=root, task="superclasses", val_source="official")
    )
    assert unbalanced.y_train.tolist() == [
        int(table[y]) for y in written["train"][1] if table[y] >= 0
    ]
    with pytest.raises(ValueError, match="data.name = 'mnist' has none"):
        MNISTData(name="mnist", root=root, task="superclasses", val_source="official")


def test_crop_drops_the_border_pixels_of_every_image(tmp_path):
    written = write_mnist(tmp_path, n_train=20, n_test=10, seed=5)
    data = load_dataset(MNISTData(root=str(tmp_path), crop=3, val_source="official"))
    assert data.shape == (1, 22, 22) and data.input_dim == 22 * 22
    assert torch.equal(
        data.x_train, torch.from_numpy(written["train"][0][:, 3:25, 3:25].reshape(20, -1))
    )
    mean = written["train"][0][:, 3:25, 3:25].reshape(20, -1).mean(axis=0)
    assert torch.allclose(data.offset, torch.from_numpy(mean).float(), atol=1e-4)
    assert load_dataset(MNISTData(root=str(tmp_path), crop=13, val_source="official")).shape == (
        1,
        2,
        2,
    )
    with pytest.raises(DataError, match=r"data.crop = 14 leaves no image.*crop <= 13"):
        load_dataset(MNISTData(root=str(tmp_path), crop=14, val_source="official"))


@pytest.mark.parametrize("normalization", ["paper", "channel"])
def test_both_normalisations_train_end_to_end(tmp_path, normalization):
    """A per-channel scale reaches the training engine as a tensor (one value per input):
    a run trains and evaluates with it."""
    from imprint.imp import run_imp
    from tests.conftest import smoke_config

    write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    config = smoke_config(
        'data={name = "mnist"}',
        f'data.root="{tmp_path / "mnist"}"',
        f'data.normalization="{normalization}"',
        "data.n_val=10",
        "model.hidden=[16]",
        "prune.max_rounds=1",
    )
    result = run_imp(config, tmp_path / "run", device="cpu", progress=False, log=lambda _: None)
    assert len(result.rounds) == 2
    assert all(0.0 <= r["best_val_top1"] <= 1.0 for r in result.rounds)
