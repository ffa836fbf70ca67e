"""Benchmark: imprint's training loop against plain PyTorch loops, side by side.

    PYTHONPATH=src python benchmarks/training.py [--reps 8] [--seconds 0.4] [--threads N]
                                                 [--device auto] [--no-compile] [--quick]

On the machine it runs on, in one run (each measurement a few seconds):

(a) The large-matmul rate: a 4096 x 4096 float32 matmul (8192 on a GPU), the
    machine's practical peak for the work a training step is made of.
(b) The paper's FCN 3072-1024-1024-1024-1000 at batch 1000 on uint8 images, with the
    masks of a first pruned round (70% of the weights and biases of every layer but
    the output one left, random support): the step time of imprint and of the two
    plain loops below, the validation time of each, their ratios, and each one's
    achieved FLOP/s as a fraction of (a). FLOPs counted are those a step needs:
    forward 2 x MACs, weight gradients 2 x MACs, input gradients 2 x MACs for every
    layer but the first (dense MACs).
(c) The default config (configs/default.toml: NLGP 12x12, FCN 144-128-4, batch 256),
    same masks rule and rows; also imprint with ``train.compile = true``
    (``torch.compile`` of the step; its compile time is printed, not timed).
(d) Replicas: R copies of the default config trained as one batched model, aggregate
    steps per second against one replica.
(e) Seeds together: 3 seeds trained as one batched model (``train_replicas`` with 3
    models) against the same 3 seeds trained one after another (3 runs of R = 1, each
    a block of steps before the next starts), aggregate replica-steps per second, on
    the default config and on Fashion-MNIST-sized nets (784 inputs, 1x28x28 uint8
    images, 10 classes, hidden [256, 256] and [512, 512], batch 256). Steps only:
    ``train_replicas`` validates all replicas in one batched pass as well.
(f) On a GPU only: the paper FCN's step time per precision (fp32, tf32, bf16), the
    evaluation time on 10,000 images, and the projected time of a full paper run:
    21 rounds x (100,000 steps + 1,000 validations on 10,000 images).

The two plain loops both use imprint's ``FCN`` module (plain ``nn.BatchNorm1d`` +
``nn.Linear``), masks through ``torch.nn.utils.prune`` (``custom_from_mask`` on every
linear weight and bias), ``torch.optim.SGD`` and ``loss.backward()``, with torch's
threads, and sum the training loss and hits on the device as imprint does (for the
training curves):

* the strong loop, the strongest plain loop a researcher writes: the normalised
  training images held in memory on the device as one float tensor, batches drawn by
  index sampling with replacement (``torch.randint`` from a seeded
  ``torch.Generator``, as imprint draws them), ``zero_grad(set_to_none=True)``,
  ``torch.optim.SGD(foreach=True)`` (one multi-tensor update; the CPU default, a loop
  over the parameters, made the default config's step ~9% slower);
* the DataLoader loop: a ``DataLoader`` with ``shuffle=True`` over a
  ``TensorDataset`` of the normalised float images (on the CPU; batches moved to the
  device), ``zero_grad()``.

imprint's step is the code of ``train_replicas``: ``sample_batch`` +
``engine.train_step`` + ``MaskedSGD.step``, under ``step_threads`` (one thread for
steps below 8M multiply-adds, as the default config's; torch's threads otherwise), and
its validation is ``train_replicas``' own (``_validation_rows``: training sums read
back, every validation image through the evaluation-mode net, loss, top-1, top-5).
The plain loops' validation is what a researcher writes: ``model.eval()``,
``torch.no_grad()``, the normalised validation images held on the device, the same
sums, one read-back; the same code serves both plain loops (measured once).

Validation is counted as it is in a run: every ``train.eval_every`` steps (100 for
the paper and the default config) on the whole validation set (10,000 images for the
paper FCN, 5,000 for the default config), chunks of ``train.eval_batch_size``. Each
side's step and its own validation are measured separately, interleaved, and each
side pays its own validation's per-step share: time per step = step + validation /
eval_every. That is what a block of eval_every steps plus one validation costs,
divided by eval_every, on both sides alike; measuring whole blocks instead would take
~20 s per sample of the paper FCN (100 steps), too long to repeat. Ratios are printed
for the step alone and with the validation share.

Measurements are interleaved (matmul, imprint, the loops, then again) ``--reps`` times;
"best" is the fastest repeat, "typical" the median. On a shared machine other
processes slow every row; the header prints the CPU model, torch's CPU capability
(the vector instructions its kernels use), the thread count, the load average and
OMP_WAIT_POLICY (when another process holds a core, OpenMP's default spin-waiting
makes every parallel elementwise op wait for a time slice, and OMP_WAIT_POLICY=PASSIVE
steadies large ops while slowing small ones: all sides run under the same setting).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

from imprint.config import NLGPData, TrainConfig, load_config
from imprint.data import ImageData, load_dataset
from imprint.engine import MaskedSGD, ReplicaFCN, retain_freed_memory, train_step
from imprint.model import FCN
from imprint.prune import full_masks, random_prune
from imprint.reference import reference_step
from imprint.train import (
    _validation_rows,
    compiled_train_step,
    evaluate,
    precision_context,
    sample_batch,
    step_threads,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_HIDDEN = [1024, 1024, 1024]
PAPER_BATCH = 1000
PAPER_RUN = (21, 100_000, 100, 10_000)  # rounds, steps per round, eval every, val images
FASHION_HIDDEN = ([256, 256], [512, 512])
SEEDS_TOGETHER = 3


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# A sample stops after this many seconds even if its calls are not done, so that a
# busy machine (steps 50x slower for a while) cannot stretch the run without bound.
SAMPLE_CAP_S = 3.0


def _per_call(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    done = 0
    while done < calls:
        fn()
        done += 1
        if time.perf_counter() - start > SAMPLE_CAP_S:
            break
    _sync(device)
    return (time.perf_counter() - start) / done


def interleaved(
    jobs: dict[str, tuple[Callable[[], object], int]], reps: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of every job, ``reps`` samples each, taken in turns."""
    for fn, _ in jobs.values():  # warm-up: allocations, lazy initialisation
        fn()
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(reps):
        for name, (fn, calls) in jobs.items():
            samples[name].append(_per_call(fn, calls, device))
    return samples


