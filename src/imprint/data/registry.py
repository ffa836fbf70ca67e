"""The datasets imprint knows: one reader module per format, listed here.

Each module in :data:`READERS` defines ``DATASET`` (an :class:`imprint.data.base.Dataset`:
its config class, its reader function, its catalog entry). The config's union of data
configs (``imprint.config.DataConfig``), :func:`imprint.data.load_dataset` and
``imprint datasets`` / ``imprint data check`` are all built from this list, so adding a
format is one new reader module and one line here. The first entry is the built-in
dataset that a [data] table without a name means.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from imprint.data.base import DataError, Dataset

__all__ = ["READERS", "datasets", "dataset_for", "names"]

READERS: tuple[str, ...] = (
    "imprint.data.synthetic",
    "imprint.data.imagenet",
    "imprint.data.cifar",
    "imprint.data.mnist",
    "imprint.data.folder",
)


def datasets() -> tuple[Dataset, ...]:
    """The declared datasets, in registry order."""
    return _collect(tuple(READERS))


@lru_cache(maxsize=8)
def _collect(modules: tuple[str, ...]) -> tuple[Dataset, ...]:
    found: list[Dataset] = []
    owner: dict[str, str] = {}
    for module_name in modules:
        declared = getattr(importlib.import_module(module_name), "DATASET", None)
        if not isinstance(declared, Dataset):
            raise TypeError(
                f"{module_name} is listed in imprint.data.registry.READERS but defines no "
                "DATASET = imprint.data.base.Dataset(...)."
            )
        for name in declared.names:
            if name in owner:
                raise TypeError(
                    f"data.name '{name}' is declared twice: by {owner[name]} and {module_name}."
                )
            owner[name] = module_name
        found.append(declared)
    return tuple(found)


def names() -> tuple[str, ...]:
    """Every registered data.name value, in registry order."""
    return tuple(name for dataset in datasets() for name in dataset.names)


def dataset_for(name: object) -> Dataset:
    """The dataset that answers to data.name ``name``, or a DataError listing the names."""
    for dataset in datasets():
        if name in dataset.names:
            return dataset
    raise DataError(
        f"data.name = {name!r} is not a registered dataset. Registered: {', '.join(names())}."
    )
