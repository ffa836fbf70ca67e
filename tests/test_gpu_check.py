"""benchmarks/gpu_check.sh stays runnable before a GPU runs it: its CPU path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_on_the_cpu_quickly():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for expected in (
        "=== CUDA tests",
        "the CUDA tests are skipped",
        "paper FCN",
        "crossover (highest density where the sparse step is faster)",
        "train.sparse = on",
        "a full paper run (21 rounds x 100,000 steps)",
        "=== done",
    ):
        assert expected in out, expected
    assert "sparse layers [0, 1, 2]" in out  # round 1 of the sparse paper rounds
    assert "sparse layers []" in out  # round 0 (dense) and the dense engine


def test_gpu_check_refuses_an_unknown_option():
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--fast"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "unknown option --fast" in done.stderr