def best(samples: list[float]) -> float:
    return min(samples)


def typical(samples: list[float]) -> float:
    return statistics.median(samples)


# ------------------------------------------------------------------------ the three sides


@dataclass
class Loop:
    """One side of the comparison: a training step and a validation, as callables."""

    step: Callable[[], None]
    validate: Callable[[], object]


def first_round_masks(model: FCN, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A first pruned round's masks: 30% of every layer but the output one removed."""
    n_layers = model.n_layers
    return random_prune(
        full_masks(model.state_dict()), {layer: 0.3 for layer in range(n_layers - 1)}, gen
    )


def make_model(data: ImageData, hidden: list[int], seed: int = 0) -> FCN:
    model = FCN(data.input_dim, hidden, data.num_classes)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model


def imprint_loop(
    data: ImageData,
    hidden: list[int],
    batch: int,
    replicas: int = 1,
    lr: float = 0.1,
    compiled: bool = False,
    first_seed: int = 0,
    eval_batch: int = 10_000,
) -> Loop:
    """The step and validation of ``train_replicas`` (data already on its device), R
    replicas seeded ``first_seed``, ``first_seed + 1``, ...; with ``compiled``, the step
    of ``train.compile = true``."""
    device = data.x_train.device
    seeds = range(first_seed, first_seed + replicas)
    models, masks = [], []
    for seed in seeds:
        model = make_model(data, hidden, seed=seed)
        mask = first_round_masks(model, torch.Generator().manual_seed(seed))
        state = model.state_dict()
        with torch.no_grad():
            for name, value in mask.items():
                state[name].mul_(value)
        models.append(model.to(device))
        masks.append(mask)
    net = ReplicaFCN(models)
    stacked = {name: torch.stack([m[name] for m in masks]).to(device) for name in masks[0]}
    optimizer = MaskedSGD(net, stacked, lr)
    gens = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    loss_sum = torch.zeros(replicas, device=device)
    correct_sum = torch.zeros(replicas, device=device)
    step_fn = compiled_train_step() if compiled else train_step
    config = TrainConfig(batch_size=batch, lr=lr, eval_batch_size=eval_batch)

    def step() -> None:
        # train_replicas enters step_threads once per round; here once per step (~3 us).
        with step_threads(net.dims, replicas, batch, device):
            x, y = sample_batch(data, gens, batch)
            result = step_fn(net, x, y, data.offset, data.scale)
            optimizer.step(result.grads)
            loss_sum.add_(result.loss)
            correct_sum.add_(result.correct)

    def validate() -> object:
        # train_replicas validates under step_threads too (the whole round is inside).
        with step_threads(net.dims, replicas, batch, device):
            rows = _validation_rows(net, data, config, 100, loss_sum, correct_sum, 100)
        loss_sum.zero_()
        correct_sum.zero_()
        return rows

    return Loop(step, validate)


def imprint_step(
    data: ImageData,
    hidden: list[int],
    batch: int,
    replicas: int = 1,
    lr: float = 0.1,
    compiled: bool = False,
    first_seed: int = 0,
) -> Callable[[], None]:
    """One step of ``train_replicas`` (see :func:`imprint_loop`)."""
    return imprint_loop(data, hidden, batch, replicas, lr, compiled, first_seed).step


def pruned_model(data: ImageData, hidden: list[int], device: torch.device) -> FCN:
    """imprint's FCN with the first round's masks through ``torch.nn.utils.prune``."""
    model = make_model(data, hidden)
    masks = first_round_masks(model, torch.Generator().manual_seed(0))
    for layer_index, layer in enumerate(model.layers):
        for name in ("weight", "bias"):
            torch_prune.custom_from_mask(layer, name, masks[f"layers.{layer_index}.{name}"])
    return model.to(device).train()


def plain_validation(
    model: FCN,
    data: ImageData,
    loss_sum: torch.Tensor,
    correct_sum: torch.Tensor,
    eval_batch: int = 10_000,
) -> Callable[[], object]:
    """A researcher's validation: eval mode, no_grad, normalised images on the device,
    loss, top-1 and top-5 sums over the validation set, one read-back with the
    training sums (which it resets)."""
    device = data.x_train.device
    x_val = data.normalize(data.x_val).to(device)  # once, before training
    y_val = data.y_val.to(device)
    k = min(5, data.num_classes)

    @torch.no_grad()
    def validate() -> object:
        model.eval()
        loss = torch.zeros((), device=device)
        top1 = torch.zeros((), device=device)
        topk = torch.zeros((), device=device)
        for start in range(0, x_val.shape[0], eval_batch):
            x, y = x_val[start : start + eval_batch], y_val[start : start + eval_batch]
            logits = model(x)
            loss += F.cross_entropy(logits, y, reduction="sum")
            hits = logits.topk(k, dim=1).indices
            top1 += (hits[:, 0] == y).sum()
            topk += (hits == y[:, None]).any(dim=1).sum()
        model.train()
        sums = torch.stack([loss_sum, correct_sum, loss, top1, topk]).tolist()
        loss_sum.zero_()
        correct_sum.zero_()
        return sums

    return validate


def strong_loop(
    data: ImageData,
    hidden: list[int],
    batch: int,
    device: torch.device,
    lr: float = 0.1,
    eval_batch: int = 10_000,
) -> Loop:
    """The strongest plain loop: prune hooks, normalised images on the device, batches by
    seeded index sampling with replacement, autograd, foreach optim.SGD (set_to_none)."""
    model = pruned_model(data, hidden, device)
    images = data.normalize(data.x_train).to(device)  # once, before training
    labels = data.y_train.to(device)
    n_train = images.shape[0]
    gen = torch.Generator(device=device).manual_seed(0)
    # foreach: one multi-tensor update (the CPU default is a loop over the tensors).
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    loss_sum = torch.zeros((), device=device)
    correct_sum = torch.zeros((), device=device)

    def step() -> None:
        idx = torch.randint(n_train, (batch,), generator=gen, device=device)
        _sgd_step(model, optimizer, images[idx], labels[idx], loss_sum, correct_sum)

    return Loop(step, plain_validation(model, data, loss_sum, correct_sum, eval_batch))


def _sgd_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_sum: torch.Tensor,
    correct_sum: torch.Tensor,
) -> None:
    """One step of the plain loops: imprint.reference.reference_step (the definition of
    a training step the engine is tested against; masks here are prune hooks), summing
    the loss and correct answers on the device (no sync per step)."""
    loss, logits = reference_step(model, optimizer, x, y)
    loss_sum.add_(loss)
    correct_sum.add_((logits.argmax(dim=1) == y).sum())


