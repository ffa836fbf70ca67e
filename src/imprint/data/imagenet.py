"""ImageNet32 / ImageNet64 as distributed (Chrabaszcz et al. 2017), with the paper's tasks.

On disk (``data.root``): pickled batches ``train_data_batch_1`` .. ``_10`` and
``val_data``, each a dict with 'data' (N x 3*S*S uint8, channel-major), 'labels'
(1..1000) and, in the train batches, 'mean' (the mean image); or the npz variant of
the same arrays (``train_data_batch_1.npz`` ...). Images stay uint8 in memory
(1.28M ImageNet32 images take 3.9 GB) and are normalised per batch on the device as
the paper does: (x - mean) / 255.

The pickles are read by a restricted unpickler that admits only what these files
contain (numpy arrays, lists, dicts, numbers, strings): a file that tries to run
code when loaded is refused and runs nothing.
"""

from __future__ import annotations

import csv
import io
import pickle
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imprint.config import ImageNetData
from imprint.data import DataError, ImageData

__all__ = ["load_imagenet", "safe_unpickle", "superclass_table"]

# (module, name) pairs that numpy arrays need to be rebuilt, and nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Protocol-2 pickles (Python 2's, the format's original) spell raw bytes as
    # _codecs.encode(text, 'latin1'): a pure string-to-bytes conversion.
    ("_codecs", "encode"),
}
_N_TRAIN_BATCHES = 10


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle: io.BufferedIOBase, source: Path) -> None:
        super().__init__(handle, encoding="latin1")  # the files were written by Python 2
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataError(
            f"{self.source}: refused to load '{module}.{name}'. Image data files hold only "
            "numpy arrays, lists, dicts, numbers and strings; this file may be hostile."
        )


def safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` admitting only numpy arrays and plain containers."""
    try:
        with path.open("rb") as handle:
            return _RestrictedUnpickler(handle, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path} does not exist.") from None
    except (
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
    ) as error:
        raise DataError(
            f"{path} is not a readable pickle ({type(error).__name__}: {error}); "
            "the file may be truncated or corrupt."
        ) from None


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path} is not a readable npz file ({error}).") from None


def _read_batch(root: Path, stem: str) -> dict[str, Any]:
    npz = root / f"{stem}.npz"
    if npz.exists():
        batch = _read_npz(npz)
        source = npz
    elif (root / stem).exists():
        batch = safe_unpickle(root / stem)
        source = root / stem
    else:
        raise DataError(
            f"{root / stem} does not exist (nor {npz.name}). Expected the ImageNet32/64 "
            "batches train_data_batch_1..10 and val_data in data.root."
        )
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataError(f"{source}: expected a dict with 'data' and 'labels'.")
    batch["_source"] = source
    return batch


def _images(batch: dict[str, Any], side: int) -> np.ndarray:
    data = np.asarray(batch["data"])
    dim = 3 * side * side
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != dim:
        raise DataError(
            f"{batch['_source']}: 'data' must be a uint8 array of shape (N, {dim}). "
            f"Got {data.dtype} {data.shape}."
        )
    return data


def _labels(batch: dict[str, Any], n: int) -> np.ndarray:
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{batch['_source']}: 'labels' must be integers ({error}).") from None
    if labels.shape != (n,):
        raise DataError(f"{batch['_source']}: 'labels' must have shape ({n},). Got {labels.shape}.")
    if n and (labels.min() < 1 or labels.max() > 1000):
        raise DataError(
            f"{batch['_source']}: labels must be in 1..1000. Got {labels.min()}..{labels.max()}."
        )
    return labels - 1  # the files count from 1


def superclass_table() -> np.ndarray:
    """The paper's 10 meaningful superclasses: (1000,) superclass of each 0-based label."""
    table = np.full(1000, -1, dtype=np.int64)
    text = resources.files("imprint.data").joinpath("imagenet_10_superclasses.csv").read_text()
    for row in csv.DictReader(io.StringIO(text)):
        table[int(row["label"])] = int(row["superclass"])
    if (table < 0).any():  # pragma: no cover - the shipped table covers every class
        raise DataError("imagenet_10_superclasses.csv does not cover all 1000 classes.")
    return table


def _task_labels(labels: np.ndarray, config: ImageNetData) -> tuple[np.ndarray, int]:
    if config.task == "classes":
        return labels, 1000
    if config.task == "superclasses":
        return superclass_table()[labels], 10
    return labels % config.modulo, config.modulo


def load_imagenet(config: ImageNetData) -> ImageData:
    """The training and validation sets of ``config``, uint8, with the paper's normalisation."""
    side = 32 if config.name == "imagenet32" else 64
    root = Path(config.root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder (expected the {config.name} files).")
    xs, ys, mean = [], [], None
    for i in range(1, _N_TRAIN_BATCHES + 1):
        batch = _read_batch(root, f"train_data_batch_{i}")
        x = _images(batch, side)
        xs.append(x)
        ys.append(_labels(batch, x.shape[0]))
        if mean is None and "mean" in batch:
            mean = np.asarray(batch["mean"], dtype=np.float32).reshape(-1)
            if mean.shape != (3 * side * side,):
                raise DataError(
                    f"{batch['_source']}: 'mean' must have {3 * side * side} values. "
                    f"Got shape {mean.shape}."
                )
    x_train, y_train = np.concatenate(xs), np.concatenate(ys)
    if mean is None:  # the npz variant may omit it: the same mean, computed
        mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    n_keep = max(1, round(config.train_fraction * x_train.shape[0]))
    x_train, y_train = x_train[:n_keep], y_train[:n_keep]  # the first fraction, as the paper

    val = _read_batch(root, "val_data")
    x_val = _images(val, side)
    y_val = _labels(val, x_val.shape[0])
    x_val, y_val = x_val[: config.n_val], y_val[: config.n_val]

    y_train, n_classes = _task_labels(y_train, config)
    y_val, _ = _task_labels(y_val, config)
    return ImageData(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(y_train),
        x_val=torch.from_numpy(np.ascontiguousarray(x_val)),
        y_val=torch.from_numpy(y_val),
        shape=(3, side, side),
        num_classes=n_classes,
        offset=torch.from_numpy(mean),
        scale=1.0 / 255.0,
    )
