"""Corrupt, truncated, wrong-typed and oversized inputs end in success or the project's
own clear error, never in a traceback from numpy, pickle or PIL. Property-based:
``HYPOTHESIS_EXAMPLES`` (default 40 per test) sets the count; the slow marker runs more.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imprint.config import CIFARData, ConfigError, ImageNetData, MNISTData, load_config
from imprint.data import DataError, load_dataset
from tests.data_fixtures import write_cifar, write_mnist
from tests.test_imagenet import write_imagenet32

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "40"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
arrays = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill).astype(dtype),
    st.sampled_from(["uint8", "int64", "float32", "U3"]),
    st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
    st.integers(0, 3),
)
batch_values = st.one_of(plain, arrays)
batches = (
    st.dictionaries(
        st.sampled_from(["data", "labels", "mean", "fine_labels", "x"]), batch_values, max_size=4
    )
    | plain
)


def _damage(data: bytes, how: int, cut: float, junk: bytes) -> bytes:
    if how == 0:
        return data[: int(cut * len(data))]  # truncated
    if how == 1:
        return junk  # garbage
    middle = int(cut * len(data))
    return data[:middle] + junk + data[middle + len(junk) :]  # overwritten in place


def _check_outcome(load) -> None:
    """Success or DataError; anything else fails the test."""
    try:
        load()
    except DataError as error:
        assert str(error)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    write_imagenet32(root / "imagenet")
    write_cifar(root / "cifar")
    write_mnist(root / "mnist", gz=False)
    write_mnist(root / "mnistgz", gz=True)
    return root


def _copy(pristine: Path, name: str, tmp: Path) -> Path:
    target = tmp / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(pristine / name, target)
    return target


CASES = [
    ("imagenet", "train_data_batch_4", lambda r: ImageNetData(root=str(r))),
    ("cifar", "test_batch", lambda r: CIFARData(root=str(r))),
    ("mnist", "train-images-idx3-ubyte", lambda r: MNISTData(root=str(r))),
    ("mnistgz", "t10k-labels-idx1-ubyte.gz", lambda r: MNISTData(root=str(r))),
]


@pytest.mark.parametrize(("name", "victim", "config"), CASES, ids=[c[0] for c in CASES])
@SETTINGS
@given(how=st.integers(0, 2), cut=st.floats(0, 1), junk=st.binary(min_size=1, max_size=64))
def test_damaged_files(pristine, tmp_path, name, victim, config, how, cut, junk):
    root = _copy(pristine, name, tmp_path)
    path = root / victim
    path.write_bytes(_damage(path.read_bytes(), how, cut, junk))
    _check_outcome(lambda: load_dataset(config(root)))


@pytest.mark.parametrize(("name", "victim", "config"), CASES[:2], ids=["imagenet", "cifar"])
@SETTINGS
@given(batch=batches)
def test_wrong_typed_pickles(pristine, tmp_path, name, victim, config, batch):
    root = _copy(pristine, name, tmp_path)
    with open(root / victim, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    _check_outcome(lambda: load_dataset(config(root)))


@SETTINGS
@given(dims=st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3))
def test_oversized_idx_headers(pristine, tmp_path, dims):
    root = _copy(pristine, "mnist", tmp_path)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in dims)
    (root / "train-images-idx3-ubyte").write_bytes(header + b"\0" * 64)
    _check_outcome(lambda: load_dataset(MNISTData(root=str(root))))


toml_values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, width=32),
    st.booleans(),
    st.text(max_size=6).map(lambda t: f'"{t}"'),
    st.just("[1, 2]"),
    st.just("[]"),
    st.just("{a = 1}"),
)
keys = st.sampled_from(
    [
        "train.steps",
        "train.lr",
        "prune.fraction",
        "prune.scope",
        "model.hidden",
        "data.name",
        "data.gain",
        "prune.exclude_layers",
        "seeds.init",
        "data.class_xi",
        "prune.procedure",
        "bogus.key",
        "train",
    ]
)


@SETTINGS
@given(items=st.lists(st.tuples(keys, toml_values), max_size=4), junk=st.binary(max_size=40))
def test_config_loader(tmp_path, items, junk):
    from tests.conftest import CONFIGS

    overrides = [f"{k}={v}" for k, v in items]
    try:
        load_config(CONFIGS / "smoke.toml", overrides)
    except ConfigError as error:
        assert str(error)
    path = tmp_path / "junk.toml"
    path.write_bytes(junk)
    try:
        load_config(path)
    except ConfigError as error:
        assert str(error)


@pytest.mark.slow
def test_many_more_hostile_inputs():
    """The same properties with 25x the examples (run with -m slow)."""
    import subprocess
    import sys

    env = {**os.environ, "HYPOTHESIS_EXAMPLES": str(EXAMPLES * 25)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            __file__,
            "-m",
            "not slow",
        ],
        env=env,
        check=False,
    )
    assert result.returncode == 0