def dataloader_loop(
    data: ImageData,
    hidden: list[int],
    batch: int,
    device: torch.device,
    lr: float = 0.1,
    eval_batch: int = 10_000,
) -> Loop:
    """The DataLoader loop: prune hooks, DataLoader over CPU tensors, autograd,
    optim.SGD."""
    model = pruned_model(data, hidden, device)
    # A researcher normalises once and keeps float images in a TensorDataset.
    images = data.normalize(data.x_train.cpu())
    loader = DataLoader(
        TensorDataset(images, data.y_train.cpu()),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    batches = iter(loader)
    loss_sum = torch.zeros((), device=device)
    correct_sum = torch.zeros((), device=device)

    def step() -> None:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        _sgd_step(model, optimizer, x, y, loss_sum, correct_sum)

    return Loop(step, plain_validation(model, data, loss_sum, correct_sum, eval_batch))


# ----------------------------------------------------------------------------- workloads


def random_images(
    device: torch.device,
    shape: tuple[int, int, int],
    classes: int,
    n_train: int,
    n_val: int,
) -> ImageData:
    """Random uint8 images, normalised as ImageNet32 is: (x - mean image) / 255.
    Content does not change the cost of a dense step."""
    gen = torch.Generator().manual_seed(0)
    dim = shape[0] * shape[1] * shape[2]
    x = torch.randint(0, 256, (n_train, dim), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, classes, (n_train,), generator=gen)
    xv = torch.randint(0, 256, (n_val, dim), generator=gen, dtype=torch.uint8)
    yv = torch.randint(0, classes, (n_val,), generator=gen)
    data = ImageData(x, y, xv, yv, shape, classes, offset=x.float().mean(0), scale=1 / 255)
    return data.to(device)


def paper_data(device: torch.device, n_train: int = 20_000, n_val: int = 10_000) -> ImageData:
    """Random 32x32 RGB images in 1000 classes (ImageNet32's shape)."""
    return random_images(device, (3, 32, 32), 1000, n_train, n_val)


def fashion_data(device: torch.device) -> ImageData:
    """Random 28x28 grey images in 10 classes (Fashion-MNIST's shape and set sizes)."""
    return random_images(device, (1, 28, 28), 10, 60_000, 10_000)


def step_flops(dims: list[int], batch: int) -> float:
    macs = [a * b for a, b in zip(dims[:-1], dims[1:])]
    return batch * (2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:]))


