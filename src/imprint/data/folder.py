"""Users' own images: one folder per class of PNG/JPEG files, resized on load.

``root/<class>/*.png|jpg|jpeg``, classes sorted by folder name (label 0 first); or
``root/train/<class>/`` and ``root/val/<class>/`` with the same class folders, the
second being the official validation set.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from imprint.data.base import DataError, Dataset, FileOptions, refuse_superclasses

if TYPE_CHECKING:
    import numpy as np

    from imprint.data.files import RawData

__all__ = ["FolderData", "read_folder", "IMAGE_SUFFIXES", "DATASET"]


class FolderData(FileOptions):
    """A folder per class of PNG/JPEG images (root/<class>/*.png), resized on load.

    With root/train/<class>/ and root/val/<class>/ the val folder is the official
    validation set; otherwise set data.val_source = 'train'.
    """

    name: Literal["folder"] = "folder"
    root: str = "data/images"
    height: Annotated[int, Field(ge=2, le=512)] = 32
    width: Annotated[int, Field(ge=2, le=512)] = 32
    channels: Literal[1, 3] = 3

    @model_validator(mode="after")
    def _no_superclasses(self) -> FolderData:
        refuse_superclasses(self.name, self.task)
        return self


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _classes(root: Path) -> list[str]:
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise DataError(f"{root}: expected one folder per class (at least 2). Got {names}.")
    return names


def _load(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the reader forever
            raise DataError(f"{path} is not a regular file (expected an image).")
        with Image.open(path) as opened:
            image = opened.convert("RGB" if channels == 3 else "L")
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} is not a readable image ({error}).") from None
    if channels == 1:
        array = array[None]  # (1, H, W)
    else:
        array = np.transpose(array, (2, 0, 1))  # (3, H, W): channel-major like the others
    return array.reshape(-1)


def _read_split(root: Path, classes: list[str], shape) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    xs, ys = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{folder} does not exist; the class folders must match.")
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                xs.append(_load(path, shape))
                ys.append(label)
    if not xs:
        raise DataError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} image found in the class folders.")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def read_folder(config: FolderData) -> RawData:
    import numpy as np

    from imprint.data.files import RawData

    root = Path(config.root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder of class folders.")
    shape = (config.channels, config.height, config.width)
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = _classes(root / "train")
        x_train, y_train = _read_split(root / "train", classes, shape)
        x_val, y_val = _read_split(root / "val", classes, shape)
        return RawData(x_train, y_train, x_val, y_val, shape, len(classes))
    classes = _classes(root)
    x_train, y_train = _read_split(root, classes, shape)
    # Files are listed class by class: shuffle once (seeded) so that a held-out
    # validation tail and a "first fraction" cover every class.
    order = np.random.default_rng(config.seed).permutation(x_train.shape[0])
    return RawData(x_train[order], y_train[order], None, None, shape, len(classes))


DATASET = Dataset(
    config=FolderData,
    read=read_folder,
    shape="(channels, height, width), default (3, 32, 32)",
    files="root/<class>/*.png|jpg, or root/train/<class>/ and root/val/<class>/",
    options="height, width, channels (images are resized)",
)
