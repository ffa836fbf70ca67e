"""Datasets held in memory as flat channel-major tensors, normalised per batch.

Every dataset, built-in or read from disk, becomes an :class:`ImageData`: images as
(N, C*H*W) tensors (uint8 for real images, float32 for generated ones) with
index p = c*H*W + y*W + x, 0-based labels, and the affine normalisation that the
training step applies to each batch on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from imprint.config import CIFARData, FileData, ImageNetData, MNISTData, NLGPData

__all__ = ["DataError", "ImageData", "load_dataset", "pixel_permutation"]


class DataError(ValueError):
    """A data file or data option that cannot be used; the message names it."""


@dataclass(frozen=True)
class ImageData:
    x_train: torch.Tensor  # (N_train, D) uint8 or float32
    y_train: torch.Tensor  # (N_train,) int64 in [0, num_classes)
    x_val: torch.Tensor  # (N_val, D)
    y_val: torch.Tensor  # (N_val,)
    shape: tuple[int, int, int]  # (C, H, W); D = C*H*W
    num_classes: int
    offset: torch.Tensor | None = None  # (D,) subtracted before scaling (the mean image)
    scale: float | torch.Tensor = 1.0  # a number, or (D,) per input (channel standardisation)
    # Network input j holds image pixel permutation[j] (the geometry-hiding control).
    permutation: torch.Tensor | None = None  # (D,) int64

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) stored images -> (B, D) float32 network inputs."""
        x = x.float()
        if self.offset is not None:
            x = x - self.offset
        if isinstance(self.scale, torch.Tensor) or self.scale != 1.0:
            x = x * self.scale
        return x

    def to(self, device: torch.device | str) -> ImageData:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_val=move(self.x_val),
            y_val=move(self.y_val),
            offset=move(self.offset),
            scale=move(self.scale) if isinstance(self.scale, torch.Tensor) else self.scale,
            permutation=move(self.permutation),
        )

    def permuted(self, permutation: torch.Tensor) -> ImageData:
        """The same data with pixel positions shuffled: input j <- pixel permutation[j]."""
        offset = None if self.offset is None else self.offset[permutation]
        scale = self.scale[permutation] if isinstance(self.scale, torch.Tensor) else self.scale
        return replace(
            self,
            x_train=self.x_train[:, permutation],
            x_val=self.x_val[:, permutation],
            offset=offset,
            scale=scale,
            permutation=permutation,
        )


def pixel_permutation(dim: int, seed: int) -> torch.Tensor:
    """The fixed seeded permutation of input positions used by the permutation control."""
    gen = torch.Generator().manual_seed(10_007 + seed)  # a stream of its own
    return torch.randperm(dim, generator=gen)


def load_dataset(config: NLGPData | FileData) -> ImageData:
    """Build or read the dataset a config names, on the CPU."""
    if isinstance(config, NLGPData):
        from imprint.data.synthetic import make_nlgp_dataset

        data = make_nlgp_dataset(config)
    else:
        from imprint.data.files import finish

        data = finish(read_raw(config), config)
    if config.permute_pixels:
        data = data.permuted(pixel_permutation(data.input_dim, config.seed))
    return data


def read_raw(config: FileData):
    """The files of an on-disk dataset as they are (imprint.data.files.RawData)."""
    if isinstance(config, ImageNetData):
        from imprint.data.imagenet import read_imagenet

        return read_imagenet(config)
    if isinstance(config, CIFARData):
        from imprint.data.cifar import read_cifar

        return read_cifar(config)
    if isinstance(config, MNISTData):
        from imprint.data.mnist import read_mnist

        return read_mnist(config)
    from imprint.data.folder import read_folder

    return read_folder(config)
