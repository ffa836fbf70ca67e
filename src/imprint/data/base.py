"""What every dataset reader shares, with no import back into the package or the config.

- :class:`DataError`, the one error type of bad data files and options;
- :class:`ImageData`, what every dataset becomes: (N, C*H*W) tensors (uint8 for real
  images, float32 for generated ones) with index p = c*H*W + y*W + x, 0-based labels,
  and the affine normalisation that the training step applies to each batch;
- :class:`DataSection` and :class:`FileOptions`, the bases of the data configs (the
  options shared by every on-disk dataset);
- :class:`Dataset`, the declaration a reader module makes (its config class, its reader
  function and what ``imprint datasets`` prints), collected by :mod:`imprint.data.registry`.

The config imports this module (to build its union of data configs), so it imports
neither torch nor numpy at module level: ``imprint --help`` stays fast.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import torch

__all__ = [
    "DataError",
    "ImageData",
    "DataSection",
    "FileOptions",
    "PositiveInt",
    "refuse_superclasses",
    "refuse_wrong_kinds",
    "Dataset",
    "dataset_names",
]


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
    shift: int = 0  # training images moved by up to this many pixels per batch (data.shift)
    # A held-out test set, only reported (selection uses the validation set); None when
    # the data has none (the paper's splits: validation on the official set).
    x_test: torch.Tensor | None = None  # (N_test, D)
    y_test: torch.Tensor | None = None  # (N_test,)
    # How the splits were made, for data.json: where validation comes from and, when
    # it is held out of training, the seed and a digest of the held-out indices.
    splits: dict[str, Any] = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) stored images -> (B, D) float32 network inputs."""
        import torch

        x = x.float()
        if self.offset is not None:
            x = x - self.offset
        if isinstance(self.scale, torch.Tensor) or self.scale != 1.0:
            x = x * self.scale
        return x

    def to(self, device: torch.device | str) -> ImageData:
        import torch

        def move(t: Any) -> Any:
            return None if t is None else t.to(device)

        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_val=move(self.x_val),
            y_val=move(self.y_val),
            offset=move(self.offset),
            scale=move(self.scale) if isinstance(self.scale, torch.Tensor) else self.scale,
            permutation=move(self.permutation),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
        )

    def permuted(self, permutation: torch.Tensor) -> ImageData:
        """The same data with pixel positions shuffled: input j <- pixel permutation[j]."""
        import torch

        offset = None if self.offset is None else self.offset[permutation]
        scale = self.scale[permutation] if isinstance(self.scale, torch.Tensor) else self.scale
        return replace(
            self,
            x_train=self.x_train[:, permutation],
            x_val=self.x_val[:, permutation],
            x_test=None if self.x_test is None else self.x_test[:, permutation],
            offset=offset,
            scale=scale,
            permutation=permutation,
        )


# --------------------------------------------------------------------------- configs


class StrictSection(BaseModel):
    """A config section: frozen, unknown keys refused, defaults validated, every float
    finite, and true/false refused where a number is expected."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, document: Any) -> Any:
        refuse_wrong_kinds(cls, document)
        return document


class DataSection(StrictSection):
    """Base of every data config: frozen, unknown keys refused, defaults validated.

    A data config has a ``name`` field typed ``Literal[...]`` (the values of data.name
    it answers to; the config's union is discriminated on it). Defining
    ``permute_pixels`` and ``seed`` gives it the pixel-permutation control.
    """

    if TYPE_CHECKING:  # declared by every subclass, as a Literal
        name: str

    # Random-shift augmentation (beyond the paper): every training image of a batch is
    # moved by up to `shift` pixels along each axis (drawn per sample; the border filled
    # with zeros), in the batch sampler. 0: the images as they are.
    shift: Annotated[int, Field(ge=0, le=64)] = 0


def refuse_wrong_kinds(model: type[BaseModel], document: Any) -> None:
    """Refuse true/false, or a string, (or a list holding one) for a number: Python
    counts True as 1, so `train.steps = true` would otherwise run 1 step, and pydantic
    would read `batch_size = "64"` as 64. Refuse numbers beyond any meaning too (an
    integer past 2**53, a float past 1e12): they overflow later, far from the config."""
    if not isinstance(document, dict):
        return
    for name, value in document.items():
        field = model.model_fields.get(name)
        if field is None:
            continue
        values = list(_flatten(value))
        if not _admits(field.annotation, bool) and any(isinstance(v, bool) for v in values):
            raise WrongValue(name, value, "must be a number, not true or false")
        if not _admits(field.annotation, str) and any(isinstance(v, str) for v in values):
            raise WrongValue(name, value, "must be a number, not a string")
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53:
                raise WrongValue(name, value, "is beyond 2**53, not a meaningful value")
            if isinstance(v, float) and math.isfinite(v) and abs(v) > 1e12:
                raise WrongValue(name, value, "is beyond 1e12, not a meaningful value")


def _flatten(value: Any) -> Any:
    """The scalars of a value, through nested lists ([[0.7, 3.0], ...])."""
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


class WrongValue(ValueError):
    """A value of the wrong kind for its field (true/false or a string for a number, a
    number beyond meaning); the config loader prefixes the section and the origin."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"'{field}' {reason}. Got {value!r}.")


def _admits(annotation: Any, kind: type) -> bool:
    """Whether a field's type accepts values of ``kind`` (str also through a Literal of
    strings)."""
    if annotation is kind or annotation is Any:
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(arg, kind) for arg in typing.get_args(annotation))
    return any(_admits(arg, kind) for arg in typing.get_args(annotation))


