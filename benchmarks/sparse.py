"""Benchmark: the sparse engine against the dense engine, step time against density.

    PYTHONPATH=src python benchmarks/sparse.py [--reps 5] [--seconds 0.3] [--quick]
                                               [--device cpu|cuda] [--nets paper,fashion]

For each net (the paper FCN 3072-1024-1024-1024-1000 at batch 1000, and the
Fashion-MNIST net 784-256-256-10 at batch 256, on random uint8 images) and each
density of the hidden layers (100% down to 0.16%; random masks, the output layer
dense), one training step of ``train_replicas`` (batch drawn, step, SGD update) is
timed on three engines, interleaved in one run:

* dense: ``engine.train_step`` + ``MaskedSGD`` (``train.sparse = "off"``);
* sparse: every hidden layer sparse (``train.sparse = "on"`` with a dense output layer);
* auto: the layers ``train.sparse = "auto"`` chooses on this device.

Printed per density: the times, the speed-up of sparse and auto over dense, the
evaluation of validation images (dense and sparse, ms per 1,000 images), the density
limit (the dense step's multiply-adds over those of the live weights: what a
step whose cost followed the density exactly would gain) and the fraction of it
reached. The crossover (the highest density at which the sparse step is faster) is
what ``imprint.sparse.CROSSOVER`` holds for the machine's CPU capability.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from training import best, calls_for, header, interleaved, random_images

from imprint.data import ImageData
from imprint.engine import (
    MaskedSGD,
    ReplicaFCN,
    eval_logits,
    retain_freed_memory,
    step_threads,
    train_step,
)
from imprint.model import FCN
from imprint.prune import full_masks, random_prune
from imprint.sparse import (
    SparseFCN,
    choose_sparse_layers,
    sparse_eval_logits,
    sparse_train_step,
)
from imprint.train import sample_batch

DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.0576, 0.0276, 0.0138, 0.0066, 0.0033, 0.0016)
QUICK_DENSITIES = (0.0576, 0.0033)
EVAL_IMAGES = 2_000  # validation images evaluated per call (timed: ms per 1,000)
NETS = {
    # name: (image shape, classes, hidden, batch)
    "paper": ((3, 32, 32), 1000, [1024, 1024, 1024], 1000),
    "fashion": ((1, 28, 28), 10, [256, 256], 256),
}


def step_job(
    data: ImageData, hidden: list[int], batch: int, density: float, mode: str, replicas: int
) -> tuple[Callable[[], None], Callable[[], object], list[int], float]:
    """One training step of ``replicas`` nets at ``density`` under ``train.sparse =
    mode``; returns the step, the evaluation of the validation images (as
    ``train_replicas`` validates), the sparse layers and the live fraction of the MACs."""
    models, masks = [], []
    for seed in range(replicas):
        model = FCN(data.input_dim, hidden, data.num_classes)
        gen = torch.Generator().manual_seed(seed)
        model.reset_parameters(gen)
        rates = {layer: 1.0 - density for layer in range(len(hidden))}
        mask = random_prune(full_masks(model.state_dict()), rates, gen)
        models.append(model.to(data.x_train.device))
        masks.append(mask)
    device = data.x_train.device
    net = ReplicaFCN(models)
    stacked = {name: torch.stack([m[name] for m in masks]).to(device) for name in masks[0]}
    dims = net.dims
    # "on": every pruned (hidden) layer, even at 100% (then as CSR with every entry)
    layers = (
        list(range(len(hidden)))
        if mode == "on"
        else choose_sparse_layers(mode, stacked, dims, replicas, batch, device)
    )
    gens = [torch.Generator(device=device).manual_seed(s) for s in range(replicas)]
    macs = [a * b for a, b in zip(dims[:-1], dims[1:])]
    live = [float(stacked[f"layers.{k}.weight"].float().mean()) for k in range(len(macs))]
    fraction = sum(m * d for m, d in zip(macs, live)) / sum(macs)
    if not layers:
        sgd = MaskedSGD(net, stacked, 0.01)

        def dense_step() -> None:
            x, y = sample_batch(data, gens, batch)
            sgd.step(train_step(net, x, y, data.offset, data.scale).grads)

        def dense_eval() -> object:
            return eval_logits(net, data.x_val, data.offset, data.scale)

        return dense_step, dense_eval, layers, fraction
    sparse = SparseFCN(net, stacked, layers)
    sparse_sgd = MaskedSGD(sparse, sparse.optimizer_masks(stacked), 0.01)

    def sparse_step() -> None:
        x, y = sample_batch(data, gens, batch)
        sparse_sgd.step(sparse_train_step(sparse, x, y, data.offset, data.scale).grads)
        sparse.sync()

    def sparse_eval() -> object:
        return sparse_eval_logits(sparse, data.x_val, data.offset, data.scale)

    return sparse_step, sparse_eval, layers, fraction


def sweep(
    name: str,
    device: torch.device,
    densities: tuple[float, ...],
    reps: int,
    seconds: float,
    replicas: int,
) -> float | None:
    """The density table of one net; returns the crossover density (None: none)."""
    shape, classes, hidden, batch = NETS[name]
    data = random_images(device, shape, classes, 20_000, EVAL_IMAGES)
    dims = [data.input_dim, *hidden, classes]
    print(
        f"\n{name} FCN {'-'.join(map(str, dims))}, batch {batch}, {replicas} replica(s): "
        "ms per step (best of the repeats)"
    )
    print(
        f"  {'density':>8} {'dense':>9} {'sparse':>9} {'auto':>9} {'sparse x':>9} "
        f"{'auto x':>7} {'limit x':>8} {'of limit':>9} {'eval dense':>11} {'eval sparse':>12}"
        "  auto's sparse layers"
    )
    crossover = None
    with step_threads(dims, replicas, batch, device):
        for density in densities:
            jobs, chosen, fraction = {}, [], 1.0
            for mode in ("off", "on", "auto"):
                step, evaluate, layers, fraction = step_job(
                    data, hidden, batch, density, mode, replicas
                )
                jobs[mode] = (step, calls_for(seconds, step, device))
                if mode != "auto":
                    jobs[f"eval {mode}"] = (evaluate, calls_for(seconds, evaluate, device))
                if mode == "auto":
                    chosen = layers
            times = {k: best(v) * 1e3 for k, v in interleaved(jobs, reps, device).items()}
            gain, auto_gain = times["off"] / times["on"], times["off"] / times["auto"]
            per_1000 = 1000 / EVAL_IMAGES  # evaluation: ms per 1,000 images
            limit = 1.0 / fraction
            print(
                f"  {density:8.2%} {times['off']:9.3f} {times['on']:9.3f} {times['auto']:9.3f} "
                f"{gain:8.2f}x {auto_gain:6.2f}x {limit:7.1f}x {gain / limit:9.1%} "
                f"{times['eval off'] * per_1000:11.2f} {times['eval on'] * per_1000:12.2f}"
                f"  {chosen}"
            )
            if gain > 1.0 and crossover is None:
                crossover = density
    print(f"  crossover (highest density where the sparse step is faster): {crossover}")
    return crossover


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, help="interleaved repeats (default 5; quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per sample (default 0.3)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--nets", default="paper,fashion", help="comma-separated: paper,fashion")
    parser.add_argument("--replicas", type=int, default=1, help="seeds trained together")
    parser.add_argument("--quick", action="store_true", help="3 densities, 2 short repeats")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        retain_freed_memory()
    reps = args.reps or (2 if args.quick else 5)
    seconds = args.seconds or (0.1 if args.quick else 0.3)
    densities = QUICK_DENSITIES if args.quick else DENSITIES
    started = time.perf_counter()
    header(device)
    for name in args.nets.split(","):
        if name not in NETS:
            parser.error(f"--nets: unknown net {name!r}; choose from {', '.join(NETS)}")
        sweep(name, device, densities, reps, seconds, args.replicas)
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
