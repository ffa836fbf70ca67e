"""The built-in classification task: classes of NLGP (or clone) images that differ in
their correlation lengths (xi_x, xi_y)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from imprint.data.base import DataError, DataSection, Dataset, ImageData, PositiveInt

__all__ = ["NLGPData", "make_nlgp_dataset", "DATASET"]


class NLGPData(DataSection):
    """The non-linear Gaussian process of Ingrosso & Goldt, or its Gaussian clone.

    Each class is a pair of correlation lengths (xi_x, xi_y); pixels have unit variance.
    """

    name: Literal["nlgp"] = "nlgp"
    # "nlgp": x = erf(g z / sqrt 2) / sqrt(gamma); "gaussian": same covariance, no higher cumulants.
    process: Literal["nlgp", "gaussian"] = "nlgp"
    gain: Annotated[float, Field(gt=0.0)] = 10.0  # g = 10: nearly binary, sharp-edged images
    height: Annotated[int, Field(ge=2, le=256)] = 12
    width: Annotated[int, Field(ge=2, le=256)] = 12
    channels: Annotated[int, Field(ge=1, le=4)] = 1
    # Correlation of the latent field between channels (colour images); 0 = independent.
    channel_correlation: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    # One (xi_x, xi_y) per class; the default is the anisotropic four-class task.
    class_xi: list[tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]] = [
        (0.7, 3.0),
        (3.0, 0.7),
        (0.7, 0.7),
        (3.0, 3.0),
    ]
    n_train: PositiveInt = 50_000
    n_val: PositiveInt = 10_000
    # A test set drawn after the validation set, only reported (three splits: selection
    # on the validation set); 0: none, selection and the reported accuracy both on the
    # validation set (the paper's two splits).
    n_test: Annotated[int, Field(ge=0)] = 10_000
    seed: Annotated[int, Field(ge=0)] = 0
    # A fixed seeded permutation of pixel positions hides the geometry from the network.
    permute_pixels: bool = False

    @model_validator(mode="after")
    def _two_classes(self) -> NLGPData:
        if len(self.class_xi) < 2:
            raise ValueError(
                f"data.class_xi must list at least 2 classes. Got {len(self.class_xi)}."
            )
        return self


def make_nlgp_dataset(config: NLGPData) -> ImageData:
    """Balanced classes, shuffled; training and validation sets drawn independently."""
    import torch

    from imprint.data.nlgp import sample_gaussian_clone, sample_nlgp

    shape = (config.channels, config.height, config.width)
    _check_size(config)
    sampler = sample_nlgp if config.process == "nlgp" else sample_gaussian_clone
    gen = torch.Generator().manual_seed(config.seed)
    n_classes = len(config.class_xi)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        counts = [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]
        xs = [
            sampler(count, shape, xi, config.gain, gen, rho=config.channel_correlation)
            for count, xi in zip(counts, config.class_xi)
        ]
        ys = [torch.full((count,), c, dtype=torch.int64) for c, count in enumerate(counts)]
        order = torch.randperm(n, generator=gen)
        return torch.cat(xs)[order], torch.cat(ys)[order]  # (n, D), (n,)

    x_train, y_train = draw(config.n_train)
    x_val, y_val = draw(config.n_val)
    test = draw(config.n_test) if config.n_test else (None, None)
    return ImageData(
        x_train,
        y_train,
        x_val,
        y_val,
        shape=shape,
        num_classes=n_classes,
        x_test=test[0],
        y_test=test[1],
        splits={
            "validation": "drawn after the training set",
            "test": "drawn after the validation set" if config.n_test else "none",
        },
    )


def _check_size(config: NLGPData) -> None:
    """Refuse, before sampling, a task larger than the memory available: per image and
    pixel the float64 latent field, its transform and the float32 result (~32 bytes);
    the Gaussian clone's D x D covariance and Cholesky factor in float64 besides."""
    from imprint.machine import host_available_bytes

    pixels = config.channels * config.height * config.width
    need = 32 * pixels * (config.n_train + config.n_val + config.n_test)
    if config.process == "gaussian":
        need += 24 * pixels * pixels
    have = host_available_bytes()
    if have is not None and need > have:
        raise DataError(
            f"data.n_train = {config.n_train}, data.n_val = {config.n_val} images of "
            f"{config.channels}x{config.height}x{config.width}: sampling needs about "
            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB available. Use "
            "fewer or smaller images."
        )


DATASET = Dataset(
    config=NLGPData,
    read=make_nlgp_dataset,
    shape="(channels, height, width), default (1, 12, 12)",
    files="nothing: generated from data.seed",
    options="process (nlgp|gaussian), gain, height, width, channels, channel_correlation, "
    "class_xi, n_train, n_val",
)
