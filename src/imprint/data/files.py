"""What every on-disk dataset shares after its files are read: the task's labels, the
class subset, the training fraction, the validation set and the normalisation."""

from __future__ import annotations

import csv
import hashlib
import io
import numbers
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from imprint.data.base import SUPERCLASS_TABLES, DataError, FileOptions, ImageData

__all__ = [
    "RawData",
    "finish",
    "superclass_table",
    "modulo_superclass_table",
    "SUPERCLASS_TABLES",
    "check_images",
    "check_labels",
]


@dataclass(frozen=True)
class RawData:
    """A dataset as its files hold it: uint8 images, 0-based labels."""

    x_train: np.ndarray  # (N, D) uint8, channel-major
    y_train: np.ndarray  # (N,) int64 in [0, n_labels)
    x_val: np.ndarray | None  # (M, D) uint8, or None when the format has no official split
    y_val: np.ndarray | None
    shape: tuple[int, int, int]  # (C, H, W)
    n_labels: int
    mean: np.ndarray | None = None  # (D,) float, the mean image shipped with the files


def check_images(data: object, shape: tuple[int, int, int], source: Path) -> np.ndarray:
    """``data`` as an (N, C*H*W) uint8 array, or a DataError naming ``source``."""
    dim = shape[0] * shape[1] * shape[2]
    array = np.asarray(data) if isinstance(data, np.ndarray) else None
    if array is None or array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != dim:
        got = f"{array.dtype} {array.shape}" if array is not None else type(data).__name__
        raise DataError(f"{source}: 'data' must be a uint8 array of shape (N, {dim}). Got {got}.")
    return array


def check_labels(labels: object, n: int, low: int, high: int, source: Path) -> np.ndarray:
    """Integer labels in [low, high] of length ``n``, shifted to start at 0."""
    if isinstance(labels, (list, tuple)):  # checked before numpy copies it: a list of
        # shared nested lists would become a huge array
        if len(labels) != n or not all(isinstance(v, numbers.Integral) for v in labels):
            raise DataError(
                f"{source}: labels must be {n} integers. Got a list of {len(labels)} "
                "entries, not all integers."
            )
    try:
        array = np.asarray(labels)
        if array.dtype.kind not in "iu":
            raise TypeError(f"dtype {array.dtype}")
        array = array.astype(np.int64)
    except (TypeError, ValueError, OverflowError) as error:
        raise DataError(f"{source}: labels must be integers ({error}).") from None
    if array.shape != (n,):
        raise DataError(f"{source}: labels must have shape ({n},). Got {array.shape}.")
    if n and (array.min() < low or array.max() > high):
        raise DataError(
            f"{source}: labels must be in {low}..{high}. Got {array.min()}..{array.max()}."
        )
    return array - low


def superclass_table(name: str = "imagenet32") -> np.ndarray:
    """(n_labels,) superclass of each 0-based label of dataset ``name``, -1 = not used.

    ImageNet: the paper's 10 meaningful superclasses, covering all 1000 classes.
    Fashion-MNIST: tops (T-shirt/top, pullover, coat, shirt), bottoms (trouser),
    footwear (sandal, sneaker, ankle boot) and bags; the dress, neither top nor bottom,
    is left out. Balance the counts with data.balance = true.
    """
    filename, n_labels = SUPERCLASS_TABLES[name]
    table = np.full(n_labels, -1, dtype=np.int64)
    text = resources.files("imprint.data").joinpath(filename).read_text()
    for row in csv.DictReader(io.StringIO(text)):
        table[int(row["label"])] = int(row["superclass"])
    return table


def modulo_superclass_table(name: str) -> np.ndarray:
    """The meaningless control of :func:`superclass_table`: the same labels, grouped by
    label mod k with k the number of superclasses (ImageNet: label mod 10)."""
    table = superclass_table(name)
    k = int(table.max()) + 1
    labels = np.arange(table.shape[0])
    return np.where(table >= 0, labels % k, -1)


_MAPPING_LIMIT = 16 << 20


def _read_mapping(path: Path, n_labels: int) -> np.ndarray:
    """A CSV with columns label,target (0-based) -> (n_labels,) targets, -1 = unmapped."""
    table = np.full(n_labels, -1, dtype=np.int64)
    try:
        info = path.stat()
    except OSError:
        raise DataError(f"data.mapping_file: {path} does not exist.") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > _MAPPING_LIMIT:
        raise DataError(
            f"data.mapping_file: {path} must be a regular CSV file of at most "
            f"{_MAPPING_LIMIT} bytes (one line per label)."
        )
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DataError(f"data.mapping_file: {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"data.mapping_file: {path} is not a readable CSV ({error}).") from None
    if not rows:
        raise DataError(
            f"data.mapping_file: {path} has no rows: it needs a header label,target and a "
            "line per label."
        )
    seen: dict[int, int] = {}
    for line, row in enumerate(rows, start=2):
        try:
            label, target = int(row["label"]), int(row["target"])
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"data.mapping_file: {path} line {line} must have integer 'label' and "
                f"'target' columns. Got {row}."
            ) from None
        if not (0 <= label < n_labels and 0 <= target < n_labels):
            # A task has at most as many classes as the dataset has labels.
            raise DataError(
                f"data.mapping_file: {path} line {line}: label and target must be in "
                f"0..{n_labels - 1}. Got {label},{target}."
            )
        if label in seen:
            raise DataError(
                f"data.mapping_file: {path} line {line} maps label {label} again (first on "
                f"line {seen[label]}): one line per label."
            )
        seen[label] = line
        table[label] = target
    return table


