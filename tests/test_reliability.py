"""Crash safety: kills at random moments, a locked folder, divergence, disk errors."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imprint import safeio
from imprint.imp import run_imp
from imprint.runs import RunFolder
from imprint.safeio import TEMP_HOST, RunFolderError
from imprint.train import TrainingDiverged
from tests.conftest import interrupt_at, smoke_config, smoke_run_args
from tests.killpoints import ROOT, kill_env

KILLS = int(os.environ.get("IMPRINT_KILLS", "21"))
# Rounds of 400 steps with a checkpoint every 20: a kill usually lands inside a round.
OVERRIDES = ["prune.max_rounds=3", "train.steps=600", "train.momentum=0.9"]
CHECKPOINTS = "train.checkpoint_every=20"


def _quiet(_):
    return None


def _run(out: Path, *overrides: str, log=_quiet, **options):
    """run_imp on the smoke config with ``--set`` style overrides, on the CPU, quietly."""
    return run_imp(smoke_config(*overrides), out, device="cpu", progress=False, log=log, **options)


def _run_command(out: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "imprint", *smoke_run_args(out, *OVERRIDES, *overrides)]


def _env() -> dict[str, str]:
    # One thread, as the in-process reference run: bitwise equal results need the same
    # float summation order.
    return kill_env()


def _final_state(folder: RunFolder) -> tuple[list, list]:
    rounds = folder.completed_rounds()
    masks = [folder.round_masks(r) for r in rounds]
    metrics = [{k: v for k, v in folder.round_metrics(r).items() if k != "seconds"} for r in rounds]
    return masks, metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, without checkpoints."""
    out = tmp_path_factory.mktemp("reference") / "run"
    command = _run_command(out, "train.checkpoint_every=0")
    subprocess.run(command, env=_env(), check=True, capture_output=True)
    return _final_state(RunFolder(out))


def _temporaries(out: Path, checkpoint_only: bool) -> list[Path]:
    if checkpoint_only:
        names = os.listdir(out) if out.exists() else []
        return [out / n for n in names if n.startswith(".checkpoint.") and n.endswith(".tmp")]
    return list(out.rglob(".*.tmp")) if out.exists() else []


def _kill_point(kill: int, rng: random.Random) -> str:
    """Where the kill-th start is killed (tests/killpoints): between two writes, with a
    write in flight (its temporary synced, not yet renamed), or with a checkpoint write
    in flight; counted in the run's own writes, so the same on any machine's speed."""
    # The run writes ~150 files, ~115 of them checkpoints: 21 kills cover all its rounds.
    mode = kill % 3
    if mode == 0:
        return f"after:*:{rng.randint(1, 12)}"
    if mode == 1:
        return f"during:*:{rng.randint(1, 12)}"
    return f"during:checkpoint.safetensors:{rng.randint(1, 10)}"


def _check_readable(folder: RunFolder) -> None:
    """Nothing half-written under a final name."""
    if not folder.config_path.exists():
        return
    folder.read_config()
    for r in folder.completed_rounds():
        folder.round_metrics(r)
        folder.round_masks(r)
        folder.round_state(r, "final")
        folder.round_state(r, "start")
    folder.load_checkpoint()  # None or complete


