"""CIFAR-10 and CIFAR-100, python version (the pickles as distributed).

CIFAR-10: ``data_batch_1`` .. ``_5`` and ``test_batch``, dicts with 'data'
(N x 3072 uint8, channel-major) and 'labels' (0..9). CIFAR-100: ``train`` and
``test`` with 'fine_labels' (0..99) and 'coarse_labels' (0..19).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import model_validator

from imprint.data.base import DataError, Dataset, FileOptions, refuse_superclasses

if TYPE_CHECKING:
    import numpy as np

    from imprint.data.files import RawData

__all__ = ["CIFARData", "read_cifar", "CIFAR_FILES", "DATASET"]


class CIFARData(FileOptions):
    """CIFAR-10 / CIFAR-100, python pickles (CIFAR-100 with fine or coarse labels)."""

    name: Literal["cifar10", "cifar100"] = "cifar10"
    root: str = "data/cifar-10-batches-py"
    labels: Literal["fine", "coarse"] = "fine"  # CIFAR-100 only

    @model_validator(mode="after")
    def _no_superclasses(self) -> CIFARData:
        refuse_superclasses(self.name, self.task)
        return self


SHAPE = (3, 32, 32)
CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch"),
    "cifar100": (["train"], "test"),
}


def _read(path: Path, key: str, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    from imprint.data.files import check_images, check_labels
    from imprint.data.safe import plain_keys, safe_unpickle

    if not path.exists():
        raise DataError(f"{path} does not exist. Expected the {path.parent} CIFAR python files.")
    batch = plain_keys(safe_unpickle(path), path)
    if "data" not in batch or key not in batch:
        raise DataError(f"{path}: expected a dict with 'data' and '{key}'. Got {sorted(batch)}.")
    x = check_images(batch["data"], SHAPE, path)
    return x, check_labels(batch[key], x.shape[0], 0, n_labels - 1, path)


def read_cifar(config: CIFARData) -> RawData:
    import numpy as np

    from imprint.data.files import RawData

    root = Path(config.root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder (expected the {config.name} files).")
    if config.name == "cifar10":
        key, n_labels = "labels", 10
    else:
        key, n_labels = f"{config.labels}_labels", (100 if config.labels == "fine" else 20)
    train_files, test_file = CIFAR_FILES[config.name]
    parts = [_read(root / name, key, n_labels) for name in train_files]
    x_val, y_val = _read(root / test_file, key, n_labels)
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    return RawData(x_train, y_train, x_val, y_val, SHAPE, n_labels)


DATASET = Dataset(
    config=CIFARData,
    read=read_cifar,
    shape="(3, 32, 32)",
    files="data_batch_1..5 and test_batch (cifar10); train and test (cifar100)",
    options="labels = fine|coarse (cifar100)",
)
