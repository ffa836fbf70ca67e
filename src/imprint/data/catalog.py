"""What datasets imprint reads, where it looks, and a check of a data folder."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

import torch

from imprint.data import ImageData, load_dataset
from imprint.data.base import DataSection, FileOptions
from imprint.data.registry import datasets

__all__ = ["DataReport", "check_data", "format_datasets", "shared_options"]


def shared_options(base: type[DataSection] = FileOptions) -> str:
    """The options of every on-disk dataset (FileOptions' own fields; every dataset's,
    DataSection's, with ``base=DataSection``), with their choices."""
    parts = []
    inherited = set() if base is DataSection else set(DataSection.model_fields)
    for name, field in base.model_fields.items():
        if name in inherited:
            continue
        choices = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is Literal:
            parts.append(f"{name} ({'|'.join(str(c) for c in choices)})")
        else:
            parts.append(name)
    return ", ".join(parts)


def format_datasets() -> str:
    """What `imprint datasets` prints: every registered dataset's catalog entry."""
    lines = []
    for dataset in datasets():
        lines += [
            ", ".join(dataset.names),
            f"  input shape: {dataset.shape}",
            f"  data.root holds: {dataset.files}",
            f"  options: {dataset.options}",
            "",
        ]
    lines.append(f"Options of every on-disk dataset: {shared_options()}.")
    lines.append(f"Options of every dataset: {shared_options(DataSection)}.")
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


def _report(config: DataSection, data: ImageData) -> DataReport:
    labels = torch.cat([data.y_train, data.y_val])
    nbytes = data.x_train.element_size() * (data.x_train.numel() + data.x_val.numel())
    source = str(config.root) if isinstance(config, FileOptions) else "generated"
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


def check_data(config: DataSection) -> DataReport:
    """Load the dataset of a data config (raising DataError on any problem) and report it."""
    return _report(config, load_dataset(config))
