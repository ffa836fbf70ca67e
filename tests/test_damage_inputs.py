"""Damage at random to the inputs a resume or a data load reads beyond the run folder's
files: an in-round checkpoint (truncated, garbage, NaN, a tensor of another shape or
dtype, a step anywhere, a tensor missing or added), a mapping file, a sweep file. Each
ends in success or one clear line naming the file: never a traceback or an internal
error, and the completed rounds stay as they were."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from imprint.cli import main
from imprint.config import ConfigError, MNISTData
from imprint.data import DataError, load_dataset
from imprint.sweep import load_sweep
from tests.conftest import CONFIGS, smoke_run_args
from tests.data_fixtures import write_mnist
from tests.killpoints import kill_env

EXAMPLES = int(os.environ.get("IMPRINT_DAMAGE_EXAMPLES", "10"))
SETS = ("prune.max_rounds=2", "train.steps=30", "train.checkpoint_every=4", "train.momentum=0.9")
_PROPERTY = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CHECKPOINT_DAMAGES = (
    "truncate",
    "garbage",
    "nan",
    "shape",
    "dtype",
    "step",
    "drop",
    "add",
    "metadata",
)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run killed inside round 1, its checkpoint written (tests/killpoints)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("interrupted") / "run"
    command = [sys.executable, "-m", "imprint", *smoke_run_args(out, *SETS)]
    # round 0 writes 7 checkpoints (30 steps, every 4): the 10th is inside round 1
    done = subprocess.run(command, env=kill_env("after:checkpoint.safetensors:10"))
    assert done.returncode != 0 and (out / "checkpoint.safetensors").exists()
    return out


def _damage_checkpoint(path: Path, how: str, draw) -> None:
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[: draw(st.integers(0, len(raw) - 1))])
        return
    if how == "garbage":
        path.write_bytes(bytes(draw(st.binary(min_size=0, max_size=256))))
        return
    tensors = st_load(raw)
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    metadata = json.loads(header["__metadata__"]["imprint"])
    name = draw(st.sampled_from(sorted(tensors)))
    value = tensors[name]
    if how == "nan" and value.is_floating_point() and value.numel():
        value = value.clone()
        value.view(-1)[draw(st.integers(0, value.numel() - 1))] = float("nan")
    elif how == "shape" and value.numel() > 1:
        value = value.reshape(-1)[:-1].clone()
    elif how == "dtype":
        value = value.to(draw(st.sampled_from([torch.float64, torch.int32, torch.uint8])))
    elif how == "step":
        metadata["step"] = draw(st.integers(-(10**12), 10**12))
    elif how == "drop":
        tensors.pop(name)
    elif how == "add":
        tensors[draw(st.sampled_from(["stray", "net.extra", "momentum.99", "rewind.7.x"]))] = (
            torch.zeros(3)
        )
    elif how == "metadata":
        metadata[draw(st.sampled_from(sorted(metadata)))] = draw(
            st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers()))
        )
    if how not in ("drop", "add", "step", "metadata"):
        tensors[name] = value
    path.write_bytes(st_save(tensors, metadata={"imprint": json.dumps(metadata)}))


@settings(max_examples=EXAMPLES, **_PROPERTY)
@given(data=st.data(), how=st.sampled_from(CHECKPOINT_DAMAGES))
def test_a_damaged_checkpoint_ends_in_success_or_one_line(interrupted, capsys, data, how):
    work = Path(tempfile.mkdtemp(prefix="checkpoint-damage-"))
    try:
        out = work / "run"
        shutil.copytree(interrupted, out, symlinks=True)
        _damage_checkpoint(out / "checkpoint.safetensors", how, data.draw)
        kept = {p: p.read_bytes() for p in (out / "rounds").rglob("*") if p.is_file()}
        code = main(smoke_run_args(out, *SETS))
        event(f"{how}: exit {code}")
        err = capsys.readouterr().err
        assert code in (0, 2), (how, code, err)
        assert "Traceback" not in err and "internal error" not in err, (how, err)
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "checkpoint.safetensors" in lines[0], (how, err)
        assert all(p.read_bytes() == raw for p, raw in kept.items())  # completed rounds kept
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root)
    return root


@settings(max_examples=EXAMPLES * 3, **_PROPERTY)
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.lists(
            st.tuples(st.one_of(st.integers(-3, 14), st.text(max_size=3)), st.integers(-3, 14)),
            max_size=12,
        ).map(lambda rows: "label,target\n" + "".join(f"{a},{b}\n" for a, b in rows)),
    )
)
def test_a_damaged_mapping_file_is_used_or_refused_by_name(mnist_root, text):
    path = mnist_root / "mapping.csv"
    path.write_text(text)
    config = MNISTData(
        name="mnist", root=str(mnist_root), n_val=5, task="mapping", mapping_file=str(path)
    )
    try:
        data = load_dataset(config)
    except DataError as error:
        assert "mapping" in str(error) or str(mnist_root) in str(error), str(error)
    else:
        assert data.num_classes >= 2


@settings(max_examples=EXAMPLES * 3, **_PROPERTY)
@given(
    body=st.one_of(
        st.text(max_size=300),
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["name", "seeds", "together", "grid", "set", "variants", "base", "x"]
                ),
                st.sampled_from(
                    [
                        '"s"',
                        "[0, 1]",
                        "true",
                        '{ "train.lr" = [0.1] }',
                        "3",
                        "[[1]]",
                        '"../x"',
                        "1e308",
                        '{ "train.steps" = "a" }',
                    ]
                ),
            ),
            max_size=6,
        ).map(lambda pairs: "".join(f"{k} = {v}\n" for k, v in pairs)),
    )
)
def test_a_damaged_sweep_file_loads_or_is_refused_by_name(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("sweep") / "s.toml"
    path.write_text(f'base = "{CONFIGS / "smoke.toml"}"\n' + body)
    try:
        load_sweep(path)
    except ConfigError as error:
        assert str(path) in str(error) or "sweep" in str(error).lower(), str(error)