def test_sigkill_at_random_moments_then_resume(tmp_path, reference):
    """Kill the run KILLS times: a third between two of its writes, a third while a file
    write is in flight, a third while a checkpoint write is (the moments chosen at
    random among the run's own writes). After each kill every file must be readable; the
    runs resume inside the interrupted round from its checkpoint, and the last one, run
    to the end, must give exactly the uninterrupted (checkpoint-free) run's masks and
    metrics."""
    rng = random.Random(1234)
    out = tmp_path / "run"
    kills = during_writes = during_checkpoint_writes = inside_rounds = restarts = 0
    resume_points = []  # (round, step) of each resume inside a round
    kill_points = []
    while kills < KILLS:
        point = _kill_point(kills, rng)
        process = subprocess.run(
            _run_command(out, CHECKPOINTS), env=kill_env(point), capture_output=True, text=True
        )
        if process.returncode == 0:  # finished before its kill point: start over
            assert restarts < KILLS, "the run keeps finishing before its kill point"
            restarts += 1
            shutil.rmtree(out)
            continue
        assert process.returncode == -signal.SIGKILL, process.stderr
        kills += 1
        kill_points.append(point)
        during_writes += bool(_temporaries(out, checkpoint_only=False))
        during_checkpoint_writes += bool(_temporaries(out, checkpoint_only=True))
        folder = RunFolder(out)
        _check_readable(folder)
        checkpoint = folder.load_checkpoint() if folder.config_path.exists() else None
        if checkpoint is not None and checkpoint[1]["round"] == len(folder.completed_rounds()):
            inside_rounds += 1  # the next start resumes inside this round
            resume_points.append((checkpoint[1]["round"], checkpoint[1]["step"]))
    done = subprocess.run(
        _run_command(out, CHECKPOINTS), env=_env(), check=True, capture_output=True, text=True
    )
    masks, metrics = _final_state(RunFolder(out))
    ref_masks, ref_metrics = reference
    assert metrics == ref_metrics
    assert all(torch.equal(a[k], b[k]) for a, b in zip(masks, ref_masks) for k in a)
    assert not (out / "checkpoint.safetensors").exists()  # removed with the last round
    assert during_writes >= KILLS // 3
    assert during_checkpoint_writes >= KILLS // 6
    assert inside_rounds >= KILLS // 3
    assert len({round_index for round_index, _ in resume_points}) >= 2  # not one round only
    report = {
        "kills": kills,
        "kill_points": kill_points,
        "restarts": restarts,
        "during_writes": during_writes,
        "during_checkpoint_writes": during_checkpoint_writes,
        "resumed_inside_a_round": inside_rounds,
        "resume_points": resume_points,
        "rounds": len(metrics),
        "last_start": [line for line in done.stdout.splitlines() if line.startswith("Resum")],
    }
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "kill-test.json").write_text(json.dumps(report, indent=2))


def test_resume_inside_a_round_matches_the_uninterrupted_run(tmp_path, monkeypatch):
    sets = ("train.checkpoint_every=15", "train.momentum=0.9")
    plain = _run(tmp_path / "plain", "train.checkpoint_every=0", "train.momentum=0.9")
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2, 30)
        with pytest.raises(KeyboardInterrupt):
            _run(out, *sets)
    assert RunFolder(out).completed_rounds() == [0, 1]
    lines = []
    resumed = _run(out, *sets, log=lines.append)
    assert f"Resuming round 2 at step 30 from {out / 'checkpoint.safetensors'}." in lines
    assert _same(RunFolder(out), RunFolder(tmp_path / "plain"))
    assert [m["best_val_top1"] for m in resumed.rounds] == [
        m["best_val_top1"] for m in plain.rounds
    ]
    curves = RunFolder(out).round_file(2, "curves").read_text()
    assert curves == RunFolder(tmp_path / "plain").round_file(2, "curves").read_text()
    assert not RunFolder(out).checkpoint_path.exists()


def _same(a: RunFolder, b: RunFolder) -> bool:
    masks_a, metrics_a = _final_state(a)
    masks_b, metrics_b = _final_state(b)
    return metrics_a == metrics_b and all(
        torch.equal(x[k], y[k]) for x, y in zip(masks_a, masks_b) for k in x
    )


@pytest.mark.parametrize("damage", ["other-config", "stale-round"])
def test_unusable_checkpoint_restarts_its_round(tmp_path, monkeypatch, damage):
    """A checkpoint written under another config is reported (one left by a completed
    round, ignored) and the round starts from step 0: same results, nothing lost."""
    sets = ("train.checkpoint_every=10", "prune.max_rounds=2")
    reference = tmp_path / "reference"
    _run(reference, *sets)
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1, 20)
        with pytest.raises(KeyboardInterrupt):
            _run(out, *sets)
    folder = RunFolder(out)
    path = folder.checkpoint_path
    tensors, metadata = folder.load_checkpoint()
    if damage == "other-config":
        folder.save_checkpoint(tensors, {**metadata, "key": "0" * 16})
    else:
        folder.save_checkpoint(tensors, {**metadata, "round": 0})
    lines = []
    _run(out, *sets, log=lines.append)
    assert not any(line.startswith("Resuming round 1 at step") for line in lines)
    if damage == "other-config":
        assert any(
            "was written under another config or device" in line and "starts from step 0" in line
            for line in lines
        ), lines
    assert _same(folder, RunFolder(reference))
    assert not path.exists()