def _task(labels: np.ndarray, config: FileOptions, n_labels: int) -> tuple[np.ndarray, int]:
    """Map original labels to the task's classes; -1 drops an example."""
    if config.classes is not None and config.task == "classes":
        lookup = np.full(n_labels, -1, dtype=np.int64)
        lookup[np.asarray(config.classes)] = np.arange(len(config.classes))
        return lookup[labels], len(config.classes)
    if config.task == "classes":
        return labels, n_labels
    if config.task in ("superclasses", "modulo_superclasses"):
        table = (superclass_table if config.task == "superclasses" else modulo_superclass_table)(
            config.name
        )
        return table[labels], int(table.max()) + 1
    if config.task == "modulo":
        return labels % config.modulo, config.modulo
    table = _read_mapping(Path(config.mapping_file or ""), n_labels)
    return table[labels], int(table.max()) + 1


def finish(raw: RawData, config: FileOptions) -> ImageData:
    """Apply the config's task, class subset, validation split, fraction, normalisation."""
    for label in config.classes or []:
        if label >= raw.n_labels:
            raise DataError(
                f"data.classes names label {label}; {config.name} has labels 0..{raw.n_labels - 1}."
            )
    raw = _crop(raw, config.crop, config.name)
    x_train, y_train = raw.x_train, raw.y_train
    if config.val_source == "train" or raw.x_val is None:
        if config.val_source != "train":
            raise DataError(
                f"{config.name} at {config.root} has no official validation set: set "
                "data.val_source = 'train' to hold out training images."
            )
        if config.n_val >= x_train.shape[0]:
            raise DataError(
                f"data.n_val ({config.n_val}) must be smaller than the {x_train.shape[0]} "
                "training images when data.val_source = 'train'."
            )
        held = held_out(x_train.shape[0], config.n_val, config.seed)
        rest = np.setdiff1d(np.arange(x_train.shape[0]), held)  # in file order
        x_val, y_val = x_train[held], y_train[held]
        x_train, y_train = take_rows(x_train, rest), y_train[rest]
        x_test, y_test = raw.x_val, raw.y_val  # the official set: the test set, if any
        splits = {
            "validation": "held out of the training files",
            "seed": config.seed,
            "held_out_sha256": hashlib.sha256(held.astype("<i8").tobytes()).hexdigest(),
            "test": "the official held-out set" if x_test is not None else "none",
        }
    else:
        x_test = y_test = None
        assert raw.x_val is not None and raw.y_val is not None  # the format's official split
        x_val, y_val = raw.x_val[: config.n_val], raw.y_val[: config.n_val]
        splits = {"validation": "the official held-out set (chosen and reported on)"}

    def relabel(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        if config.classes is not None:
            keep = np.isin(y, np.asarray(config.classes))
            x, y = take_rows(x, np.flatnonzero(keep)), y[keep]
        mapped, n_classes = _task(y, config, raw.n_labels)
        keep = mapped >= 0  # a mapping file may leave labels out
        if config.balance:
            keep &= _balanced(y, mapped, n_classes)
        return take_rows(x, np.flatnonzero(keep)), mapped[keep], n_classes

    x_train, y_train, n_classes = relabel(x_train, y_train)
    x_val, y_val, _ = relabel(x_val, y_val)
    if x_test is not None and y_test is not None:
        x_test, y_test, _ = relabel(x_test, y_test)
    n_keep = max(1, round(config.train_fraction * x_train.shape[0]))
    if config.fraction_mode == "random" and n_keep < x_train.shape[0]:
        rng = np.random.default_rng(config.seed)
        chosen = np.sort(rng.choice(x_train.shape[0], size=n_keep, replace=False))
        x_train, y_train = take_rows(x_train, chosen), y_train[chosen]
    else:
        x_train, y_train = x_train[:n_keep], y_train[:n_keep]
    for split, x in (("training", x_train), ("validation", x_val)):
        if x.shape[0] == 0:
            raise DataError(
                f"{config.name} at {config.root}: no {split} image is left after the class "
                "subset and mapping."
            )

    offset, scale = _normalization(x_train, raw, config)
    return ImageData(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_val=torch.from_numpy(np.ascontiguousarray(x_val)),
        y_val=torch.from_numpy(np.ascontiguousarray(y_val)),
        shape=raw.shape,
        num_classes=n_classes,
        offset=offset,
        scale=scale,
        x_test=None if x_test is None else torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=None if y_test is None else torch.from_numpy(np.ascontiguousarray(y_test)),
        splits=splits,
    )


def take_rows(x: np.ndarray, rows: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """``x[rows]`` for ascending ``rows``, without a second copy of ``x``.

    When ``x`` is writable, its first ``len(rows)`` rows become the taken ones, chunk by
    chunk (row k is taken from row rows[k] >= k, never from one already overwritten),
    and a view of them is returned: a training set larger than half the memory is never
    held twice. ``x`` itself must not be used afterwards. A read-only ``x`` is copied.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == x.shape[0]:  # every row, in order
        return x
    if not x.flags.writeable or not x.flags.c_contiguous:
        return x[rows]
    if rows.size > 1 and not bool((rows[1:] > rows[:-1]).all()):
        raise ValueError("take_rows needs strictly ascending rows.")
    for start in range(0, rows.size, chunk):
        part = rows[start : start + chunk]
        x[start : start + part.size] = x[part]
    return x[: rows.size]


def held_out(n: int, n_val: int, seed: int) -> np.ndarray:
    """The training-file indices held out for validation: ``n_val`` of ``n`` drawn
    without replacement by ``seed`` (its own stream), sorted."""
    rng = np.random.default_rng([seed, 0x5EED])
    return np.sort(rng.choice(n, size=n_val, replace=False))


def _crop(raw: RawData, crop: int, name: str) -> RawData:
    """``raw`` without ``crop`` pixels at each border of every channel."""
    if crop == 0:
        return raw
    channels, height, width = raw.shape
    if min(height, width) - 2 * crop < 2:
        raise DataError(
            f"data.crop = {crop} leaves no image: {name} images are {height}x{width}, and "
            f"at least 2x2 pixels must remain (crop <= {(min(height, width) - 2) // 2})."
        )

    def cut(x: np.ndarray) -> np.ndarray:
        images = x.reshape(-1, channels, height, width)[
            :, :, crop : height - crop, crop : width - crop
        ]
        return np.ascontiguousarray(images.reshape(x.shape[0] if x.ndim == 2 else 1, -1))

    return RawData(
        x_train=cut(raw.x_train),
        y_train=raw.y_train,
        x_val=None if raw.x_val is None else cut(raw.x_val),
        y_val=raw.y_val,
        shape=(channels, height - 2 * crop, width - 2 * crop),
        n_labels=raw.n_labels,
        mean=None if raw.mean is None else cut(raw.mean).reshape(-1),
    )


def _balanced(labels: np.ndarray, mapped: np.ndarray, n_classes: int) -> np.ndarray:
    """Which images to keep so that every task class has the same count, each taking an
    equal share of each of its original labels (the first images of each label)."""
    keep = np.zeros(labels.shape[0], dtype=bool)
    sources = [np.unique(labels[mapped == target]) for target in range(n_classes)]
    if any(source.size == 0 for source in sources):
        return mapped >= 0  # an empty class: nothing to balance against (refused later)
    # The largest per-label share q_t with |labels of t| * q_t <= the smallest class.
    capacity = [
        source.size * min(int((labels == label).sum()) for label in source) for source in sources
    ]
    size = min(capacity)
    for source in sources:
        share = size // source.size
        for label in source:
            keep[np.flatnonzero(labels == label)[:share]] = True
    return keep


def _normalization(
    x_train: np.ndarray, raw: RawData, config: FileOptions
) -> tuple[torch.Tensor, float | torch.Tensor]:
    """The per-batch affine map: (x - offset) * scale, offset (D,), scale scalar or (D,)."""
    channels, height, width = raw.shape
    if config.normalization == "paper":
        # The paper: (x - mean image) / 255, with the mean the files ship when they do.
        mean = raw.mean if raw.mean is not None else _mean_image(x_train)
        return torch.from_numpy(np.asarray(mean, dtype=np.float32).reshape(-1)), 1.0 / 255.0
    per_channel = x_train.reshape(x_train.shape[0], channels, height * width)
    mean = per_channel.mean(axis=(0, 2), dtype=np.float64)  # (C,)
    std = per_channel.std(axis=(0, 2), dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    offset = np.repeat(mean, height * width).astype(np.float32)
    scale = np.repeat(1.0 / std, height * width).astype(np.float32)
    return torch.from_numpy(offset), torch.from_numpy(scale)


def _mean_image(x: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Mean over images in float64, in chunks (no float copy of the whole set)."""
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        total += x[start : start + chunk].sum(axis=0, dtype=np.float64)
    return total / max(1, x.shape[0])
