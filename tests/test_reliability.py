"""Crash safety: kills at random moments, a locked folder, divergence, disk errors."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imprint import runs as runs_module
from imprint.imp import run_imp
from imprint.runs import RunFolder, RunFolderError
from imprint.train import TrainingDiverged
from tests.conftest import ROOT, smoke_config, smoke_run_args

KILLS = int(os.environ.get("IMPRINT_KILLS", "20"))
OVERRIDES = ["prune.max_rounds=3", "train.steps=60", "train.momentum=0.9"]


def _quiet(_):
    return None


def _run_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "imprint", *smoke_run_args(out, *OVERRIDES)]


def _env() -> dict[str, str]:
    # One thread, as the in-process reference run: bitwise equal results need the same
    # float summation order.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def _final_state(folder: RunFolder) -> tuple[list, list]:
    rounds = folder.completed_rounds()
    masks = [folder.round_masks(r) for r in rounds]
    metrics = [{k: v for k, v in folder.round_metrics(r).items() if k != "seconds"} for r in rounds]
    return masks, metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(_run_command(out), env=_env(), check=True, capture_output=True)
    return _final_state(RunFolder(out))


def test_sigkill_at_random_moments_then_resume(tmp_path, reference):
    """Kill the run KILLS times: half at random moments, half as soon as a file write
    has begun (a temporary file exists); after each kill every file must be readable,
    and resuming until done must give exactly the uninterrupted run's masks and
    metrics."""
    rng = random.Random(1234)
    out = tmp_path / "run"
    kills = during_writes = 0
    started = time.time()
    while kills < KILLS:
        process = subprocess.Popen(
            _run_command(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if kills % 2:
            time.sleep(rng.uniform(0.3, 3.0))  # start-up is ~1-2 s of it
        else:  # wait for a write in flight
            deadline = time.time() + 20
            while process.poll() is None and time.time() < deadline:
                if out.exists() and next(out.rglob(".*.tmp"), None) is not None:
                    during_writes += 1
                    break
        if process.poll() is not None:  # finished before the kill: start over
            assert process.returncode == 0
            for path in sorted(out.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            continue
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        folder = RunFolder(out)
        if folder.config_path.exists():  # nothing half-written under a final name
            folder.read_config()
            for r in folder.completed_rounds():
                folder.round_metrics(r)
                folder.round_masks(r)
                folder.round_state(r, "final")
                folder.round_state(r, "start")
        assert time.time() - started < 600, "the kill loop is too slow"
    subprocess.run(_run_command(out), env=_env(), check=True, capture_output=True)
    masks, metrics = _final_state(RunFolder(out))
    ref_masks, ref_metrics = reference
    assert metrics == ref_metrics
    assert all(torch.equal(a[k], b[k]) for a, b in zip(masks, ref_masks) for k in a)
    assert during_writes >= KILLS // 4
    report = {"kills": kills, "during_writes": during_writes, "rounds": len(metrics)}
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "kill-test.json").write_text(json.dumps(report))


def test_second_process_is_refused_and_stale_lock_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from imprint.runs import RunFolder\n"
            f"with RunFolder({str(out)!r}).lock():\n"
            "    print('locked', flush=True); time.sleep(60)",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.time()
        with pytest.raises(RunFolderError, match=rf"is in use by process {holder.pid} on"):
            run_imp(smoke_config(), out, device="cpu", progress=False, log=_quiet)
        assert time.time() - started < 5  # refused at once, not after a wait
        assert not (out / "config.toml").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, stale
        holder.wait()
    assert (out / ".lock").exists()
    result = run_imp(
        smoke_config("prune.max_rounds=1"), out, device="cpu", progress=False, log=_quiet
    )
    assert len(result.rounds) == 2


def test_divergence_stops_with_a_clear_message_and_stays_resumable(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"became nan between steps 0 and 10"):
        run_imp(
            smoke_config("train.lr=1000", "prune.max_rounds=1"),
            out,
            device="cpu",
            progress=False,
            log=_quiet,
        )
    folder = RunFolder(out)
    assert folder.completed_rounds() == []
    with pytest.raises(RunFolderError, match="--allow-change"):
        run_imp(
            smoke_config("train.lr=0.05", "prune.max_rounds=1"),
            out,
            device="cpu",
            progress=False,
            log=_quiet,
        )
    result = run_imp(
        smoke_config("train.lr=0.05", "prune.max_rounds=1"),
        out,
        device="cpu",
        progress=False,
        log=_quiet,
        allow_changes=["train.lr"],
    )
    assert len(result.rounds) == 2
    assert folder.read_config().train.lr == 0.05
    changes = json.loads(folder.changes_path.read_text())
    assert changes[0]["changes"] == {"train.lr": [1000.0, 0.05]} and changes[0]["from_round"] == 0


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")],
)
def test_full_or_read_only_disk_keeps_written_rounds(tmp_path, monkeypatch, code, words):
    out = tmp_path / "run"
    config = smoke_config("prune.max_rounds=3")
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] > 25:  # the disk fills up during round 2
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(runs_module.os, "fsync", failing_fsync)
    with pytest.raises(RunFolderError, match=words) as info:
        run_imp(config, out, device="cpu", progress=False, log=_quiet)
    assert "Cannot write" in str(info.value)
    monkeypatch.setattr(runs_module.os, "fsync", real_fsync)
    folder = RunFolder(out)
    done = folder.completed_rounds()
    assert 1 <= len(done) < 4
    for r in done:  # what was written stays intact and readable
        folder.round_masks(r)
        folder.round_state(r)
    assert not list(out.rglob(".*.tmp"))  # failed writes leave no temporary behind
    result = run_imp(config, out, device="cpu", progress=False, log=_quiet)  # space again
    assert len(result.rounds) == 4


def test_start_killed_before_config_is_not_foreign(tmp_path):
    """A start killed between its first files and config.toml leaves the folder usable."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("")
    (out / "manifest.json").write_text("{")  # half of a start: overwritten
    (out / ".config.toml.x1.tmp").write_text("partial")
    result = run_imp(
        smoke_config("prune.max_rounds=0"), out, device="cpu", progress=False, log=_quiet
    )
    assert len(result.rounds) == 1
    assert json.loads((out / "manifest.json").read_text())["torch"] == torch.__version__
    assert not (out / ".config.toml.x1.tmp").exists()  # stale temporaries removed