def _damage_checkpoint(folder: RunFolder, damage: str) -> None:
    path = folder.checkpoint_path
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
        return
    tensors, metadata = folder.load_checkpoint()
    if damage == "wrong-shape":
        tensors["net.weights.0"] = tensors["net.weights.0"][..., :-1].contiguous()
    elif damage == "negative-step":
        metadata = {**metadata, "step": -5}
    elif damage == "huge-step":
        metadata = {**metadata, "step": 10**9}
    elif damage == "rng-size":
        tensors["generator.0"] = tensors["generator.0"][:-8].contiguous()
    elif damage == "missing-tensor":
        tensors.pop("loss_sum")
    elif damage == "extra-tensor":
        tensors["stray.x"] = torch.zeros(3)
    elif damage == "nan-rewind":
        name = next(k for k in tensors if k.startswith("rewind.0.layers.0.weight"))
        tensors[name] = tensors[name].clone()
        tensors[name][0, 0] = float("nan")
    elif damage == "nan-weights":
        tensors["net.weights.1"] = tensors["net.weights.1"].clone()
        tensors["net.weights.1"].view(-1)[0] = float("inf")
    folder.save_checkpoint(tensors, metadata)


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "wrong-shape",
        "negative-step",
        "huge-step",
        "rng-size",
        "missing-tensor",
        "extra-tensor",
        "nan-rewind",
        "nan-weights",
    ],
)
def test_a_damaged_checkpoint_is_refused_by_name_with_its_remedy(tmp_path, monkeypatch, damage):
    """Shapes, step range, generator states, tensor names and finite values of a
    checkpoint are checked on resume: a damaged one is refused naming the file and the
    remedy (delete it), never resumed (a NaN rewind state would change the run) and
    never overwritten unseen; deleted, the round restarts and ends as the reference."""
    sets = ("train.checkpoint_every=3", "prune.max_rounds=1", "prune.rewind_step=2")
    reference = tmp_path / "reference"
    _run(reference, *sets)
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 0, 15)  # past the rewind step: the rewind state is in it
        with pytest.raises(KeyboardInterrupt):
            _run(out, *sets)
    folder = RunFolder(out)
    _damage_checkpoint(folder, damage)
    before = folder.checkpoint_path.read_bytes()
    with pytest.raises(RunFolderError, match="delete it to restart round 0") as caught:
        _run(out, *sets)
    assert str(folder.checkpoint_path) in str(caught.value)
    assert folder.checkpoint_path.read_bytes() == before  # kept as it was
    folder.checkpoint_path.unlink()
    _run(out, *sets)
    assert _same(folder, RunFolder(reference))


def test_a_damaged_checkpoint_is_one_line_from_the_command(tmp_path, monkeypatch, capsys):
    from imprint.cli import main

    sets = ("train.checkpoint_every=3", "prune.max_rounds=1")
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 0, 9)
        with pytest.raises(KeyboardInterrupt):
            _run(out, *sets)
    _damage_checkpoint(RunFolder(out), "rng-size")
    assert main(smoke_run_args(out, *sets)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.safetensors" in err[0] and "delete it" in err[0]


def test_checkpoint_interval_may_change_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1, 20)
        with pytest.raises(KeyboardInterrupt):
            _run(out, "train.checkpoint_every=10", "prune.max_rounds=1")
    lines = []
    _run(out, "train.checkpoint_every=7", "prune.max_rounds=1", log=lines.append)
    assert any(line.startswith("Resuming round 1 at step 20") for line in lines)
    changes = json.loads(RunFolder(out).changes_path.read_text())
    assert changes[-1]["changes"] == {"train.checkpoint_every": [10, 7]}


