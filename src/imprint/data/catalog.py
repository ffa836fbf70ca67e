"""What datasets imprint reads, where it looks, and a check of a data folder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imprint.config import FileData, NLGPData
from imprint.data import ImageData, load_dataset

__all__ = ["DatasetInfo", "DATASETS", "DataReport", "check_data", "format_datasets"]


@dataclass(frozen=True)
class DatasetInfo:
    names: str  # the data.name values
    shape: str
    files: str  # what data.root must hold
    options: str  # dataset-specific options beyond the shared ones


DATASETS = (
    DatasetInfo(
        "nlgp",
        "(channels, height, width), default (1, 12, 12)",
        "nothing: generated from data.seed",
        "process (nlgp|gaussian), gain, height, width, channels, channel_correlation, "
        "class_xi, n_train, n_val",
    ),
    DatasetInfo(
        "imagenet32, imagenet64",
        "(3, 32, 32) / (3, 64, 64)",
        "train_data_batch_1..10 and val_data (pickles, or the same names + .npz)",
        "task = superclasses (the paper's 10 meaningful groups)",
    ),
    DatasetInfo(
        "cifar10, cifar100",
        "(3, 32, 32)",
        "data_batch_1..5 and test_batch (cifar10); train and test (cifar100)",
        "labels = fine|coarse (cifar100)",
    ),
    DatasetInfo(
        "mnist, fashion_mnist",
        "(1, 28, 28)",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-... (each maybe .gz)",
        "-",
    ),
    DatasetInfo(
        "folder",
        "(channels, height, width), default (3, 32, 32)",
        "root/<class>/*.png|jpg, or root/train/<class>/ and root/val/<class>/",
        "height, width, channels (images are resized)",
    ),
)

SHARED_OPTIONS = (
    "root, task (classes|superclasses|modulo|mapping), modulo, mapping_file, classes, "
    "train_fraction, fraction_mode (first|random), val_source (official|train), n_val, "
    "normalization (paper|channel), permute_pixels, seed"
)


def format_datasets() -> str:
    lines = []
    for info in DATASETS:
        lines += [
            f"{info.names}",
            f"  input shape: {info.shape}",
            f"  data.root holds: {info.files}",
            f"  options: {info.options}",
            "",
        ]
    lines.append(f"Options of every on-disk dataset: {SHARED_OPTIONS}.")
    return "\n".join(lines)


@dataclass(frozen=True)
class DataReport:
    name: str
    source: str
    shape: tuple[int, int, int]
    dtype: str
    num_classes: int
    n_train: int
    n_val: int
    label_range: tuple[int, int]
    train_counts: list[int]  # examples per class
    val_counts: list[int]
    megabytes: float  # images as held in memory

    def format(self) -> str:
        def balance(counts: list[int]) -> str:
            present = [c for c in counts if c]
            if not present:
                return "empty"
            return (
                f"min {min(present)}, max {max(present)} per class; "
                f"{len(counts) - len(present)} classes empty"
            )

        return "\n".join(
            [
                f"dataset: {self.name} ({self.source})",
                f"input shape (C, H, W): {self.shape}, "
                f"stored as {self.dtype} ({self.megabytes:.1f} MB)",
                f"classes: {self.num_classes}, labels {self.label_range[0]}..{self.label_range[1]}",
                f"train: {self.n_train} images, {balance(self.train_counts)}",
                f"val:   {self.n_val} images, {balance(self.val_counts)}",
            ]
        )


def _report(config: NLGPData | FileData, data: ImageData) -> DataReport:
    labels = torch.cat([data.y_train, data.y_val])
    nbytes = data.x_train.element_size() * (data.x_train.numel() + data.x_val.numel())
    source = "generated" if isinstance(config, NLGPData) else str(config.root)
    return DataReport(
        name=config.name,
        source=source,
        shape=data.shape,
        dtype=str(data.x_train.dtype).split(".")[-1],
        num_classes=data.num_classes,
        n_train=data.x_train.shape[0],
        n_val=data.x_val.shape[0],
        label_range=(int(labels.min()), int(labels.max())),
        train_counts=torch.bincount(data.y_train, minlength=data.num_classes).tolist(),
        val_counts=torch.bincount(data.y_val, minlength=data.num_classes).tolist(),
        megabytes=nbytes / 1e6,
    )


def check_data(config: NLGPData | FileData) -> DataReport:
    """Load the dataset of a data config (raising DataError on any problem) and report it."""
    return _report(config, load_dataset(config))