def matmul_job(device: torch.device) -> tuple[Callable[[], object], int, float]:
    n = 8192 if device.type == "cuda" else 4096
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    out = torch.empty(n, n, device=device)
    calls = 10 if device.type == "cuda" else 1
    return (lambda: torch.mm(a, b, out=out)), calls, 2.0 * n**3


def calls_for(seconds: float, step: Callable[[], object], device: torch.device) -> int:
    """Calls of ``step`` filling about ``seconds`` (one timed call decides)."""
    step()
    once = _per_call(step, 1, device)
    return max(1, round(seconds / max(once, 1e-6)))


# ------------------------------------------------------------------------------ report


def cpu_model() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def header(device: torch.device) -> None:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"torch {torch.__version__} with {torch.get_num_threads()} threads, device {device}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"load average (1, 5, 15 min): {load}; OMP_WAIT_POLICY {policy}")


def rate(seconds: float, flops: float) -> str:
    return f"{flops / seconds / 1e9:7.1f} GFLOP/s"


SIDES = {"imprint": "imprint", "strong": "strong loop", "loader": "DataLoader loop"}


def compare(
    title: str,
    data: ImageData,
    hidden: list[int],
    batch: int,
    device: torch.device,
    reps: int,
    seconds: float,
    eval_every: int,
    eval_batch: int,
    with_matmul: bool,
    with_compile: bool = False,
) -> dict[str, float]:
    """Step and validation of imprint and both plain loops, interleaved; returns the
    best step and validation seconds of imprint."""
    dims = [data.input_dim, *hidden, data.num_classes]
    loops = {
        "imprint": imprint_loop(data, hidden, batch, eval_batch=eval_batch),
        "strong": strong_loop(data, hidden, batch, device, eval_batch=eval_batch),
        "loader": dataloader_loop(data, hidden, batch, device, eval_batch=eval_batch),
    }
    jobs: dict[str, tuple[Callable[[], object], int]] = {}
    matmul_flops = 0.0
    if with_matmul:
        mm, mm_calls, matmul_flops = matmul_job(device)
        jobs["matmul"] = (mm, mm_calls)
    compile_seconds = 0.0
    fused = None
    if with_compile:
        fused = imprint_step(data, hidden, batch, compiled=True)
        started = time.perf_counter()
        try:
            fused()  # compiles
        except Exception as error:  # no compiler, no triton...: report, measure the rest
            print(f"  (torch.compile unavailable here: {type(error).__name__}: {error})")
            fused = None
        else:
            compile_seconds = time.perf_counter() - started
    for name, loop in loops.items():
        jobs[name] = (loop.step, calls_for(seconds, loop.step, device))
        if name == "imprint" and fused is not None:
            jobs["+compile"] = (fused, calls_for(seconds, fused, device))
    samples = interleaved(jobs, reps, device)
    # Validations: as many samples, interleaved among themselves (the paper FCN's take
    # ~0.5 s each, one per sample). The plain loops share one validation function; the
    # strong loop's model stands for both.
    val_jobs = {
        name: (loops[name].validate, calls_for(seconds / 4, loops[name].validate, device))
        for name in ("imprint", "strong")
    }
    val_samples = interleaved(val_jobs, reps, device)
    val_samples["loader"] = val_samples["strong"]

    flops = step_flops(dims, batch)
    n_val = data.x_val.shape[0]
    print(
        f"\n{title}: {'-'.join(map(str, dims))}, batch {batch}; validation every "
        f"{eval_every} steps on {n_val:,} images"
    )
    if with_matmul:
        mm_best = matmul_flops / best(samples["matmul"])
        mm_typ = matmul_flops / typical(samples["matmul"])
        print(
            f"  large matmul        {mm_best / 1e9:7.1f} GFLOP/s best, {mm_typ / 1e9:7.1f} typical"
        )
    per_step: dict[str, tuple[float, float]] = {}
    print(f"  {'':16s} {'step [ms] best  typical':>24s}   validation [ms]   step + share [ms]")
    for name in ("imprint", "+compile", "strong", "loader"):
        if name not in samples:
            continue
        b, t = best(samples[name]), typical(samples[name])
        vb = best(val_samples["imprint" if name == "+compile" else name])
        per_step[name] = (b + vb / eval_every, t + vb / eval_every)
        label = SIDES.get(name, name)
        line = (
            f"  {label:16s} {b * 1e3:10.3f} {t * 1e3:10.3f}   {vb * 1e3:13.1f}   "
            f"{per_step[name][0] * 1e3:14.3f}"
        )
        if with_matmul:
            line += (
                f"   {rate(b, flops)} = {flops / b / mm_best:.0%} of matmul "
                f"(typical {flops / t / mm_typ:.0%})"
            )
        print(line)
    if "+compile" in samples:
        print(
            f"  (+compile: imprint with train.compile = true, compiled in {compile_seconds:.0f} s; "
            f"{best(samples['imprint']) / best(samples['+compile']):.2f}x the eager step)"
        )
    for name in ("strong", "loader"):
        step_best = best(samples[name]) / best(samples["imprint"])
        step_typ = typical(samples[name]) / typical(samples["imprint"])
        with_val = per_step[name][0] / per_step["imprint"][0]
        with_val_typ = per_step[name][1] / per_step["imprint"][1]
        print(
            f"  imprint / {SIDES[name]:16s} throughput: step {step_best:.2f}x best "
            f"({step_typ:.2f}x typical); with validation {with_val:.2f}x best "
            f"({with_val_typ:.2f}x typical)"
        )
    return {"step": best(samples["imprint"]), "validation": best(val_samples["imprint"])}


