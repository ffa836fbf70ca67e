from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from imprint.cli import main
from imprint.runs import RunFolder
from tests.conftest import CONFIGS, smoke_run_args


def test_run_prints_table_and_writes_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(smoke_run_args(out, "prune.max_rounds=2", "train.steps=20"))
    assert code == 0
    printed = capsys.readouterr().out
    assert "val. top-1" in printed and "conn. L0" in printed
    assert "Stopped: reached prune.max_rounds (2)" in printed
    table = [line for line in printed.splitlines() if line.strip().startswith(("0 ", "1 ", "2 "))]
    assert len(table) == 3
    folder = RunFolder(out)
    assert folder.read_config().train.steps == 20
    assert folder.completed_rounds() == [0, 1, 2]


def test_bad_override_is_one_clear_line(tmp_path, capsys):
    code = main(
        ["run", str(CONFIGS / "smoke.toml"), "--out", str(tmp_path / "x"), "--set", "train.stepz=3"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "imprint: error:" in err and "unknown key 'train.stepz'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing written before validation


def test_different_config_on_existing_folder_is_refused(tmp_path, capsys):
    args = smoke_run_args(tmp_path, "prune.max_rounds=0")
    assert main(args) == 0
    before = (tmp_path / "rounds" / "000" / "final.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*args, "--set", "train.lr=0.05"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "train.lr: 0.1 in the folder, 0.05 now" in err
    assert (tmp_path / "rounds" / "000" / "final.safetensors").read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    code = main(["run", str(CONFIGS / "smoke.toml"), "--out", str(tmp_path), "--device", "cuda"])
    assert code == 2
    assert "no CUDA device is available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_smoke_on_cuda(tmp_path):
    assert main(smoke_run_args(tmp_path, device="cuda")) == 0


def test_help_of_every_command():
    for args in (["--help"], ["run", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "imprint", *args], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0
        assert "usage: imprint" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "train.stpes=5"],
            "--set train.stpes=5: unknown key 'train.stpes'. Did you mean 'train.steps'?",
        ),
        (["--set", "train.steps", "2000"], "write --set train.steps=2000 (key=value, no space)"),
        (["--set", "train.steps=true"], "--set train.steps=true: 'train.steps' must be a number"),
        (
            ["--set", 'data.name="mnist"'],
            "data.name = 'mnist' has no key(s) class_xi, height, n_test, n_train, width: they are "
            "options of another dataset",
        ),
        (["--seeds", "1,x"], "--seeds 1,x: list seeds as 0,1,2 or 0-4"),
        (["--seeds", "0-100000"], "--seeds 0-100000: at most 256 seeds"),
        (["--seeds", "0,1,0"], "--seeds 0,1,0: a seed is listed twice"),
    ],
)
def test_option_mistakes_are_one_line_naming_the_option(tmp_path, capsys, args, message):
    code = main(["run", str(CONFIGS / "smoke.toml"), "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_analysis_options_are_checked_before_any_work(tmp_path, capsys):
    for args, message in (
        (["analyze", str(tmp_path), "--formats", "exe"], "'--formats' option must list"),
        (["analyze", str(tmp_path), "--gallery-size", "-5"], "'--gallery-size' option must be"),
        (["compare", str(tmp_path), "--density", "0"], "'--density' option must be in (0, 1]"),
        (["report", str(tmp_path), "--round", "all"], "report names one round"),
    ):
        assert main(args) == 2
        assert message in capsys.readouterr().err


def test_version_and_help_are_fast_and_light():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from imprint.cli import main\n"
            "try: main(['--version'])\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("imprint ") and done.stdout.strip().endswith("False")


def test_long_options_are_not_abbreviated(tmp_path, capsys):
    """`--seed 3` is not taken for `--seeds 3`: argparse refuses the unknown option."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(CONFIGS / "smoke.toml"), "--out", str(tmp_path / "r"), "--seed", "3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --seed 3" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_closed_pipe_ends_the_command_quietly():
    """`imprint datasets | head`: a reader that has gone (here before the first write,
    so the write surely fails) ends the command quietly, no error line, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "imprint", "datasets"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # no reader left: every write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""
