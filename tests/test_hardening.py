"""Hardening of the run folder: failed starts leave nothing behind, --allow-change stays
within what cannot mix two experiments, and a relative data.root is pinned."""

from __future__ import annotations

import os

import pytest
import torch

from imprint.cli import main
from imprint.config import load_config
from imprint.imp import run_experiment, run_imp
from imprint.runs import RunFolder
from imprint.safeio import RunFolderError
from tests.conftest import CONFIGS, smoke_config, smoke_run_args
from tests.data_fixtures import write_mnist


def _quiet(_):
    return None


@pytest.mark.parametrize("seeds", [[], ["--seeds", "0,1"]], ids=["run", "group"])
def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_command(tmp_path, capsys, seeds):
    out = tmp_path / "run"
    bad = main([*smoke_run_args(out, "prune.max_rounds=0", "train.precision=bf16"), *seeds])
    assert bad == 2 and "needs a CUDA device" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    good = main([*smoke_run_args(out, "prune.max_rounds=0"), *seeds])
    assert good == 0


def test_a_failed_resume_keeps_the_folder(tmp_path):
    out = tmp_path / "run"
    run_imp(smoke_config("prune.max_rounds=0"), out, device="cpu", progress=False, log=_quiet)
    before = sorted(p.name for p in out.iterdir())
    config = smoke_config("prune.max_rounds=1", "train.precision=bf16")
    with pytest.raises(Exception, match="needs a CUDA device|different config"):
        run_imp(config, out, device="cpu", progress=False, log=_quiet)
    assert sorted(p.name for p in out.iterdir()) == before
    assert RunFolder(out).completed_rounds() == [0]


def test_allow_change_refuses_the_model_the_data_and_the_seeds(tmp_path):
    out = tmp_path / "run"
    run_imp(smoke_config("prune.max_rounds=0"), out, device="cpu", progress=False, log=_quiet)
    config_text = (out / "config.toml").read_text()
    for key, value in (("model.hidden", "[8]"), ("data.gain", "2.0"), ("seeds.init", "3")):
        config = smoke_config("prune.max_rounds=0", f"{key}={value}")
        with pytest.raises(RunFolderError, match=f"--allow-change {key}: the model, the data"):
            run_imp(config, out, device="cpu", progress=False, log=_quiet, allow_changes=[key])
    assert (out / "config.toml").read_text() == config_text
    assert not (out / "config_changes.json").exists()


def test_a_relative_data_root_is_recorded_absolute(tmp_path, monkeypatch):
    data = tmp_path / "here" / "mnist"
    write_mnist(data, n_train=64, n_test=32)
    config_file = tmp_path / "c.toml"
    config_file.write_text(
        '[data]\nname = "mnist"\nroot = "mnist"\nn_val = 32\n[model]\nhidden = [8]\n'
        "[train]\nsteps = 20\nbatch_size = 16\neval_every = 10\n[prune]\nrewind_step = 5\n"
        "max_rounds = 0\n"
    )
    monkeypatch.chdir(tmp_path / "here")
    out = tmp_path / "run"
    run_experiment(load_config(config_file), out, device="cpu", progress=False, log=_quiet)
    assert RunFolder(out).read_config().data.root == str(data)
    elsewhere = tmp_path / "elsewhere" / "mnist"
    write_mnist(elsewhere, n_train=64, n_test=32, seed=1)
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(RunFolderError, match="data.root"):
        run_experiment(load_config(config_file), out, device="cpu", progress=False, log=_quiet)
    assert os.path.isabs(RunFolder(out).read_config().data.root)