def test_second_process_is_refused_and_stale_lock_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from imprint.runs import RunFolder\n"
            f"with RunFolder({str(out)!r}).lock():\n"
            "    print('locked', flush=True); sys.stdin.read()",
        ],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"is in use by process {holder.pid} on"):
            _run(out)
        # Refused at once, not after a wait: the holder keeps the lock until told to go.
        assert holder.poll() is None
        assert not (out / "config.toml").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, stale
        holder.wait()
    assert (out / ".lock").exists()
    result = _run(out, "prune.max_rounds=1")
    assert len(result.rounds) == 2


def test_divergence_stops_with_a_clear_message_and_stays_resumable(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"became nan between steps 0 and 10"):
        _run(out, "train.lr=1000", "prune.max_rounds=1", "train.checkpoint_every=5")
    folder = RunFolder(out)
    assert folder.completed_rounds() == []
    with pytest.raises(RunFolderError, match="--allow-change"):
        _run(out, "train.lr=0.05", "prune.max_rounds=1", "train.checkpoint_every=5")
    assert folder.load_checkpoint()[1]["step"] == 5  # taken before the loss was checked
    lines = []
    result = _run(
        out,
        "train.lr=0.05",
        "prune.max_rounds=1",
        "train.checkpoint_every=5",
        log=lines.append,
        allow_changes=["train.lr"],
    )
    # The diverging round's checkpoint is not resumed under the new rate.
    assert any("written under another config" in line for line in lines)
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
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] > 25:  # the disk fills up during round 2
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(safeio.os, "fsync", failing_fsync)
    with pytest.raises(RunFolderError, match=words) as info:
        _run(out, "prune.max_rounds=3")
    assert "Cannot write" in str(info.value)
    monkeypatch.setattr(safeio.os, "fsync", real_fsync)
    folder = RunFolder(out)
    done = folder.completed_rounds()
    assert 1 <= len(done) < 4
    for r in done:  # what was written stays intact and readable
        folder.round_masks(r)
        folder.round_state(r)
    assert not list(out.rglob(".*.tmp"))  # failed writes leave no temporary behind
    result = _run(out, "prune.max_rounds=3")  # space again
    assert len(result.rounds) == 4


def test_start_killed_before_config_is_not_foreign(tmp_path):
    """A start killed between its first files and config.toml leaves the folder usable."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("")
    (out / "manifest.json").write_text("{")  # half of a start: overwritten
    stale = out / f".config.toml.{TEMP_HOST}-{_dead_pid()}.x1.tmp"  # its writer has ended
    stale.write_text("partial")
    result = _run(out, "prune.max_rounds=0")
    assert len(result.rounds) == 1
    assert json.loads((out / "manifest.json").read_text())["torch"] == torch.__version__
    assert not stale.exists()  # stale temporaries removed


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_living_processes_are_kept(tmp_path):
    """Taking the lock removes the temporaries of ended writers only: those of a process
    still writing (here a waiting child) or of another machine younger than a day stay,
    and a file not named as imprint names its temporaries is never removed."""
    out = tmp_path / "run"
    _run(out, "prune.max_rounds=0")
    # Alive until killed below: it waits on a pipe, not on a clock.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        living = out / f".report.html.{TEMP_HOST}-{child.pid}.ab12.tmp"
        dead = out / f".report.html.{TEMP_HOST}-{_dead_pid()}.cd34.tmp"
        remote = out / "rounds" / "000" / ".metrics.json.otherhost-1.ef56.tmp"
        remote_old = out / "rounds" / "000" / ".metrics.json.otherhost-2.gh78.tmp"
        users = out / ".notes.tmp"
        for path in (living, dead, remote, remote_old, users):
            path.write_text("partial")
        for path in (remote_old, users):
            os.utime(path, (time.time() - 2 * 86_400,) * 2)
        with RunFolder(out).lock():
            pass
        assert [p.exists() for p in (living, dead, remote, remote_old, users)] == [
            True,
            False,
            True,
            False,
            True,
        ]
    finally:
        child.kill()
        child.wait()
