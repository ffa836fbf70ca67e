"""The environment of a child process with kill points (see sitecustomize.py here)."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def kill_env(
    kill: str | None = None,
    *,
    group: bool = False,
    once: Path | None = None,
    writes: Path | None = None,
    threads: int | None = 1,
) -> dict[str, str]:
    """os.environ with this folder's hook first on PYTHONPATH (then src/), killing at
    ``kill`` ("during|after:NAME-GLOB:N", see sitecustomize.py); one thread by default,
    as the in-process reference runs: bitwise equal results need the same summation
    order."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "src"), str(ROOT)]),
        "PYTHONUNBUFFERED": "1",
    }
    for name in (
        "IMPRINT_TEST_KILL",
        "IMPRINT_TEST_KILL_GROUP",
        "IMPRINT_TEST_KILL_ONCE",
        "IMPRINT_TEST_WRITES",
    ):
        env.pop(name, None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if kill:
        env["IMPRINT_TEST_KILL"] = kill
    if group:
        env["IMPRINT_TEST_KILL_GROUP"] = "1"
    if once is not None:
        env["IMPRINT_TEST_KILL_ONCE"] = str(once)
    if writes is not None:
        env["IMPRINT_TEST_WRITES"] = str(writes)
    return env


def written(log: Path) -> list[str]:
    """The names of the files written, in order, from an IMPRINT_TEST_WRITES log."""
    if not log.exists():
        return []
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