def test_links_fifos_and_devices_in_a_run_folder_are_refused(tmp_path):
    """A planted link must not make imprint read (or lock) outside the folder, and a
    FIFO must not hang it: each is one error naming the file."""
    out = tmp_path / "run"
    run_imp(smoke_config("prune.max_rounds=1"), out, device="cpu", progress=False, log=_quiet)
    folder = RunFolder(out)
    secret = tmp_path / "secret.json"
    secret.write_text('{"round": 0}')
    metrics = folder.round_file(1, "metrics")
    metrics.unlink()
    metrics.symlink_to(secret)
    with pytest.raises(RunFolderError, match="metrics.json is a symbolic link"):
        folder.round_metrics(1)
    metrics.unlink()
    os.mkfifo(metrics)
    with pytest.raises(RunFolderError, match="metrics.json is not a regular file"):
        folder.round_metrics(1)
    mask = folder.round_file(0, "mask")
    mask.unlink()
    mask.symlink_to("/dev/zero")
    with pytest.raises(RunFolderError, match="mask.safetensors is a symbolic link"):
        folder.round_masks(0)
    lock = out / ".lock"
    lock.unlink()
    target = tmp_path / "outside.txt"
    target.write_text("keep")
    lock.symlink_to(target)
    with pytest.raises(RunFolderError, match=".lock"):
        with folder.lock():
            pass
    assert target.read_text() == "keep"


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    run_imp(smoke_config("prune.max_rounds=2"), out, device="cpu", progress=False, log=_quiet)
    return RunFolder(out)


def test_a_missing_middle_round_is_reported(finished):
    import shutil

    shutil.rmtree(finished.round_dir(1))
    with pytest.raises(RunFolderError, match="round 1 is missing, but round 2 is complete"):
        finished.completed_rounds()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("best_val_top1"), "'best_val_top1' must be a number in"),
        (lambda m: m.update(round=True), "'round' must be an integer"),
        (lambda m: m.update(round=5), "'round' is 5, but the file is round 1's"),
        (lambda m: m.update(layer_alive=[1, "x", 2]), "'layer_alive' must be a non-empty list"),
        (
            lambda m: m["readings"]["locality_index"].update(value="high"),
            "'locality_index' must be a number or null",
        ),
        (lambda m: m.update(locality_index=0.5), "'locality_index' is both a column and"),
        (lambda m: m.update(density=7.0), "'density' must be a number in"),
        (lambda m: m["connected_units"].__setitem__(0, -5), "0 <= connected <= units"),
    ],
)
def test_tampered_metrics_are_refused_by_name(finished, change, message):
    import json

    path = finished.round_file(1, "metrics")
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    with pytest.raises(RunFolderError, match=message):
        finished.round_metrics(1)


def test_tampered_masks_and_weights_are_refused(finished):
    from safetensors.torch import save_file

    masks = finished.round_masks(1)
    path = finished.round_file(1, "mask")
    save_file({k: torch.zeros_like(v) for k, v in masks.items()}, str(path))
    with pytest.raises(RunFolderError, match="every connection is pruned"):
        finished.round_masks(1)
    save_file({k: v.float() for k, v in masks.items()}, str(path))
    with pytest.raises(RunFolderError, match="must be bool tensors"):
        finished.round_masks(1)
    save_file({k: v for k, v in masks.items() if k != "layers.1.bias"}, str(path))
    with pytest.raises(RunFolderError, match="expected the masks"):
        finished.round_masks(1)
    save_file({k: torch.ones_like(v) for k, v in masks.items()}, str(path))  # all kept
    with pytest.raises(RunFolderError, match="but the round's metrics.json records"):
        finished.round_masks(1)
    save_file(masks, str(path))
    state = finished.round_state(0)
    state["layers.0.weight"][0, 0] = float("nan")
    save_file(state, str(finished.round_file(0, "final")))
    with pytest.raises(RunFolderError, match="'layers.0.weight' holds NaN"):
        finished.round_state(0)
    state = finished.round_state(1)
    pruned = (~masks["layers.0.weight"]).nonzero()[0].tolist()
    changed = dict(state, **{"layers.0.weight": state["layers.0.weight"].clone()})
    changed["layers.0.weight"][pruned[0], pruned[1]] = 0.5
    save_file(changed, str(finished.round_file(1, "final")))
    with pytest.raises(RunFolderError, match="has weights where its mask has pruned them"):
        finished.round_state(1)
    changed = dict(state, **{"norms.0.running_var": -state["norms.0.running_var"] - 1})
    save_file(changed, str(finished.round_file(1, "final")))
    with pytest.raises(RunFolderError, match="'norms.0.running_var' holds negative variances"):
        finished.round_state(1)


