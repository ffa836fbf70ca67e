"""Tiny datasets written in the exact on-disk formats (never downloaded)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_pickle(path: Path, obj, bytes_keys: bool = False) -> None:
    if bytes_keys:  # as Python 3 reads the Python 2 originals with encoding='bytes'
        obj = {k.encode(): v for k, v in obj.items()}
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar(root: Path, kind: str = "cifar10", per_file: int = 8, seed: int = 0):
    """Returns the train images and labels as written, and the test ones."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] if kind == "cifar10" else ["train"]
    xs, fine, coarse = [], [], []
    for i, name in enumerate(names + ["test_batch" if kind == "cifar10" else "test"]):
        x = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        if kind == "cifar10":
            y = rng.integers(0, 10, size=per_file).tolist()
            write_pickle(root / name, {"data": x, "labels": y, "batch_label": "b"}, i % 2 == 0)
        else:
            y = rng.integers(0, 100, size=per_file).tolist()
            c = [v // 5 for v in y]
            write_pickle(root / name, {"data": x, "fine_labels": y, "coarse_labels": c})
            coarse.append(c)
        xs.append(x)
        fine.append(y)
    return xs, fine, coarse


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int = 30, n_test: int = 12, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        out[prefix] = (images, labels)
    return out


def write_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 4, size=(10, 12)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # flat colours (JPEG keeps them exactly enough); red encodes the class
            colour = rng.integers(0, 256, size=3, dtype=np.uint8)
            colour[0] = 40 * label
            pixels = np.broadcast_to(colour, (size[0], size[1], 3)).copy()
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(root / name / f"{i}{suffix}")
