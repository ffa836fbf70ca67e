"""Datasets held in memory as flat channel-major tensors, normalised per batch.

Every dataset, built-in or read from disk, becomes an :class:`ImageData` (defined in
:mod:`imprint.data.base`): images as (N, C*H*W) tensors (uint8 for real images,
float32 for generated ones) with index p = c*H*W + y*W + x, 0-based labels, and the
affine normalisation that the training step applies to each batch on the device.
Which reader builds it is decided by :mod:`imprint.data.registry` from data.name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from imprint.data.base import DataError, ImageData

if TYPE_CHECKING:
    import torch

    from imprint.data.base import DataSection

__all__ = ["DataError", "ImageData", "load_dataset", "pixel_permutation"]


def pixel_permutation(dim: int, seed: int) -> torch.Tensor:
    """The fixed seeded permutation of input positions used by the permutation control."""
    import torch

    gen = torch.Generator().manual_seed(10_007 + seed)  # a stream of its own
    return torch.randperm(dim, generator=gen)


def load_dataset(config: DataSection) -> ImageData:
    """Build or read the dataset a data config names, on the CPU.

    The registry's reader for data.name runs; files it returns as they are go through
    :func:`imprint.data.files.finish` (task, classes, split, fraction, normalisation).
    An unregistered name is a DataError listing the registered ones.
    """
    from imprint.data.registry import dataset_for

    dataset = dataset_for(getattr(config, "name", None))
    if not isinstance(config, dataset.config):
        raise DataError(
            f"data.name = {config.name!r} needs a {dataset.config.__name__} config. "
            f"Got {type(config).__name__}."
        )
    data = dataset.read(config)
    if not isinstance(data, ImageData):
        from imprint.data.files import finish

        data = finish(data, config)  # type: ignore[arg-type]  # raw files: a FileOptions
    _check_loaded(data, config)
    shift = getattr(config, "shift", 0)
    if shift:
        channels, height, width = data.shape
        if shift >= min(height, width):
            raise DataError(
                f"data.shift = {shift} moves {height}x{width} images out of sight: it must be "
                f"smaller than {min(height, width)}."
            )
        if getattr(config, "permute_pixels", False):
            raise DataError(
                "data.shift moves images in their 2-D geometry, which data.permute_pixels "
                "hides: use one of the two."
            )
        data = dataclasses.replace(data, shift=shift)
    if getattr(config, "permute_pixels", False):
        data = data.permuted(pixel_permutation(data.input_dim, getattr(config, "seed", 0)))
    return data


def _check_loaded(data: ImageData, config: DataSection) -> None:
    """What no reader may hand to training: NaN or infinite inputs (in the images, the
    mean image or the scale), or a task with fewer than two classes."""
    import torch

    name = getattr(config, "name", "data")
    for what, value in (
        ("training images", data.x_train),
        ("validation images", data.x_val),
        ("mean image (offset)", data.offset),
        ("scale", data.scale),
    ):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise DataError(f"data.name = {name!r}: the {what} hold NaN or infinite values.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise DataError(f"data.name = {name!r}: the {what} is {value}.")
    if data.num_classes < 2:
        raise DataError(
            f"data.name = {name!r}: the task has {data.num_classes} class(es); "
            "classification needs at least 2 (check data.classes, data.task, data.mapping_file)."
        )