def test_masks_that_stop_nesting_are_refused_on_resume(finished, capsys):
    """IMP's masks are nested round after round: a mask file changed to keep a
    connection the previous round pruned (same count) is not trained from."""
    from safetensors.torch import save_file

    masks = finished.round_masks(2)
    weight = masks["layers.0.weight"].clone()
    before = finished.round_masks(1)["layers.0.weight"]
    gone, kept = (~before).nonzero()[0], weight.nonzero()[0]  # pruned in round 1
    weight[gone[0], gone[1]], weight[kept[0], kept[1]] = True, False  # count unchanged
    state = finished.round_state(2)
    state["layers.0.weight"] = state["layers.0.weight"] * weight  # consistent weights
    save_file(dict(masks, **{"layers.0.weight": weight}), str(finished.round_file(2, "mask")))
    save_file(state, str(finished.round_file(2, "final")))
    code = main(
        [*smoke_run_args(finished.root, "prune.max_rounds=3"), "--allow-change", "prune.max_rounds"]
    )
    assert code == 2 and "keeps connections that round 1 pruned" in capsys.readouterr().err


def test_a_damaged_data_record_is_refused(finished):
    import json

    record = json.loads(finished.data_path.read_text())
    for change, message in (
        ({"shape": [32, 1, 1]}, r"\(32 pixels\), but the first layer has 64 inputs"),
        ({"permuted": True}, "but the config's data.permute_pixels is false"),
        ({"num_classes": 1}, "'num_classes' >= 2"),
        ({"shape": [1, 16, 4]}, r"but the config's data section says \[1, 8, 8\]"),
    ):
        finished.data_path.write_text(json.dumps({**record, **change}))
        with pytest.raises(RunFolderError, match=message):
            finished.read_data_record()


def test_metrics_written_with_nan_readings_still_read(finished):
    """Folders written before readings were stored as null hold NaN (not JSON, but
    what Python wrote): such a reading reads as None, the rest as before."""
    import json

    path = finished.round_file(1, "metrics")
    record = json.loads(path.read_text())
    record.pop("readings")  # the flat columns of that time
    record["locality_index"] = float("nan")
    path.write_text(json.dumps(record))
    assert finished.round_metrics(1)["locality_index"] is None
    assert finished.round_metrics(1)["best_val_top1"] == record["best_val_top1"]


def test_data_with_nan_or_one_class_is_refused_at_load(monkeypatch):
    import dataclasses

    import imprint.data.registry as registry
    from imprint.data import DataError, load_dataset
    from imprint.data.base import ImageData

    config = smoke_config().data
    data = load_dataset(config)
    nlgp = registry.dataset_for("nlgp")

    def reading(images):
        monkeypatch.setattr(
            registry, "dataset_for", lambda name: dataclasses.replace(nlgp, read=lambda _: images)
        )

    broken = data.x_train.clone()
    broken[3, 5] = float("nan")
    reading(ImageData(broken, data.y_train, data.x_val, data.y_val, data.shape, 4))
    with pytest.raises(DataError, match="training images hold NaN"):
        load_dataset(config)
    reading(ImageData(data.x_train, data.y_train * 0, data.x_val, data.y_val * 0, data.shape, 1))
    with pytest.raises(DataError, match="1 class"):
        load_dataset(config)