def replicas_report(
    data: ImageData, hidden: list[int], batch: int, device: torch.device, reps: int, seconds: float
) -> None:
    counts = [1, 4, 16] if device.type == "cpu" else [1, 16, 64, 256]
    jobs = {}
    for r in counts:
        step = imprint_step(data, hidden, batch, replicas=r)
        jobs[f"R={r}"] = (step, calls_for(seconds / len(counts) * 2, step, device))
    samples = interleaved(jobs, reps, device)
    one = best(samples["R=1"])
    print(f"\nreplicas of the default config, batch {batch} each (aggregate throughput):")
    for r in counts:
        b, t = best(samples[f"R={r}"]), typical(samples[f"R={r}"])
        print(
            f"  R={r:<4d} {r / b:9.0f} replica-steps/s best ({r / t:9.0f} typical) = "
            f"{r * one / b:5.2f}x one replica"
        )


def seeds_together(
    title: str,
    data: ImageData,
    hidden: list[int],
    batch: int,
    device: torch.device,
    reps: int,
    seconds: float,
) -> None:
    """3 seeds as one batched model against the same 3 seeds run one after another."""
    n = SEEDS_TOGETHER
    together = imprint_step(data, hidden, batch, replicas=n)
    singles = [imprint_step(data, hidden, batch, first_seed=seed) for seed in range(n)]
    steps = max(1, calls_for(seconds / 2, together, device))

    def batched() -> None:
        for _ in range(steps):
            together()

    def sequential() -> None:
        for single in singles:  # run 1's block of steps, then run 2's, then run 3's
            for _ in range(steps):
                single()

    samples = interleaved({"together": (batched, 1), "sequential": (sequential, 1)}, reps, device)
    dims = "-".join(map(str, [data.input_dim, *hidden, data.num_classes]))
    rates = {
        name: (n * steps / best(samples[name]), n * steps / typical(samples[name]))
        for name in samples
    }
    print(f"  {title} {dims}, batch {batch}:")
    print(
        f"    {n} seeds together  {rates['together'][0]:8.0f} replica-steps/s best "
        f"({rates['together'][1]:8.0f} typical)"
    )
    print(
        f"    {n} seeds in turn   {rates['sequential'][0]:8.0f} replica-steps/s best "
        f"({rates['sequential'][1]:8.0f} typical)"
    )
    print(
        f"    together / in turn: {rates['together'][0] / rates['sequential'][0]:.2f}x best "
        f"({rates['together'][1] / rates['sequential'][1]:.2f}x typical)"
    )