PositiveInt = Annotated[int, Field(gt=0)]


class FileOptions(DataSection):
    """Options shared by datasets read from disk: where, which task, how much, how normalised.

    A reader whose config subclasses this returns the files as they are
    (:class:`imprint.data.files.RawData`); :func:`imprint.data.files.finish` applies
    these options.
    """

    root: str = "data"
    # "classes": the dataset's own labels; "superclasses": the dataset's table of
    # meaningful groups (ImageNet: the paper's 10; Fashion-MNIST: tops, bottoms, footwear,
    # bags); "modulo_superclasses": the same labels grouped by label mod (number of
    # superclasses), the meaningless control; "modulo": label mod k (the paper's control);
    # "mapping": labels from data.mapping_file (CSV: label,target).
    task: Literal["classes", "superclasses", "modulo_superclasses", "modulo", "mapping"] = "classes"
    modulo: Annotated[int, Field(ge=2)] = 10
    mapping_file: str | None = None
    # Keep only these original (0-based) labels; with task "classes" they become 0..n-1.
    classes: list[Annotated[int, Field(ge=0)]] | None = None
    # Subsample every class of the task to the size of the smallest, each class taking
    # an equal share of each of its original labels (their first images), in the
    # training and the validation set: superclasses of unequal sizes become balanced.
    balance: bool = False
    train_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    # "first": the first fraction of the training files, as the paper; "random": seeded.
    fraction_mode: Literal["first", "random"] = "first"
    # "train" (three splits): n_val training images drawn at random (data.seed), held
    # out before taking the fraction, for selection; the official set, where the format
    # has one, becomes the test set, only reported, never used to choose. "official":
    # the paper's two splits, the first n_val images of the official set used both to
    # choose and to report (no test set).
    val_source: Literal["official", "train"] = "train"
    n_val: PositiveInt = 10_000
    # "paper": (x - mean image) / 255; "channel": per-channel standardisation.
    normalization: Literal["paper", "channel"] = "paper"
    # Drop this many pixels at each border of every channel (28x28 with crop 2 becomes
    # 24x24): the control for near-constant border pixels.
    crop: Annotated[int, Field(ge=0)] = 0
    permute_pixels: bool = False
    seed: Annotated[int, Field(ge=0)] = 0  # random fraction and the pixel permutation

    @model_validator(mode="after")
    def _task_options(self) -> FileOptions:
        if self.task == "mapping" and not self.mapping_file:
            raise ValueError("data.mapping_file must name a CSV file when data.task = 'mapping'.")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError(f"data.classes must not repeat a label. Got {self.classes}.")
        if self.classes is not None and len(self.classes) < 2:
            raise ValueError(f"data.classes must keep at least 2 labels. Got {self.classes}.")
        return self


# Each dataset with a table of meaningful superclasses ships it as package data: a CSV
# with columns label (0-based) and superclass; a label it leaves out is not used by the
# superclass tasks.
SUPERCLASS_TABLES = {
    "imagenet32": ("imagenet_10_superclasses.csv", 1000),
    "imagenet64": ("imagenet_10_superclasses.csv", 1000),
    "fashion_mnist": ("fashion_mnist_superclasses.csv", 10),
}


def refuse_superclasses(name: str, task: str) -> None:
    """The superclass tasks need the dataset's table (SUPERCLASS_TABLES)."""
    if task in ("superclasses", "modulo_superclasses") and name not in SUPERCLASS_TABLES:
        have = ", ".join(sorted(SUPERCLASS_TABLES))
        raise ValueError(
            f"data.task = {task!r} needs a table of superclasses; data.name = '{name}' has "
            f"none (datasets with one: {have}; use 'mapping' with a CSV file)."
        )


def dataset_names(config: type[BaseModel]) -> tuple[str, ...]:
    """The data.name values a data config class answers to (its ``name`` Literal)."""
    field = config.model_fields.get("name")
    args = typing.get_args(field.annotation) if field is not None else ()
    if (
        field is None
        or typing.get_origin(field.annotation) is not Literal
        or not all(isinstance(a, str) for a in args)
    ):
        raise TypeError(
            f"{config.__qualname__} must have a field 'name: Literal[...]' of strings "
            "(the data.name values it answers to)."
        )
    return args


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Dataset:
    """A reader module's declaration: ``DATASET = Dataset(...)``, listed in the registry.

    ``read(config)`` returns either an :class:`ImageData` (used as it is: a generated
    dataset) or, for a config subclassing :class:`FileOptions`, the files as they are
    (:class:`imprint.data.files.RawData`), to which :func:`imprint.data.files.finish`
    applies the shared options. Readers import numpy and torch inside ``read`` (the
    config imports the reader modules). ``shape``, ``files`` and ``options`` are what
    ``imprint datasets`` prints: the input shape, what data.root must hold, and the
    options beyond the shared ones.
    """

    config: type[DataSection]
    read: Callable[[Any], Any]
    shape: str
    files: str
    options: str = "-"

    def __post_init__(self) -> None:
        dataset_names(self.config)  # a config without a Literal name fails at declaration

    @property
    def names(self) -> tuple[str, ...]:
        return dataset_names(self.config)

    @property
    def on_disk(self) -> bool:
        return issubclass(self.config, FileOptions)