def test_a_model_too_large_for_memory_is_refused_before_building(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(smoke_run_args(out, "model.hidden=[1000000000]"))
    err = capsys.readouterr().err
    assert code == 2 and "training needs about" in err and "GiB available" in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_hostile_sweep_names_are_refused(tmp_path):
    import json

    from imprint.config import ConfigError
    from imprint.sweep import load_sweep, sweep_run_folders

    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(f'base = "{CONFIGS / "smoke.toml"}"\n[[variants]]\nname = "../../../x"\n')
    with pytest.raises(ConfigError, match="a variant's name must be"):
        load_sweep(sweep_file)
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_text(
        json.dumps({"name": "x", "runs": [{"name": "/etc", "overrides": {}}]})
    )
    with pytest.raises(RunFolderError, match="not a plain folder name"):
        sweep_run_folders(tmp_path / "sw")


def test_an_unforeseen_error_is_one_line(tmp_path, capsys, monkeypatch):
    import imprint.imp

    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(imprint.imp, "run_experiment", boom)
    monkeypatch.delenv("IMPRINT_DEBUG", raising=False)
    code = main(smoke_run_args(tmp_path / "run"))
    err = capsys.readouterr().err
    assert code == 70
    assert err.strip().startswith("imprint: internal error: ZeroDivisionError")
    assert len(err.strip().splitlines()) == 1


def test_analyze_takes_the_folder_lock(finished):
    from imprint.analyze import analyze_run

    with finished.lock():
        with pytest.raises(RunFolderError, match="is in use by"):
            analyze_run(finished.root, "last", log=_quiet)


def test_the_pixel_permutation_is_stored_with_the_run(tmp_path):
    from safetensors.torch import save_file

    from imprint.data import pixel_permutation

    out = tmp_path / "run"
    config = smoke_config("prune.max_rounds=0", "data.permute_pixels=true")
    run_imp(config, out, device="cpu", progress=False, log=_quiet)
    folder = RunFolder(out)
    assert torch.equal(folder.permutation(), pixel_permutation(64, config.data.seed))
    save_file({"permutation": torch.zeros(64, dtype=torch.int64)}, str(folder.permutation_path))
    with pytest.raises(RunFolderError, match="not a permutation of the inputs"):
        folder.permutation()


def test_report_and_compare_out_never_overwrite_run_files(finished, capsys):
    config_text = (finished.root / "config.toml").read_text()
    for command in ("report", "compare"):
        code = main([command, str(finished.root), "--out", str(finished.root / "config.toml")])
        assert code == 2 and "must end in .html" in capsys.readouterr().err
    assert (finished.root / "config.toml").read_text() == config_text
    # a page replaces only an earlier page of its kind: not the run's report, nor a note
    assert main(["report", str(finished.root), "--quiet"]) == 0
    report = (finished.root / "report.html").read_bytes()
    notes = finished.root.parent / "notes.html"
    notes.write_text("<p>my notes</p>")
    for out in (finished.root / "report.html", notes):
        assert main(["compare", str(finished.root), "--out", str(out)]) == 2
        assert "is not an earlier page of this kind" in capsys.readouterr().err
    assert (finished.root / "report.html").read_bytes() == report
    assert notes.read_text() == "<p>my notes</p>"
    page = finished.root.parent / "compare.html"
    assert main(["compare", str(finished.root), "--out", str(page)]) == 0
    assert main(["compare", str(finished.root), "--out", str(page)]) == 0  # replaces itself


def test_a_small_gzip_that_expands_past_its_header_is_refused(tmp_path):
    """The IDX reader streams: it reads the header's count and one byte more, so 32 MB
    of zeros behind a header of 2 images is refused without holding them."""
    import gzip

    from imprint.config import MNISTData
    from imprint.data import DataError, load_dataset
    from tests.data_fixtures import idx_bytes

    write_mnist(tmp_path, n_train=2, n_test=2)
    images = idx_bytes(torch.zeros(2, 28, 28, dtype=torch.uint8).numpy()) + bytes(32 << 20)
    packed = gzip.compress(images, compresslevel=9)
    assert len(packed) < 64 << 10  # a small file
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(packed)
    with pytest.raises(DataError, match=r"header says \[2, 28, 28\] .* holds more than 1568"):
        load_dataset(MNISTData(root=str(tmp_path), val_source="official"))


def test_pickles_cannot_allocate_arrays_larger_than_themselves(tmp_path):
    """numpy's reconstruct path builds an array of any shape from a few bytes unless its
    data follows; calling numpy.ndarray does the same. Both are refused, and numpy's own
    pickles still read."""
    import pickle
    import warnings

    import numpy as np

    from imprint.data import DataError
    from imprint.data.safe import safe_unpickle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from numpy.core.multiarray import _reconstruct

    class Uninitialised:
        def __reduce__(self):
            return (_reconstruct, (np.ndarray, (200_000, 3072), b"B"))

    class Called:
        def __reduce__(self):
            return (np.ndarray, ((200_000, 3072), "B"))

    for hostile, message in ((Uninitialised(), "without its data"), (Called(), "calling")):
        path = tmp_path / "data_batch_1"
        path.write_bytes(pickle.dumps({"data": hostile}, protocol=2))
        assert path.stat().st_size < 300
        with pytest.raises(DataError, match=message):
            safe_unpickle(path)
    fine = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3]}
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps(fine, protocol=protocol))
        assert np.array_equal(safe_unpickle(path)["data"], fine["data"])


