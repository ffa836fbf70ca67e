"""Benchmark: peak resident memory and time of loading and training on a full-size
ImageNet32/64-format folder (random bytes), as a separate process each.

    PYTHONPATH=src python benchmarks/data_memory.py --make DIR [--size imagenet32]
    PYTHONPATH=src python benchmarks/data_memory.py DIR [--size imagenet32] [--steps 200]

``--make`` writes ten pickled train batches (1,281,167 images in all, as the real
files hold) and val_data (50,000 images) of random bytes into DIR: 3.9 GB for
ImageNet32, 15.7 GB for ImageNet64. Without it, the folder is measured:

* ``imprint data check`` on configs/paper/imagenet32_classes.toml (data.name and
  data.root set to the folder): load time and peak resident memory;
* ``imprint run`` of the same config, 2 rounds of ``--steps`` steps (batch 1000,
  validation every 100 steps on the held-out 10,000 images), peak and time.

Peak resident memory is the process's maximum resident set (getrusage of the child),
printed against the bytes of the uint8 training images.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_VAL, BATCHES = 1_281_167, 50_000, 10
SIDES = {"imagenet32": 32, "imagenet64": 64}


def make(folder: Path, side: int) -> None:
    """Ten train batches and val_data of random bytes, pickled as the real files are."""
    folder.mkdir(parents=True, exist_ok=True)
    dim = 3 * side * side
    rng = np.random.default_rng(0)
    sizes = [N_TRAIN // BATCHES + (1 if i < N_TRAIN % BATCHES else 0) for i in range(BATCHES)]
    for index, n in enumerate(sizes, start=1):
        batch = {
            "data": rng.integers(0, 256, size=(n, dim), dtype=np.uint8),
            "labels": rng.integers(1, 1001, size=n).tolist(),
            "mean": np.full(dim, 127.5),
        }
        with open(folder / f"train_data_batch_{index}", "wb") as handle:
            pickle.dump(batch, handle, protocol=4)
        print(f"  wrote train_data_batch_{index} ({n} images)", flush=True)
        del batch
    val = {
        "data": rng.integers(0, 256, size=(N_VAL, dim), dtype=np.uint8),
        "labels": rng.integers(1, 1001, size=N_VAL).tolist(),
    }
    with open(folder / "val_data", "wb") as handle:
        pickle.dump(val, handle, protocol=4)


def measured(command: list[str]) -> tuple[float, float, int]:
    """(seconds, peak resident GB, exit status) of ``command`` as a child process."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over children
    return seconds, peak_kb / 2**20, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", default="imagenet32", choices=sorted(SIDES))
    parser.add_argument("--make", action="store_true", help="write the folder, then stop")
    parser.add_argument("--steps", type=int, default=200, help="steps per round of the run")
    args = parser.parse_args()
    side = SIDES[args.size]
    if args.make:
        make(args.folder, side)
        return
    data_gb = N_TRAIN * 3 * side * side / 1e9
    print(f"{args.size}-format folder {args.folder}: training images {data_gb:.2f} GB (uint8)")
    config = str(ROOT / "configs" / "paper" / "imagenet32_classes.toml")
    sets = ["--set", f"data.name={args.size}", "--set", f'data.root="{args.folder}"']
    imprint = [sys.executable, "-m", "imprint"]
    # Children run one at a time; RUSAGE_CHILDREN keeps the largest, so measure the
    # smaller job first.
    seconds, peak, status = measured([*imprint, "data", "check", config, *sets])
    print(
        f"  data check: {seconds:6.1f} s, peak resident {peak:5.2f} GiB "
        f"({peak * 2**30 / (data_gb * 1e9):.2f}x the data), exit {status}"
    )
    with tempfile.TemporaryDirectory() as out:
        run = [
            *imprint,
            "run",
            config,
            "--out",
            str(Path(out) / "run"),
            "--quiet",
            "--device",
            "cpu",
            *sets,
            "--set",
            f"train.steps={args.steps}",
            "--set",
            "prune.rewind_step=10",
            "--set",
            "prune.max_rounds=1",
        ]
        seconds, peak, status = measured(run)
    print(
        f"  run, 2 rounds of {args.steps} steps: {seconds:6.1f} s, peak resident {peak:5.2f} GiB "
        f"({peak * 2**30 / (data_gb * 1e9):.2f}x the data), exit {status}"
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"  memory of this machine: {memory:.1f} GiB")


if __name__ == "__main__":
    main()
