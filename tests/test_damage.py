"""A run folder damaged at random: any file truncated, replaced by garbage or by
another type, made a link to a file outside or a FIFO. Resuming and reporting must end
in success or one clear error line (never a traceback, never a hang), touch nothing
outside the folder, and leave the undamaged rounds as they were."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imprint.cli import main
from tests.conftest import smoke_run_args

SETS = ("prune.max_rounds=2", "train.steps=30")
DAMAGES = ("truncate", "garbage", "json-list", "symlink-out", "fifo", "empty")
EXAMPLES = int(os.environ.get("IMPRINT_DAMAGE_EXAMPLES", "10"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(smoke_run_args(out, *SETS)) == 0
    files = sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    return out, files


def _damage(path: Path, how: str, outside: Path, cut: float) -> None:
    data = path.read_bytes()
    path.unlink()
    if how == "truncate":
        path.write_bytes(data[: int(len(data) * cut)])
    elif how == "garbage":
        path.write_bytes(bytes((i * 37 + 11) % 256 for i in range(max(8, int(len(data) * cut)))))
    elif how == "json-list":
        path.write_text(json.dumps([1, "x", None]))
    elif how == "symlink-out":
        path.symlink_to(outside)
    elif how == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b"")


def _alarm(signum, frame):
    raise TimeoutError("a damaged folder made imprint hang")


def _snapshot(root: Path, skip: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.glob("rounds/*/*")
        if p.is_file() and not p.is_symlink() and str(p.relative_to(root)) != skip
    }


def _check(finished, capsys, data, how, cut):
    source, files = finished
    target = data.draw(st.sampled_from(files), label="file")
    work = Path(tempfile.mkdtemp(prefix="damage-"))
    try:
        out = work / "run"
        shutil.copytree(source, out, symlinks=True)
        outside = work / "outside.json"
        outside.write_text('{"secret": true}')
        _damage(out / target, how, outside, cut)
        kept = _snapshot(out, target)
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(120)
        try:
            codes = [main(smoke_run_args(out, *SETS)), main(["report", str(out), "--quiet"])]
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        err = capsys.readouterr().err
        assert all(code in (0, 2) for code in codes), (target, how, codes, err)
        assert "Traceback" not in err and "internal error" not in err, (target, how, err)
        # one error message per refusing command (a config difference lists its keys
        # on the lines after it), nothing else on stderr
        assert err.count("imprint: error:") == codes.count(2), (target, how, err)
        assert not err or err.startswith("imprint: error:"), (target, how, err)
        assert outside.read_text() == '{"secret": true}'  # nothing outside touched
        after = _snapshot(out, target)
        lost = [name for name, raw in kept.items() if after.get(name) not in (raw, None)]
        assert not lost, (target, how, lost)  # undamaged rounds as they were
    finally:
        shutil.rmtree(work, ignore_errors=True)


_PROPERTY = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(max_examples=EXAMPLES, **_PROPERTY)
@given(data=st.data(), how=st.sampled_from(DAMAGES), cut=st.floats(0.0, 0.95))
def test_damaged_run_folders_end_in_one_clear_line(finished, capsys, data, how, cut):
    _check(finished, capsys, data, how, cut)


@pytest.mark.slow
@settings(max_examples=200, **_PROPERTY)
@given(data=st.data(), how=st.sampled_from(DAMAGES), cut=st.floats(0.0, 0.95))
def test_damaged_run_folders_many(finished, capsys, data, how, cut):
    _check(finished, capsys, data, how, cut)