def test_mapping_targets_are_bounded_by_the_labels(tmp_path):
    from imprint.config import MNISTData
    from imprint.data import DataError, load_dataset

    write_mnist(tmp_path, n_train=20, n_test=10)
    mapping = tmp_path / "map.csv"
    mapping.write_text("label,target\n0,0\n1,999999999\n")
    config = MNISTData(
        root=str(tmp_path), task="mapping", mapping_file=str(mapping), val_source="official"
    )
    with pytest.raises(DataError, match=r"map.csv line 3: label and target must be in 0..9"):
        load_dataset(config)


def test_deeply_nested_files_are_one_line_errors(tmp_path, capsys, finished):
    """A config, a sweep file, a --set value and a run folder's JSON nested 100,000 deep
    are refused by name (Python's parsers would otherwise recurse until they fail)."""
    deep = "[" * 100_000 + "]" * 100_000
    config = tmp_path / "deep.toml"
    config.write_text(f'[data]\nname = "nlgp"\nx = {deep}\n')
    assert main(["run", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "deep.toml is nested too deeply" in capsys.readouterr().err
    sweep = tmp_path / "deep_sweep.toml"
    sweep.write_text(f'name = "s"\nbase = "x.toml"\nseeds = [0]\nv = {deep}\n')
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "s")]) == 2
    assert "deep_sweep.toml is nested too deeply" in capsys.readouterr().err
    (finished.round_dir(1) / "metrics.json").write_text(deep)
    assert main(["report", str(finished.root), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "001/metrics.json is not readable JSON" in err and "Traceback" not in err


def _outside_listing(outside):
    return sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))


def test_linked_folders_never_lead_outside(tmp_path, capsys):
    """A link in place of a folder of a run (a round, analysis/, a round of analysis/)
    or of a sweep (runs/): every command refuses it in one line, and nothing outside is
    written, read into a report or deleted."""
    import shutil

    out = tmp_path / "run"
    run_imp(smoke_config("prune.max_rounds=2"), out, device="cpu", progress=False, log=_quiet)
    pristine = tmp_path / "pristine"
    shutil.copytree(out, pristine)
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / ".metrics.json.host-1.abcd.tmp").write_text("keep")
    os.utime(outside / "sub" / ".metrics.json.host-1.abcd.tmp", (1, 1))  # "old"
    before = _outside_listing(outside)

    # a later round's folder is a link: resume refuses, writes nothing outside
    (out / "rounds" / "003").symlink_to(outside / "sub")
    run = ["run", str(CONFIGS / "smoke.toml"), "--out", str(out), "--quiet", "--device", "cpu"]
    code = main([*run, "--set", "prune.max_rounds=3", "--allow-change", "prune.max_rounds"])
    assert code == 2 and "leads outside" in capsys.readouterr().err
    assert _outside_listing(outside) == before
    (out / "rounds" / "003").unlink()

    # analysis/ is a link: analyze and report refuse, nothing is written outside
    (out / "analysis").symlink_to(outside / "sub", target_is_directory=True)
    for command in (["analyze", str(out), "--quiet"], ["report", str(out), "--quiet"]):
        assert main(command) == 2
        assert "leads outside" in capsys.readouterr().err
    assert _outside_listing(outside) == before
    (out / "analysis").unlink()

    # a round of the run is replaced by a link to a copy holding a "secret": refused
    shutil.move(out / "rounds" / "001", outside / "round1")
    (outside / "round1" / "metrics.json").write_text('{"secret": 1}')
    (out / "rounds" / "001").symlink_to(outside / "round1", target_is_directory=True)
    assert main(["report", str(out), "--quiet", "--round", "1"]) == 2
    assert "leads outside" in capsys.readouterr().err
    assert not (out / "report.html").exists()


