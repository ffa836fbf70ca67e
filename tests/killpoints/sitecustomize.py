"""Kill points for the crash tests: SIGKILL a process at a moment the run itself marks.

Put this folder first on PYTHONPATH of a child process (``tests.killpoints.env``) and
Python imports this module at start-up, in the process and in every interpreter it
spawns (a sweep's pool workers, Ray's workers). Every file imprint writes goes through
one atomic write that ends with ``os.replace(temporary, final)``; that rename is the
event. The moment is chosen by counting events, never by a clock, so a test kills at
the same point of the run on a fast machine and on a slow one.

Environment:
  IMPRINT_TEST_KILL        "WHEN:NAME:N": kill at the N-th write (in this process) of a
                           file whose name matches the glob NAME; WHEN is "during" (the
                           temporary is written and synced, not yet renamed: a write in
                           flight) or "after" (renamed: the run is between two writes)
  IMPRINT_TEST_KILL_GROUP  "1": kill the whole process group, not only this process
  IMPRINT_TEST_KILL_ONCE   a path: only the first process to reach its kill point kills
                           (it creates the file); the others go on
  IMPRINT_TEST_WRITES      a path: append "PID NAME" for every completed write
"""

from __future__ import annotations

import fnmatch
import os
import signal

_SPEC = os.environ.get("IMPRINT_TEST_KILL", "")
_LOG = os.environ.get("IMPRINT_TEST_WRITES", "")
_real_replace = os.replace
_count = 0


def _ours(source) -> bool:
    name = os.path.basename(os.fsdecode(source))
    return name.startswith(".") and name.endswith(".tmp") and f"-{os.getpid()}." in name


def _kill() -> None:
    once = os.environ.get("IMPRINT_TEST_KILL_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if os.environ.get("IMPRINT_TEST_KILL_GROUP") == "1":
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _replace(source, destination, *args, **kwargs):
    global _count
    if not _ours(source):
        return _real_replace(source, destination, *args, **kwargs)
    name = os.path.basename(os.fsdecode(destination))
    hit = False
    if _SPEC:
        when, pattern, n = _SPEC.split(":")
        if fnmatch.fnmatch(name, pattern):
            _count += 1
            hit = _count == int(n)
        if hit and when == "during":
            _kill()
    result = _real_replace(source, destination, *args, **kwargs)
    if _LOG:
        with open(_LOG, "a") as log:
            log.write(f"{os.getpid()} {name}\n")
    if hit:
        _kill()
    return result


if _SPEC or _LOG:
    os.replace = _replace
