"""MNIST and Fashion-MNIST IDX files, plain or gzipped.

``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` (each possibly with ``.gz``). An IDX file is a big-endian
header (two zero bytes, a type code, the number of dimensions, one uint32 per
dimension) followed by the values.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import model_validator

from imprint.data.base import DataError, Dataset, FileOptions, refuse_superclasses
from imprint.data.safe import require_regular

if TYPE_CHECKING:
    import numpy as np

    from imprint.data.files import RawData

__all__ = ["MNISTData", "read_mnist", "read_idx", "MNIST_FILES", "DATASET"]


# Where the files are when data.root is not set: Debian and Ubuntu's
# dataset-fashion-mnist package installs the four official files here.
DEFAULT_ROOTS = {"mnist": "data/mnist", "fashion_mnist": "/usr/share/datasets/fashion-mnist"}


class MNISTData(FileOptions):
    """MNIST / Fashion-MNIST IDX files, plain or gzipped. Without data.root,
    fashion_mnist reads /usr/share/datasets/fashion-mnist (Debian's
    dataset-fashion-mnist package) and mnist data/mnist."""

    name: Literal["mnist", "fashion_mnist"] = "mnist"
    root: str = "data/mnist"

    @model_validator(mode="before")
    @classmethod
    def _default_root(cls, document: Any) -> Any:
        if isinstance(document, dict) and "root" not in document:
            name = document.get("name", "mnist")
            if name in DEFAULT_ROOTS:
                document = {**document, "root": DEFAULT_ROOTS[name]}
        return document

    @model_validator(mode="after")
    def _superclasses_of_fashion_mnist_only(self) -> MNISTData:
        refuse_superclasses(self.name, self.task)
        return self


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_UBYTE = 0x08
_MAX_VALUES = 1 << 31  # far above any real IDX file: a header asking for more is corrupt


def _find(root: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root / stem} does not exist (nor {stem}.gz).")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array with ``ndim`` dimensions.

    The file is streamed (gunzipped on the fly for ``.gz``): never more than the header's
    count is read, so a small gzip that expands to gigabytes is refused at that count.
    """
    import numpy as np

    require_regular(path)
    try:
        with (
            path.open("rb") as plain,
            gzip.GzipFile(fileobj=plain) if path.suffix == ".gz" else plain as handle,
        ):
            head = handle.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{path}: not an IDX file (bad magic number).")
            if head[2] != _UBYTE or head[3] != ndim:
                raise DataError(
                    f"{path}: expected unsigned bytes in {ndim} dimensions (type 0x08, "
                    f"{ndim}). Got type 0x{head[2]:02x} in {head[3]} dimensions."
                )
            sizes = handle.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise DataError(f"{path}: truncated header.")
            dims = [int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim)]
            count = int(np.prod(dims, dtype=object))
            if count > _MAX_VALUES:
                raise DataError(
                    f"{path}: header says {dims} ({count} values), more than an IDX image "
                    f"file holds (at most {_MAX_VALUES}); the file is corrupt."
                )
            values = _read_exactly(handle, count)
            extra = len(handle.read(1))
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is not a readable (gzipped) IDX file ({error}).") from None
    if len(values) != count or extra:
        held = f"{len(values)}" if len(values) < count else f"more than {count}"
        raise DataError(
            f"{path}: header says {dims} ({count} values) but the file holds {held}; "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(values, dtype=np.uint8).reshape(dims)


def _read_exactly(handle: Any, count: int, chunk: int = 16 << 20) -> bytearray:
    """Up to ``count`` bytes, read in chunks (memory grows only as data arrives)."""
    out = bytearray()
    while len(out) < count:
        block = handle.read(min(chunk, count - len(out)))
        if not block:
            break
        out += block
    return out


def _split(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    from imprint.data.files import check_labels

    images_path = _find(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, 3)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images must be 28x28. Got {images.shape[1:]}.")
    labels = read_idx(labels_path, 1)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in "
            f"{images_path.name}."
        )
    return images.reshape(images.shape[0], -1), check_labels(
        labels, labels.shape[0], 0, 9, labels_path
    )


def read_mnist(config: MNISTData) -> RawData:
    from imprint.data.files import RawData

    root = Path(config.root)
    if not root.is_dir():
        hint = (
            " On Debian or Ubuntu: apt-get install dataset-fashion-mnist; elsewhere put the "
            "four official files there."
            if config.name == "fashion_mnist"
            else ""
        )
        raise DataError(
            f"data.root: {root} is not a folder (expected the {config.name} files).{hint}"
        )
    x_train, y_train = _split(root, "train")
    x_val, y_val = _split(root, "t10k")
    return RawData(x_train, y_train, x_val, y_val, (1, 28, 28), 10)


DATASET = Dataset(
    config=MNISTData,
    read=read_mnist,
    shape="(1, 28, 28)",
    files="train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-... (each maybe .gz)",
    options=(
        "task = superclasses (fashion_mnist: tops, bottoms, footwear, bags; with balance = "
        "true); root defaults to /usr/share/datasets/fashion-mnist for fashion_mnist"
    ),
)