def test_a_sweep_with_linked_runs_folder_is_refused(tmp_path, capsys):
    from imprint.sweep import load_sweep

    sweep = tmp_path / "s.toml"
    sweep.write_text(
        f'name = "s"\nbase = "{CONFIGS / "smoke.toml"}"\nseeds = [0]\n'
        '[[variants]]\nname = "v"\n"train.steps" = 30\n'
    )
    assert load_sweep(sweep).name == "s"  # the sweep's own name, not a run's
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "runs").symlink_to(outside, target_is_directory=True)
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "sw")]) == 2
    assert "leads outside" in capsys.readouterr().err
    assert list(outside.iterdir()) == []
    for name, message in (
        ('"../../../escape"', "'name' must be letters"),
        ('"/tmp/abs"', "'name' must be letters"),
        ('["x"]', "'name' must be letters"),
    ):
        sweep.write_text(f'name = {name}\nbase = "{CONFIGS / "smoke.toml"}"\nseeds = [0]\n')
        assert main(["sweep", str(sweep), "--out", str(tmp_path / "sw2")]) == 2
        assert message in capsys.readouterr().err
    grid = "".join(f'"train.k{i}" = [{", ".join(map(str, range(20)))}]\n' for i in range(8))
    sweep.write_text(f'name = "g"\nbase = "{CONFIGS / "smoke.toml"}"\n[grid]\n{grid}')
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "sw3")]) == 2
    assert "expand to 25600000000 runs" in capsys.readouterr().err
    run = tmp_path / "run"
    run_imp(smoke_config("prune.max_rounds=0"), run, device="cpu", progress=False, log=_quiet)
    sweep.write_text(f'name = "s"\nbase = "{CONFIGS / "smoke.toml"}"\nseeds = [0]\n')
    assert main(["sweep", str(sweep), "--out", str(run)]) == 2
    assert "is a run folder" in capsys.readouterr().err


