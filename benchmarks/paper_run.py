"""Benchmark: two IMP rounds of the paper's FCN on full-size random 32x32x3 data.

    PYTHONPATH=src python benchmarks/paper_run.py [--device cuda] [--steps 2000]
                                                  [--sparse auto] [--quick]

The paper's architecture (3072-1024-1024-1024-1000, BN on every linear layer's
input) at its batch (1000), validation every 100 steps on 10,000 held-out images, on
random uint8 images of ImageNet32's full size (1,281,167 training images, 3.9 GB)
held on the device; ``--quick``: 5,000 images, 1,000 for validation, 4 steps a round.
Round 0 trains dense; round 1 after pruning every hidden layer by magnitude to
``--density`` (default 1.38%, the paper's study round; rewound to step 0), where a
sparse engine has something to skip. Printed per
round: steps per second including the validations; then the extrapolated time of a
full paper run (21 rounds of 100,000 steps at the mean rate of the two rounds; later
rounds are sparser than round 1, so on a sparse engine this overestimates).
"""

from __future__ import annotations

import argparse
import time

import torch
from training import header, random_images

from imprint.config import TrainConfig
from imprint.engine import retain_freed_memory
from imprint.model import FCN
from imprint.prune import apply_masks, full_masks, magnitude_prune
from imprint.train import train_round

HIDDEN = [1024, 1024, 1024]
ROUNDS, ROUND_STEPS = 21, 100_000
N_TRAIN = 1_281_167


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, help="steps per round (default 2000; quick 20)")
    parser.add_argument("--sparse", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--density", type=float, default=0.0138, help="round 1's density")
    parser.add_argument("--quick", action="store_true", help="5,000 images, 4 steps a round")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    if device.type == "cpu":
        retain_freed_memory()
    steps = args.steps or (4 if args.quick else 2000)
    header(device)
    started = time.perf_counter()
    n_train, n_val = (5_000, 1_000) if args.quick else (N_TRAIN, 10_000)
    data = random_images(device, (3, 32, 32), 1000, n_train, n_val)
    print(
        f"data: {data.x_train.shape[0]} training images on {device} in "
        f"{time.perf_counter() - started:.1f} s"
    )
    config = TrainConfig(
        steps=steps,
        batch_size=1000,
        eval_every=min(100, max(1, steps // 2)),
        eval_batch_size=n_val,
        sparse=args.sparse,
        precision=args.precision,
        checkpoint_every=0,
    )
    model = FCN(data.input_dim, HIDDEN, 1000)
    model.reset_parameters(torch.Generator().manual_seed(0))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(device)
    masks = {k: v.to(device) for k, v in full_masks(model.state_dict()).items()}
    speeds = []
    for index in range(2):
        gen = torch.Generator(device=device).manual_seed(index)
        result = train_round(model, masks, data, config, gen)
        rate = steps / result.seconds
        speeds.append(rate)
        density = float(masks["layers.0.weight"].float().mean())
        print(
            f"round {index}: hidden density {density:.1%}, sparse layers {result.sparse_layers}, "
            f"{rate:.1f} steps/s with validation, best val. top-1 {result.best_top1:.4f}"
        )
        if index == 0:
            state = {k: v.cpu() for k, v in model.state_dict().items()}
            cpu_masks = {k: v.cpu() for k, v in masks.items()}
            rates = {layer: 1.0 - args.density for layer in range(3)}
            pruned = magnitude_prune(state, cpu_masks, rates)
            model.load_state_dict(apply_masks(init, pruned))
            masks = {k: v.to(device) for k, v in pruned.items()}
    mean_rate = sum(speeds) / len(speeds)
    hours = ROUNDS * ROUND_STEPS / mean_rate / 3600
    print(
        f"a full paper run ({ROUNDS} rounds x {ROUND_STEPS:,} steps) at "
        f"{mean_rate:.1f} steps/s: {hours:.1f} h ({hours / 24:.2f} days)"
    )
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
