"""Benchmark: the cost of in-round checkpoints, rounds with and without them side by side.

    PYTHONPATH=src python benchmarks/checkpoints.py [--steps N] [--every K] [--reps 3]
                                                    [--device auto]

The paper's FCN 3072-1024-1024-1024-1000 at batch 1000 on uint8 images (first pruned
round's masks, momentum 0.9 so the momentum buffers are saved too) trains ``--steps``
steps with ``train.checkpoint_every = 0`` and with ``--every``, the checkpoints
written to RUN/checkpoint.safetensors of a temporary run folder exactly as
``imprint run`` writes them (CPU copies, safetensors, fsync, rename). The two are
interleaved ``--reps`` times; the best of each gives the cost of one checkpoint, and
from it the share of a round that checkpoints take at the default interval (5,000
steps) and at ``--every``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from training import _sync, first_round_masks, header, make_model, paper_data

from imprint.config import TrainConfig
from imprint.imp import resolve_device
from imprint.runs import RunFolder
from imprint.train import TrainingState, train_round

PAPER_HIDDEN = [1024, 1024, 1024]
DEFAULT_EVERY = TrainConfig().checkpoint_every


def timed_round(data, model, masks, config: TrainConfig, folder: RunFolder | None) -> float:
    """Seconds of one round from the same start; checkpoints go to ``folder``."""
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def save(state: TrainingState) -> None:
        folder.save_checkpoint(state.tensors, {"round": 0, **state.metadata()})

    gen = torch.Generator(device=data.x_train.device).manual_seed(0)
    _sync(data.x_train.device)
    began = time.perf_counter()
    train_round(model, masks, data, config, gen, on_checkpoint=save if folder else None)
    _sync(data.x_train.device)
    seconds = time.perf_counter() - began
    model.load_state_dict(start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, help="steps per round (CPU 60, GPU 3000)")
    parser.add_argument("--every", type=int, help="checkpoint interval (a quarter round)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    steps = args.steps or (3000 if device.type == "cuda" else 60)
    every = args.every or steps // 4
    header(device)

    data = paper_data(device)
    model = make_model(data, PAPER_HIDDEN).to(device)
    masks = {k: v.to(device) for k, v in first_round_masks(model, torch.Generator()).items()}
    base = TrainConfig(
        steps=steps, batch_size=1000, momentum=0.9, eval_every=steps, eval_batch_size=10_000
    )
    plain = base.model_copy(update={"checkpoint_every": 0})
    checked = base.model_copy(update={"checkpoint_every": every})
    with tempfile.TemporaryDirectory() as tmp:
        folder = RunFolder(tmp)
        timed_round(data, model, masks, checked, folder)  # warm-up, the first file
        size = folder.checkpoint_path.stat().st_size
        without, with_ = [], []
        for _ in range(args.reps):
            without.append(timed_round(data, model, masks, plain, None))
            with_.append(timed_round(data, model, masks, checked, folder))
    count = (steps - 1) // every
    step = min(without) / steps
    per_checkpoint = max(min(with_) - min(without), 0.0) / count
    print(
        f"paper FCN, batch 1000, momentum 0.9: {steps} steps, {count} checkpoints of "
        f"{size / 2**20:.1f} MiB each"
    )
    print(f"  round without checkpoints: best {min(without):8.3f} s  ({step * 1e3:.2f} ms/step)")
    print(f"  round with checkpoints:    best {min(with_):8.3f} s")
    print(f"  one checkpoint:                 {per_checkpoint:8.3f} s")
    for interval in sorted({every, DEFAULT_EVERY}):
        share = per_checkpoint / (per_checkpoint + interval * step)
        print(f"  share of training time at checkpoint_every = {interval}: {share:.2%}")


if __name__ == "__main__":
    main()
