"""Datasets as registry entries: the config union, load_dataset and the catalog are built
from the reader modules listed in imprint.data.registry.READERS."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing

import pytest
import torch

from imprint.cli import main
from imprint.config import ConfigError, DataConfig, FileData, parse_config
from imprint.data import DataError, load_dataset, registry
from imprint.data.base import DataSection, Dataset, FileOptions
from imprint.data.catalog import check_data, format_datasets
from imprint.data.synthetic import NLGPData

# A complete dataset format, as a user would add one: this module plus one line in
# imprint.data.registry.READERS. Its files: train.csv and val.csv in data.root, one
# image a row (label, then the C*H*W pixel values 0..255).
TOY_READER = '''
"""Toy CSV images: train.csv, val.csv; rows of label, pixels (1 x 2 x 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from imprint.data.base import DataError, Dataset, FileOptions


class ToyData(FileOptions):
    name: Literal["toy", "toy_big"] = "toy"
    root: str = "data/toy"


def read_toy(config: ToyData):
    import numpy as np

    from imprint.data.files import RawData

    def split(file: str):
        path = Path(config.root) / file
        if not path.is_file():
            raise DataError(f"{path} does not exist.")
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
        return rows[:, 1:].astype(np.uint8), rows[:, 0]

    x_train, y_train = split("train.csv")
    x_val, y_val = split("val.csv")
    return RawData(x_train, y_train, x_val, y_val, (1, 2, 2), 3)


DATASET = Dataset(
    config=ToyData,
    read=read_toy,
    shape="(1, 2, 2)",
    files="train.csv, val.csv (label, 4 pixels a row)",
    options="-",
)
'''


def _write_toy_files(root):
    root.mkdir(parents=True, exist_ok=True)
    train = [(i % 3, i, 2 * i, 3 * i, 50) for i in range(12)]
    val = [(i % 3, 100 + i, 0, 0, 0) for i in range(6)]
    for name, rows in (("train.csv", train), ("val.csv", val)):
        (root / name).write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    return train, val


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy reader registered the way a new format is: one entry in READERS."""
    (tmp_path / "toy_reader.py").write_text(TOY_READER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "READERS", (*registry.READERS, "toy_reader"))
    root = tmp_path / "toy"
    train, val = _write_toy_files(root)
    import toy_reader

    yield toy_reader, root, train, val
    sys.modules.pop("toy_reader", None)


def _union_members(annotation) -> tuple:
    inner = typing.get_args(annotation)[0]  # Annotated[Union[...], Field(...)]
    return typing.get_args(inner)


def test_every_registered_dataset_is_in_the_config_and_the_catalog(capsys):
    declared = registry.datasets()
    assert [d.config for d in declared] == list(_union_members(DataConfig))
    on_disk = [d.config for d in declared if issubclass(d.config, FileOptions)]
    assert list(typing.get_args(FileData)) == on_disk
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert listing == format_datasets() + "\n"
    for dataset in declared:
        assert ", ".join(dataset.names) + "\n  input shape: " + dataset.shape in listing
        assert f"data.root holds: {dataset.files}" in listing
        for name in dataset.names:
            config = parse_config({"data": {"name": name}}).data
            assert type(config) is dataset.config and config.name == name
    assert registry.names() == (
        "nlgp",
        "imagenet32",
        "imagenet64",
        "cifar10",
        "cifar100",
        "mnist",
        "fashion_mnist",
        "folder",
    )
    assert "Options of every on-disk dataset: root, task (classes|superclasses|" in listing


def test_default_dataset_is_the_first_entry():
    assert registry.datasets()[0].config is NLGPData
    assert type(parse_config({}).data) is NLGPData
    assert type(parse_config({"data": {"height": 6}}).data) is NLGPData


def test_a_registered_reader_loads_through_load_dataset(toy):
    module, root, train, val = toy
    assert registry.datasets()[-1] is module.DATASET
    assert registry.dataset_for("toy_big") is module.DATASET
    data = load_dataset(module.ToyData(root=str(root), n_val=4, val_source="official"))
    # the shared options of every on-disk dataset apply (files.finish)
    assert data.shape == (1, 2, 2) and data.num_classes == 3
    assert data.x_train.dtype == torch.uint8
    assert data.x_train.tolist() == [list(r[1:]) for r in train]
    assert data.y_train.tolist() == [r[0] for r in train]
    assert data.x_val.tolist() == [list(r[1:]) for r in val[:4]]
    subset = load_dataset(
        module.ToyData(root=str(root), classes=[2, 0], permute_pixels=True, val_source="official")
    )
    assert subset.num_classes == 2 and subset.permutation is not None
    assert sorted(subset.y_train.tolist()) == [0] * 4 + [1] * 4
    report = check_data(module.ToyData(root=str(root), val_source="official"))
    assert report.n_train == 12 and report.source == str(root)
    listing = format_datasets()
    assert "toy, toy_big\n  input shape: (1, 2, 2)" in listing
    with pytest.raises(DataError, match="val.csv does not exist"):
        (root / "val.csv").unlink()
        load_dataset(module.ToyData(root=str(root), val_source="official"))


def test_registering_is_one_entry_for_config_cli_and_loading(tmp_path):
    """In a fresh interpreter: one READERS entry and nothing else, then the config union,
    `imprint datasets`, `imprint data check` and load_dataset all know the format."""
    (tmp_path / "toy_reader.py").write_text(TOY_READER)
    _write_toy_files(tmp_path / "toy")
    (tmp_path / "toy.toml").write_text(
        f'[data]\nname = "toy_big"\nroot = "{tmp_path / "toy"}"\nn_val = 5\n'
        'val_source = "official"\n'
    )
    script = textwrap.dedent(
        f"""
        import imprint.data.registry as registry
        registry.READERS = (*registry.READERS, "toy_reader")  # the one registry line

        from imprint.cli import main
        from imprint.config import ConfigError, load_config
        from imprint.data import load_dataset

        config = load_config({str(tmp_path / "toy.toml")!r})
        assert type(config.data).__name__ == "ToyData", type(config.data)
        data = load_dataset(config.data)
        assert data.x_train.shape == (12, 4) and data.x_val.shape == (5, 4)
        try:
            load_config({str(tmp_path / "toy.toml")!r}, ["data.name=nope"])
        except ConfigError as error:
            print("ERROR", error)
        assert main(["datasets"]) == 0
        assert main(["data", "check", {str(tmp_path / "toy.toml")!r}]) == 0
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "toy, toy_big\n  input shape: (1, 2, 2)" in result.stdout
    assert "dataset: toy_big" in result.stdout and "train: 12 images" in result.stdout
    assert "'data.name' must be one of 'nlgp'," in result.stdout
    assert "'folder', 'toy', 'toy_big'. Got 'nope'." in result.stdout


def test_unknown_name_is_one_line_naming_the_registered_ones(tmp_path, capsys):
    with pytest.raises(ConfigError) as info:
        parse_config({"data": {"name": "nope"}}, source="c.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "c.toml: 'data.name' must be one of 'nlgp', 'imagenet32', 'imagenet64', 'cifar10', "
        "'cifar100', 'mnist', 'fashion_mnist', 'folder'. Got 'nope'."
    )
    config = tmp_path / "c.toml"
    config.write_text('[data]\nname = "nope"\n')
    assert main(["data", "check", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'data.name' must be one of 'nlgp'" in err
    # load_dataset never falls through to a reader: an unregistered name is an error
    with pytest.raises(DataError) as info:
        load_dataset(NLGPData.model_construct(name="nope"))
    assert str(info.value) == (
        "data.name = 'nope' is not a registered dataset. Registered: nlgp, imagenet32, "
        "imagenet64, cifar10, cifar100, mnist, fashion_mnist, folder."
    )
    with pytest.raises(DataError, match="data.name = 'folder' needs a FolderData config"):
        load_dataset(NLGPData.model_construct(name="folder"))


def test_registry_refuses_bad_declarations(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "no_dataset.py").write_text("X = 1\n")
    (tmp_path / "twice.py").write_text(
        "from imprint.data.synthetic import DATASET\n"  # nlgp, declared again
    )
    try:
        monkeypatch.setattr(registry, "READERS", (*registry.READERS, "no_dataset"))
        with pytest.raises(TypeError, match="no_dataset .* defines no\\s+DATASET"):
            registry.datasets()
        monkeypatch.setattr(registry, "READERS", (*registry.READERS[:-1], "twice"))
        with pytest.raises(TypeError, match="'nlgp' is declared twice"):
            registry.datasets()
    finally:
        sys.modules.pop("no_dataset", None)
        sys.modules.pop("twice", None)

    class Nameless(DataSection):
        name: str = "x"

    with pytest.raises(TypeError, match="must have a field 'name: Literal"):
        Dataset(config=Nameless, read=lambda c: None, shape="", files="")
