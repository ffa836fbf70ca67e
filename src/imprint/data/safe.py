"""Reading data files that must never run code: a restricted unpickler, npz without
pickles, and one error type for every way a file can be wrong."""

from __future__ import annotations

import io
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imprint.data.base import DataError

__all__ = ["safe_unpickle", "read_npz", "plain_keys"]

# (module, name) pairs that numpy arrays need to be rebuilt, and nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Protocol 5 (numpy >= 1.16): an array from its own bytes, reshaped; as large as the
    # bytes it is given, no larger.
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Protocol-2 pickles (Python 2's, the formats' original) spell raw bytes as
    # _codecs.encode(text, 'latin1'): a pure string-to-bytes conversion.
    ("_codecs", "encode"),
}

_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
    UnicodeDecodeError,
    RecursionError,
    ModuleNotFoundError,
)


class _ArrayType:
    """Stands for numpy.ndarray in a pickle: numpy's own pickles name the class only as
    the first argument of ``_reconstruct``, so a pickle that calls it (allocating an
    array of any shape from a few bytes) is refused."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise DataError(f"{self.source}: refused to build an array by calling numpy.ndarray.")


def _checked_reconstruct(source: Path, reconstruct: Any) -> Any:
    """numpy's ``_reconstruct``, admitting only what numpy's pickles ask of it: an empty
    ndarray, whose contents the pickle then sets from its own bytes (so an array is
    never larger than the file). Any other shape is uninitialised memory."""

    def rebuild(subtype: Any, shape: Any, dtype: Any) -> Any:
        if isinstance(subtype, _ArrayType):
            subtype = np.ndarray
        if subtype is not np.ndarray or tuple(np.atleast_1d(shape)) != (0,):
            raise DataError(
                f"{source}: refused an array built as {shape!r} without its data "
                "(numpy's pickles rebuild arrays from shape (0,) and their bytes)."
            )
        return reconstruct(subtype, shape, dtype)

    return rebuild


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle: io.BufferedIOBase, source: Path) -> None:
        super().__init__(handle, encoding="latin1")  # the files were written by Python 2
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "ndarray"):
            return _ArrayType(self.source)
        if (module, name) in _ALLOWED_GLOBALS and name == "_reconstruct":
            return _checked_reconstruct(self.source, super().find_class(module, name))
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataError(
            f"{self.source}: refused to load '{module}.{name}'. Image data files hold only "
            "numpy arrays, lists, dicts, numbers and strings; this file may be hostile."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: refused a persistent reference; not a data file.")


def require_regular(path: Path) -> None:
    """A DataError unless ``path`` is a regular file (or absent: its reader says so): a
    FIFO, socket or device would block a reader or never end."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise DataError(f"{path} is not a regular file (a FIFO, socket or device).")


def safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` admitting only numpy arrays and plain containers. Only a
    regular file is opened: a FIFO or device would block or never end."""
    try:
        require_regular(path)
        with path.open("rb") as handle:
            return _RestrictedUnpickler(handle, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, expected a pickle file.") from None
    except _READ_ERRORS as error:
        raise DataError(
            f"{path} is not a readable pickle ({type(error).__name__}: {error}); "
            "the file may be truncated or corrupt."
        ) from None


def _check_npz_sizes(path: Path) -> None:
    """Each member's array must fit the bytes the archive holds for it: its header's
    shape times its item size at most the member's size, and that size at most what
    deflate can expand its compressed bytes to (about 1,032 to 1): a small archive
    cannot ask for gigabytes."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            stored = info.compress_type == zipfile.ZIP_STORED
            if declared > info.file_size or (
                not stored and info.file_size > 1100 * info.compress_size + (1 << 20)
            ):
                raise DataError(
                    f"{path}: member {info.filename} declares an array of {shape} "
                    f"({declared} bytes) that its {info.compress_size} stored bytes cannot "
                    "hold; the file is corrupt or hostile."
                )


def read_npz(path: Path) -> dict[str, Any]:
    """The arrays of an npz file; object arrays (pickles) are refused, and so are arrays
    larger than the archive's bytes can hold."""
    require_regular(path)
    try:
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as error:
        raise DataError(f"{path} is not a readable npz file ({error}).") from None


def plain_keys(batch: Any, source: Path) -> dict[str, Any]:
    """A batch dict with str keys (Python 2 pickles read as bytes give b'data')."""
    if not isinstance(batch, dict):
        raise DataError(f"{source}: expected a dict of arrays. Got {type(batch).__name__}.")
    return {
        (key.decode("latin1") if isinstance(key, bytes) else str(key)): value
        for key, value in batch.items()
    }
