"""Faults in sweeps: a local pool whose worker process is SIGKILLed inside a round, and a
Ray task whose worker dies, finish every run when resumed, each from its checkpoint,
identical to an uninterrupted sweep. Kills land at the runs' own writes
(tests/killpoints), never at a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imprint.runs import RunFolder
from imprint.sweep import load_sweep, run_sweep
from tests.conftest import CONFIGS
from tests.killpoints import HERE, ROOT, kill_env

FIGURES = ROOT / "test-artifacts" / "sweep-faults.json"


def _sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "faults.toml"
    path.write_text(
        f'name = "faults"\nbase = "{CONFIGS / "smoke.toml"}"\nseeds = [0, 1]\n'
        '[set]\n"prune.max_rounds" = 2\n"train.steps" = 60\n"train.momentum" = 0.9\n'
        '"train.checkpoint_every" = 10\n'
    )
    return path


def _state(folder: Path) -> tuple[list, list]:
    run = RunFolder(folder)
    rounds = run.completed_rounds()
    metrics = [{k: v for k, v in run.round_metrics(r).items() if k != "seconds"} for r in rounds]
    return [run.round_masks(r) for r in rounds], metrics


def _identical(a: Path, b: Path) -> bool:
    masks_a, metrics_a = _state(a)
    masks_b, metrics_b = _state(b)
    return metrics_a == metrics_b and all(
        torch.equal(x[k], y[k]) for x, y in zip(masks_a, masks_b) for k in x
    )


def _check_all_finished_as(out: Path, clean: Path) -> list[Path]:
    """Every run of the sweep in ``out`` finished, with the masks and metrics of the
    uninterrupted sweep in ``clean``; returns the runs."""
    runs = sorted((out / "runs").iterdir())
    for run in runs:
        assert (run / "run.json").exists()
        assert _identical(run, clean / "runs" / run.name), run.name
    return runs


def _inside_a_round(folder: Path) -> bool:
    """The run holds a checkpoint of the round in progress: its restart resumes inside."""
    run = RunFolder(folder)
    loaded = run.load_checkpoint()
    return loaded is not None and loaded[1]["round"] == len(run.completed_rounds())


def _record(key: str, value: dict) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps({**figures, key: value}, indent=2))


def test_a_killed_pool_worker_loses_nothing(tmp_path):
    path = _sweep_file(tmp_path)
    command = [sys.executable, "-m", "imprint", "sweep", str(path), "--workers", "2"]
    clean = tmp_path / "clean"
    subprocess.run([*command, "--out", str(clean)], env=kill_env(), check=True, capture_output=True)
    out = tmp_path / "out"
    env = kill_env("after:checkpoint.safetensors:7", once=tmp_path / "killed-once")
    killed = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True)
    assert killed.returncode == 2, killed.stderr
    err = killed.stderr.strip().splitlines()
    assert len(err) == 1 and "ended abruptly" in err[0] and "run the same command again" in err[0]
    runs = sorted((out / "runs").iterdir())
    inside = [r for r in runs if _inside_a_round(r)]
    assert inside, "the killed run left a checkpoint of its round in progress"
    subprocess.run([*command, "--out", str(out)], env=kill_env(), check=True, capture_output=True)
    _check_all_finished_as(out, clean)
    _record(
        "local pool",
        {
            "kills": 1,
            "runs": len(runs),
            "resumed inside a round": len(inside),
            "identical to uninterrupted": len(runs),
        },
    )


def test_a_ray_task_whose_worker_dies_is_retried_and_resumes(tmp_path):
    ray = pytest.importorskip("ray")
    path = _sweep_file(tmp_path)
    clean = tmp_path / "clean"
    env = {
        "PYTHONPATH": f"{HERE}:{ROOT / 'src'}:{ROOT}",
        "OMP_NUM_THREADS": "1",
    }
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
    )
    try:
        run_sweep(load_sweep(path), clean, backend="ray", cpus_per_run=1, log=lambda _: None)
    finally:
        ray.shutdown()
    once = tmp_path / "killed-once"
    killing = {
        **env,
        "IMPRINT_TEST_KILL": "after:checkpoint.safetensors:7",
        "IMPRINT_TEST_KILL_ONCE": str(once),
    }
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": killing}
    )
    out = tmp_path / "out"
    try:
        run_sweep(load_sweep(path), out, backend="ray", cpus_per_run=1, log=lambda _: None)
    finally:
        ray.shutdown()
    assert once.exists(), "a worker was killed"
    runs = _check_all_finished_as(out, clean)
    _record(
        "ray",
        {
            "kills": 1,
            "runs": len(runs),
            "retried and finished": len(runs),
            "identical to uninterrupted": len(runs),
        },
    )