def paper_run_hours(step_seconds: float, eval_seconds: float) -> float:
    """Hours of a full paper run: 21 rounds x (100,000 steps + 1,000 validations)."""
    rounds, steps, every, _ = PAPER_RUN
    return rounds * (steps * step_seconds + steps // every * eval_seconds) / 3600


def precision_report(
    device: torch.device, reps: int, seconds: float, precisions: tuple[str, ...]
) -> None:
    """The paper FCN's step per precision, evaluation time and full-run projection."""
    data = paper_data(device)
    dims = [data.input_dim, *PAPER_HIDDEN, data.num_classes]
    flops = step_flops(dims, PAPER_BATCH)
    mm, mm_calls, mm_flops = matmul_job(device)
    jobs: dict[str, tuple[Callable[[], object], int]] = {"matmul": (mm, mm_calls)}
    for precision in precisions:
        step = imprint_step(data, PAPER_HIDDEN, PAPER_BATCH)

        def run(step=step, precision=precision) -> None:
            with precision_context(precision, device):
                step()

        jobs[precision] = (run, calls_for(seconds, run, device))
    model = make_model(data, PAPER_HIDDEN).to(device)
    jobs["eval"] = ((lambda: evaluate(model, data, 10_000)), 3)
    samples = interleaved(jobs, reps, device)
    mm_best = mm_flops / best(samples["matmul"])
    print(f"\n{device.type.upper()}, paper FCN {'-'.join(map(str, dims))}, batch {PAPER_BATCH}:")
    print(f"  large matmul (fp32)   {mm_best / 1e9:9.1f} GFLOP/s best")
    evaluation = best(samples["eval"])
    print(f"  evaluation on 10,000 images: {evaluation * 1e3:.2f} ms")
    for precision in precisions:
        b = best(samples[precision])
        print(
            f"  {precision}: step {b * 1e3:8.3f} ms, {rate(b, flops)} "
            f"({flops / b / mm_best:.0%} of fp32 matmul); full paper run "
            f"(21 rounds x 100,000 steps): {paper_run_hours(b, evaluation):.1f} h"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, help="interleaved repeats (default 8; quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per sample (default 0.4; quick 0.1)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile row (saves ~10-30 s)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke check (~25 s on 2 cores): 2 repeats of 0.1 s, no torch.compile row",
    )
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 8)
    seconds = args.seconds or (0.1 if args.quick else 0.4)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if device.type == "cpu":
        # What train_replicas does on a CPU; process-wide, so the baselines gain too.
        retain_freed_memory()
    started = time.perf_counter()
    header(device)

    _, _, every, n_val = PAPER_RUN
    paper = paper_data(device, n_val=n_val)
    imprint_paper = compare(
        "paper FCN",
        paper,
        PAPER_HIDDEN,
        PAPER_BATCH,
        device,
        reps,
        seconds,
        eval_every=every,
        eval_batch=10_000,
        with_matmul=True,
    )
    if device.type == "cpu":
        hours = paper_run_hours(imprint_paper["step"], imprint_paper["validation"])
        print(
            f"  a full imprint paper run (21 rounds x 100,000 steps, validation every 100) "
            f"would take {hours / 24:.1f} days"
        )
    del paper
    config = load_config(os.path.join(ROOT, "configs", "default.toml"))
    assert isinstance(config.data, NLGPData)
    small = load_dataset(config.data).to(device)
    train: TrainConfig = config.train
    hidden = list(config.model.hidden)
    compare(
        "default config",
        small,
        hidden,
        train.batch_size,
        device,
        reps,
        seconds,
        eval_every=train.eval_every,
        eval_batch=train.eval_batch_size,
        with_matmul=False,
        with_compile=not (args.no_compile or args.quick),
    )
    replicas_report(small, hidden, train.batch_size, device, reps, seconds)
    print(
        f"\nseeds together: {SEEDS_TOGETHER} seeds as one batched model (train_replicas) "
        f"against {SEEDS_TOGETHER} single runs one after another (aggregate throughput):"
    )
    seeds_together("default config", small, hidden, train.batch_size, device, reps, seconds)
    fashion = fashion_data(device)
    for width in FASHION_HIDDEN:
        seeds_together(
            "Fashion-MNIST size", fashion, list(width), train.batch_size, device, reps, seconds
        )
    if device.type == "cuda":
        precision_report(device, reps, seconds, ("fp32", "tf32", "bf16"))
    else:
        print(
            "\nGPU: not available here; GPU figures (precision options, paper-run time) unmeasured."
        )
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