def test_small_data_files_cannot_ask_for_large_arrays(tmp_path):
    """An npz member whose header declares far more than its bytes hold, and a pickle
    whose labels are one list shared a thousand times over, are refused before numpy
    allocates anything of that size."""
    import io
    import pickle
    import zipfile

    import numpy as np

    from imprint.data import DataError
    from imprint.data.files import check_labels
    from imprint.data.safe import read_npz

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (400_000, 12_288)}
    )
    bomb = tmp_path / "train_data_batch_1.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.npy", header.getvalue() + bytes(4096))
    with pytest.raises(DataError, match=r"declares an array of \(400000, 12288\)"):
        read_npz(bomb)
    row = [0] * 1000
    shared = [[row] * 1000] * 50  # a few hundred bytes pickled, 50e6 entries as an array
    assert len(pickle.dumps(shared, protocol=2)) < 10_000
    with pytest.raises(DataError, match="labels must be 50 integers"):
        check_labels(shared, 50, 0, 9, tmp_path / "data_batch_1")
    fine = np.arange(10) % 3
    np.savez_compressed(tmp_path / "ok.npz", data=fine)
    assert np.array_equal(read_npz(tmp_path / "ok.npz")["data"], fine)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('train.batch_size="64"', "'train.batch_size' must be a number, not a string"),
        ("seeds.init=1180591620717411303424", "'seeds.init' is beyond 2**53"),
        ("train.lr=1e308", "'train.lr' is beyond 1e12"),
        ("data.gain=1e308", "'data.gain' is beyond 1e12"),
        ("data.class_xi=[[1e308,1.0],[1.0,1.0]]", "'data.class_xi' is beyond 1e12"),
        ("train.steps=100000000000", "'train.steps': Input should be less than or equal to"),
        ("data.n_train=1000000000", "sampling needs about 1907.3 GiB"),
    ],
)
def test_values_beyond_meaning_are_refused_before_work(tmp_path, capsys, value, message):
    out = tmp_path / "run"
    assert main(smoke_run_args(out, value)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() or sorted(p.name for p in out.iterdir()) in ([], [".lock"])


def test_a_fifo_among_folder_images_is_refused_not_waited_on(tmp_path):
    from imprint.config import FolderData
    from imprint.data import DataError, load_dataset
    from tests.data_fixtures import write_folder

    write_folder(tmp_path)
    os.mkfifo(tmp_path / "cat" / "zz.png")
    with pytest.raises(DataError, match="zz.png is not a regular file"):
        load_dataset(FolderData(root=str(tmp_path), val_source="train", n_val=2))


def test_a_group_member_that_is_a_link_is_not_even_locked(tmp_path, capsys):
    import shutil

    group = tmp_path / "group"
    assert main([*smoke_run_args(group, "prune.max_rounds=0"), "--seeds", "0,1"]) == 0
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(group / "seed_1", outside / "seed_1")
    (group / "seed_1").symlink_to(outside / "seed_1", target_is_directory=True)
    lock = (outside / "seed_1" / ".lock").read_bytes()
    assert main([*smoke_run_args(group, "prune.max_rounds=0"), "--seeds", "0,1"]) == 2
    assert "leads outside" in capsys.readouterr().err
    assert (outside / "seed_1" / ".lock").read_bytes() == lock


def test_mapping_files_without_rows_or_with_a_label_twice_are_refused(tmp_path):
    from imprint.data import DataError
    from imprint.data.files import _read_mapping

    empty = tmp_path / "empty.csv"
    empty.write_text("label,target\n")
    with pytest.raises(DataError, match=r"empty.csv has no rows"):
        _read_mapping(empty, 10)
    twice = tmp_path / "twice.csv"
    twice.write_text("label,target\n1,0\n2,1\n1,1\n")
    with pytest.raises(DataError, match=r"twice.csv line 4 maps label 1 again \(first on line 2\)"):
        _read_mapping(twice, 10)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("label,target\n1,0\n\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv is not a readable CSV"):
        _read_mapping(latin, 10)
    words = tmp_path / "words.csv"
    words.write_text("label,target\none,0\n")
    with pytest.raises(DataError, match="words.csv line 2 must have integer"):
        _read_mapping(words, 10)


def test_a_fifo_in_place_of_a_data_file_is_refused_not_waited_on(tmp_path):
    """A FIFO would block the reader forever: pickles, npz and IDX files are opened only
    when regular (this test would hang otherwise)."""
    from imprint.data import DataError
    from imprint.data.mnist import read_idx
    from imprint.data.safe import read_npz, safe_unpickle

    fifo = tmp_path / "data_batch_1"
    os.mkfifo(fifo)
    for read in (safe_unpickle, read_npz, lambda p: read_idx(p, 3)):
        with pytest.raises(DataError, match="is not a regular file"):
            read(fifo)


def test_empty_out_and_empty_formats_are_refused(tmp_path, capsys):
    from imprint.cli import main

    assert main(["run", str(CONFIGS / "smoke.toml"), "--out", ""]) == 2
    assert "'--out' option is empty" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main([*smoke_run_args(run, "prune.max_rounds=0")]) == 0
    capsys.readouterr()
    assert main(["analyze", str(run), "--formats", "png,,svg"]) == 2
    assert "'--formats' option must list" in capsys.readouterr().err


def test_a_covariance_that_is_not_positive_definite_is_a_data_error():
    from imprint.data import DataError
    from imprint.data.nlgp import _cholesky

    indefinite = torch.ones(5, 5, dtype=torch.float64)
    indefinite[0, 1] = indefinite[1, 0] = 2.0
    with pytest.raises(DataError, match="not positive definite"):
        _cholesky(indefinite)


@pytest.mark.parametrize("procedure", ["oneshot", "random", "reinit"])
def test_a_reference_run_of_another_architecture_is_refused(tmp_path, procedure, capsys):
    """A control follows a reference of its own architecture: another width would land
    at the wrong density (oneshot, random) or fail on shapes (reinit)."""
    reference = tmp_path / "imp"
    run_imp(
        smoke_config("prune.max_rounds=1"),
        reference,
        device="cpu",
        progress=False,
        log=lambda _: None,
    )
    out = tmp_path / procedure
    args = smoke_run_args(
        out,
        f"prune.procedure={procedure}",
        f"prune.reference_run={reference}",
        "model.hidden=[24, 16]",
        "prune.max_rounds=1",
    )
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prune.reference_run" in err[0], err
    assert "64 -> 32 -> 16 -> 2" in err[0] and "64 -> 24 -> 16 -> 2" in err[0]


def test_a_start_that_failed_before_its_config_is_taken_over(tmp_path):
    """A full disk during a first start leaves start files but no config.toml: the next
    start writes them anew instead of refusing the folder as foreign."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "data.json").write_text('{"shape": [9, 9, 9], "num_classes": 2}')  # stale
    (out / ".config.toml.host-1.ab12.tmp").write_text("partial")
    result = run_imp(
        smoke_config("prune.max_rounds=0"), out, device="cpu", progress=False, log=lambda _: None
    )
    assert len(result.rounds) == 1
    assert RunFolder(out).read_data_record()["shape"] == [1, 8, 8]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not an imprint run folder"):
        run_imp(
            smoke_config("prune.max_rounds=0"),
            tmp_path / "other",
            device="cpu",
            progress=False,
            log=lambda _: None,
        )
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_missing_rewind_state_is_named():
    from imprint.procedures.base import start_from_rewind

    class Inputs:
        rewind_state = None

    with pytest.raises(ValueError, match="rewind.safetensors"):
        start_from_rewind(Inputs(), {})  # type: ignore[arg-type]


def test_depth_is_bounded_and_the_memory_estimate_clips_the_evaluation_chunk(tmp_path):
    from imprint.config import ConfigError

    with pytest.raises(ConfigError, match="model.hidden.*at most 64 items"):
        smoke_config("model.hidden=[" + ",".join(["2"] * 100_000) + "]")
    # a chunk of 1e9 images is the held-out set itself: no refusal for a tiny net
    result = run_imp(
        smoke_config("train.eval_batch_size=1000000000", "prune.max_rounds=0"),
        tmp_path / "run",
        device="cpu",
        progress=False,
        log=lambda _: None,
    )
    assert len(result.rounds) == 1


def test_a_sweep_file_changed_under_its_name_is_refused(tmp_path):
    """Never a silent mix of two plans: the folder's sweep.json names what changed."""
    from imprint.sweep import load_sweep, run_sweep

    path = tmp_path / "s.toml"
    base = f'name = "s"\nbase = "{CONFIGS / "smoke.toml"}"\nseeds = [0]\n'
    settings = '[set]\n"prune.max_rounds" = 0\n"train.steps" = 10\n"prune.rewind_step" = 2\n'
    path.write_text(base + settings)
    out = tmp_path / "out"
    run_sweep(load_sweep(path), out, log=lambda _: None)
    before = (out / "sweep.json").read_text()
    path.write_text(base.replace("seeds = [0]", "seeds = [0, 1]") + settings)
    with pytest.raises(
        RunFolderError, match=r"sweep.json: the sweep file .* changed .*1 run\(s\) added"
    ):
        run_sweep(load_sweep(path), out, log=lambda _: None)
    assert (out / "sweep.json").read_text() == before
    (out / "sweep.json").unlink()  # the remedy: adopt the new plan, reusing the finished run
    messages = []
    run_sweep(load_sweep(path), out, log=messages.append)
    assert "1 finished, 1 to run" in messages[0]


def test_a_sweep_variants_bad_value_names_the_variant(tmp_path, capsys):
    path = tmp_path / "bv.toml"
    path.write_text(
        f'name = "bv"\nbase = "{CONFIGS / "smoke.toml"}"\n'
        '[[variants]]\nname = "fast"\n"train.steps" = "abc"\n'
    )
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "variant 'fast'" in err[0] and "'train.steps'" in err[0]


@pytest.mark.parametrize(
    "error",
    [MemoryError(), OSError(12, "Cannot allocate memory"), RuntimeError("CUDA out of memory.")],
    ids=["MemoryError", "ENOMEM", "device"],
)
def test_an_allocation_failure_is_one_line_not_an_internal_error(monkeypatch, capsys, error):
    import imprint.imp

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(imprint.imp, "run_experiment", refuse)
    assert main(["run", str(CONFIGS / "smoke.toml"), "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0] and "internal error" not in err[0]
