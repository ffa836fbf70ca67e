"""Safe file I/O for imprint's folders: atomic writes (a temporary named after its
writer, fsynced, renamed), reads of regular files only and within limits, folders that
must not be links below a confined root, and the one error of a file that cannot be
used (:class:`RunFolderError`, naming the file).

Every file is written to a temporary name in the same folder, flushed to disk and
renamed over its final name, so a crash never leaves a half-written file under a
name that is read later.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import platform
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from imprint.machine import host_available_bytes

__all__ = [
    "os_reason",
    "first_layer_inputs",
    "read_file",
    "read_text_or_missing",
    "parse_tensors",
    "writer_gone",
    "TEMP_HOST",
    "RunFolderError",
    "write_bytes",
    "write_text",
    "write_csv",
    "toml_document",
    "confine",
    "check_confined",
    "TEXT_LIMIT",
    "TENSOR_LIMIT",
    "read_regular",
    "read_text",
    "read_json",
]


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message names the file."""


def _file_mode() -> int:
    """What open() would give a new file: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


TEMP_HOST = re.sub(r"[^A-Za-z0-9]", "", platform.node())[:32] or "host"


def writer_gone(temporary: Path) -> bool:
    """Whether ``temporary`` is imprint's (.NAME.HOST-PID.XXXX.tmp) and its writer has
    ended; one of another machine counts as gone when it is older than a day. A file
    of another name (a user's own .notes.tmp) is never imprint's to remove."""
    match = re.search(r"\.([A-Za-z0-9]*)-(\d+)\.[A-Za-z0-9_]+\.tmp$", temporary.name)
    if match is None:
        return False
    if match.group(1) != TEMP_HOST:
        try:
            return time.time() - temporary.lstat().st_mtime > 86_400
        except OSError:
            return False
    try:
        os.kill(int(match.group(2)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    return False


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    check_confined(path)  # before mkdir, which would follow a linked folder
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name: a temporary is removed only once its writer is gone.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{TEMP_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def os_reason(error: OSError) -> str:
    """Why the system refused, in words (its strerror, else the error itself)."""
    return error.strerror or str(error) or type(error).__name__


def write_bytes(path: Path, data: bytes) -> None:
    try:
        _atomic_write(path, lambda handle: None if handle.write(data) else None)
    except OSError as error:
        raise RunFolderError(f"Cannot write {path}: {os_reason(error)}.") from error


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def toml_document(document: Mapping[str, Any]) -> str:
    """A config document as TOML: one table per section, arrays on one line (tomli_w
    puts each element of a nested array on its own line), checked by reading it back."""
    # top-level keys (track = [...]) first: TOML puts them before any table
    lines = [f"{k} = {_toml_value(v)}" for k, v in document.items() if not isinstance(v, Mapping)]
    lines += [""] if lines else []
    for section, table in document.items():
        if not isinstance(table, Mapping):
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    text = "\n".join(lines)
    try:
        same = tomllib.loads(text) == dict(document)
    except tomllib.TOMLDecodeError:
        same = False
    return text if same else tomli_w.dumps(document)  # never what would not read back


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # a table inside a section (prune.options): inline
        inner = ", ".join(f"{key} = {_toml_value(v)}" for key, v in value.items())
        return "{" + (f" {inner} " if inner else "") + "}"
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


# The folders imprint reads and writes (run, group and sweep folders): lexical absolute
# path -> real path, recorded when a RunFolder (or a sweep) is opened. Below one of them
# no folder may be a link: a link planted in place of rounds/, analysis/, a round or a
# seed folder must not lead a read or a write outside (links to files are refused when
# opened). The folder itself may be reached through a link.
_CONFINED: dict[str, str] = {}


def confine(root: str | Path) -> None:
    """Record ``root`` as a folder whose reads and writes stay inside it."""
    lexical = os.path.abspath(root)
    _CONFINED.setdefault(lexical, os.path.realpath(lexical))


def check_confined(path: str | Path) -> None:
    """A RunFolderError when a folder between a confined root and ``path`` is a link."""
    parent = os.path.dirname(os.path.abspath(path))
    for lexical, real in _CONFINED.items():
        if parent == lexical or parent.startswith(lexical + os.sep):
            inside = os.path.normpath(os.path.join(real, os.path.relpath(parent, lexical)))
            if os.path.realpath(parent) != inside:
                raise RunFolderError(
                    f"{parent} leads outside {lexical}: a link in place of a folder. imprint "
                    "reads and writes only inside its folders; replace the link by the folder."
                )


TEXT_LIMIT = 64 << 20  # a config, JSON record or CSV larger than this is not ours
TENSOR_LIMIT = 64 << 30  # masks and weights: the paper FCN's are ~60 MB


def _tensor_limit() -> int:
    """The largest tensor file worth reading: TENSOR_LIMIT, and at most half the memory
    available (a sparse file of 50 GB is refused, not read until memory runs out)."""
    available = host_available_bytes()
    return TENSOR_LIMIT if available is None else min(TENSOR_LIMIT, available // 2)


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """The bytes of ``path``, which must be a regular file (not a link, FIFO or device:
    a planted link must not make imprint read outside the folder, a FIFO must not
    hang it) of at most ``limit`` bytes, not reached through a linked folder of a
    confined folder. FileNotFoundError if it is missing; every other refusal is a
    RunFolderError naming the file."""
    check_confined(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunFolderError(f"{path} is a folder, not a file.")
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunFolderError(
                f"{path} is a symbolic link; imprint reads regular files only."
            ) from None
        raise RunFolderError(f"Cannot read {path}: {os_reason(error)}.") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RunFolderError(f"{path} is not a regular file (a FIFO, device or folder).")
        limit = _tensor_limit() if limit is None else limit
        if info.st_size > limit:
            raise RunFolderError(
                f"{path} holds {info.st_size} bytes; at most {limit} expected (or half the "
                "memory available)."
            )
        return handle.read()  # sized by fstat: the size was checked above


def read_file(path: Path, limit: int | None = None) -> bytes:
    """:func:`read_regular`, with a missing file a RunFolderError naming it."""
    try:
        return read_regular(path, limit)
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing.") from None


def read_text(path: str | Path) -> str:
    """A text file of a run folder (regular, bounded, UTF-8), or a RunFolderError."""
    try:
        return read_text_or_missing(Path(path))
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing.") from None


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object stored in a run folder, or a RunFolderError naming the file."""
    try:
        record = json.loads(read_text(path))
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply
        raise RunFolderError(f"{path} is not readable JSON: {error}.") from None
    if not isinstance(record, dict):
        raise RunFolderError(f"{path} must hold a JSON object. Got {type(record).__name__}.")
    return record


def read_text_or_missing(path: Path) -> str:
    """A text file of the folder (FileNotFoundError if missing, else RunFolderError)."""
    try:
        return read_regular(path, TEXT_LIMIT).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RunFolderError(f"{path} is not UTF-8 text: {error}.") from None


def parse_tensors(path: Path, raw: bytes) -> dict[str, torch.Tensor]:
    try:
        return st_load(raw)
    except (SafetensorError, ValueError) as error:
        raise RunFolderError(f"{path} is not a readable safetensors file: {error}.") from None


def first_layer_inputs(path: Path) -> int | None:
    """The inputs of layers.0.weight in a safetensors file, from its header alone (None
    when the file or the entry is absent or unreadable: its own reader says why)."""
    try:
        check_confined(path)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (OSError, RunFolderError):
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            size = int.from_bytes(handle.read(8), "little")
            if size > TEXT_LIMIT:
                return None
            header = json.loads(handle.read(size))
            shape = header["layers.0.weight"]["shape"]
            return int(shape[1])
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            return None
