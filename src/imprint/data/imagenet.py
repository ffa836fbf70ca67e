"""ImageNet32 / ImageNet64 as distributed (Chrabaszcz et al. 2017).

On disk (``data.root``): pickled batches ``train_data_batch_1`` .. ``_10`` and
``val_data``, each a dict with 'data' (N x 3*S*S uint8, channel-major), 'labels'
(1..1000) and, in the train batches, 'mean' (the mean image); or the npz variant of
the same arrays (``train_data_batch_1.npz`` ...). Images stay uint8 in memory (1.28M
ImageNet32 images take 3.9 GB) and are normalised per batch on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imprint.data.base import DataError, Dataset, FileOptions

if TYPE_CHECKING:
    from imprint.data.files import RawData

__all__ = ["ImageNetData", "read_imagenet", "IMAGENET_FILES", "DATASET"]


class ImageNetData(FileOptions):
    """ImageNet32/64 as distributed (pickled batches or npz), with the paper's tasks."""

    name: Literal["imagenet32", "imagenet64"] = "imagenet32"
    root: str = "data/imagenet32"


N_TRAIN_BATCHES = 10
IMAGENET_FILES = [f"train_data_batch_{i}" for i in range(1, N_TRAIN_BATCHES + 1)] + ["val_data"]


def _batch_path(root: Path, stem: str) -> Path:
    npz = root / f"{stem}.npz"
    if npz.exists():
        return npz
    if (root / stem).exists():
        return root / stem
    raise DataError(
        f"{root / stem} does not exist (nor {npz.name}). Expected the ImageNet32/64 "
        "batches train_data_batch_1..10 and val_data in data.root."
    )


def _read_batch(path: Path) -> dict[str, Any]:
    from imprint.data.safe import plain_keys, read_npz, safe_unpickle

    return plain_keys(read_npz(path) if path.suffix == ".npz" else safe_unpickle(path), path)


def _split(batch: dict[str, Any], source: Path, shape: tuple[int, int, int]):
    from imprint.data.files import check_images, check_labels

    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{source}: expected a dict with 'data' and 'labels'. Got {sorted(batch)}.")
    x = check_images(batch["data"], shape, source)
    return x, check_labels(batch["labels"], x.shape[0], 1, 1000, source)  # files count from 1


def read_imagenet(config: ImageNetData) -> RawData:
    import numpy as np

    from imprint.data.files import RawData

    side = 32 if config.name == "imagenet32" else 64
    shape = (3, side, side)
    root = Path(config.root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder (expected the {config.name} files).")
    paths = [_batch_path(root, f"train_data_batch_{i}") for i in range(1, N_TRAIN_BATCHES + 1)]
    # The batches stream into one array: a pickle holds at least its images' bytes, so
    # the files' sizes bound the rows (pages never written are never resident), and
    # the peak is the data plus one batch, not twice the data.
    dim = 3 * side * side
    rows = sum(path.stat().st_size for path in paths) // dim + 1
    x_all = np.empty((rows, dim), dtype=np.uint8)
    n, ys, mean = 0, [], None
    for path in paths:
        batch = _read_batch(path)
        x, y = _split(batch, path, shape)
        if n + x.shape[0] > x_all.shape[0]:  # compressed npz: grow (rare; copies once)
            grown = np.empty((2 * (n + x.shape[0]), dim), dtype=np.uint8)
            grown[:n] = x_all[:n]
            x_all = grown
        x_all[n : n + x.shape[0]] = x
        n += x.shape[0]
        ys.append(y)
        if mean is None and "mean" in batch:
            mean = np.asarray(batch["mean"], dtype=np.float64).reshape(-1)
            if mean.shape != (dim,):
                raise DataError(f"{path}: 'mean' must have {dim} values. Got shape {mean.shape}.")
        del batch, x
    val_path = _batch_path(root, "val_data")
    x_val, y_val = _split(_read_batch(val_path), val_path, shape)
    return RawData(x_all[:n], np.concatenate(ys), x_val, y_val, shape, 1000, mean)


DATASET = Dataset(
    config=ImageNetData,
    read=read_imagenet,
    shape="(3, 32, 32) / (3, 64, 64)",
    files="train_data_batch_1..10 and val_data (pickles, or the same names + .npz)",
    options="task = superclasses (the paper's 10 meaningful groups), modulo_superclasses",
)
