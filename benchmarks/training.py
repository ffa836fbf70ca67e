"""Benchmark: imprint's training step against the straightforward PyTorch loop, side by side.

    PYTHONPATH=src python benchmarks/training.py [--reps 12] [--seconds 0.4] [--threads N]
                                                 [--device auto] [--no-compile]

On the machine it runs on, in one run (each measurement a few seconds):

(a) The large-matmul rate: a 4096 x 4096 float32 matmul (8192 on a GPU), the
    machine's practical peak for the work a training step is made of.
(b) The paper's FCN 3072-1024-1024-1024-1000 at batch 1000 on uint8 images, with the
    masks of a first pruned round (70% of the weights and biases of every layer but
    the output one left, random support): the step time of imprint and of the
    baseline, their ratio, and each one's achieved FLOP/s as a fraction of (a).
    FLOPs counted are those a step needs: forward 2 x MACs, weight gradients 2 x MACs,
    input gradients 2 x MACs for every layer but the first (dense MACs).
(c) The default config (configs/default.toml: NLGP 12x12, FCN 144-128-4, batch 256),
    same masks rule: step times and ratio; also imprint with ``train.compile = true``
    (``torch.compile`` of the step; its compile time is printed, not timed).
(d) Replicas: R copies of the default config trained as one batched model, aggregate
    steps per second against one replica.
(e) On a GPU only: the paper FCN's step time per precision (fp32, tf32, bf16), the
    evaluation time on 10,000 images, and the projected time of a full paper run:
    21 rounds x (100,000 steps + 1,000 validations on 10,000 images).

The baseline is what a researcher would write: imprint's ``FCN`` module (plain
``nn.BatchNorm1d`` + ``nn.Linear``), masks through ``torch.nn.utils.prune``
(``custom_from_mask`` on every linear weight and bias), a ``DataLoader`` with
``shuffle=True`` over a ``TensorDataset`` of the normalised float images (on the CPU;
batches moved to the device), ``torch.optim.SGD`` with ``zero_grad`` and
``loss.backward()``, with torch's threads. imprint's step is the code of
``train_replicas``: ``sample_batch`` + ``engine.train_step`` + ``MaskedSGD.step``, under
``step_threads`` (one thread for steps below 8M multiply-adds, as the default
config's; torch's threads otherwise).

Measurements are interleaved (matmul, imprint, baseline, then again) ``--reps`` times;
"best" is the fastest repeat, "typical" the median. On a shared machine other
processes slow every row; the header prints the load average and OMP_WAIT_POLICY
(when another process holds a core, OpenMP's default spin-waiting makes every
parallel elementwise op wait for a time slice, and OMP_WAIT_POLICY=PASSIVE steadies
large ops while slowing small ones: both sides run under the same setting).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

from imprint.config import NLGPData, TrainConfig, load_config
from imprint.data import ImageData, load_dataset
from imprint.engine import MaskedSGD, ReplicaFCN, retain_freed_memory, train_step
from imprint.model import FCN
from imprint.prune import full_masks, random_prune
from imprint.train import (
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


# ------------------------------------------------------------------------ the two sides


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


def imprint_step(
    data: ImageData,
    hidden: list[int],
    batch: int,
    replicas: int = 1,
    lr: float = 0.1,
    compiled: bool = False,
) -> Callable[[], None]:
    """One step of ``train_replicas`` (data already on its device), R replicas; with
    ``compiled``, the step of ``train.compile = true``."""
    device = data.x_train.device
    models, masks = [], []
    for r in range(replicas):
        model = make_model(data, hidden, seed=r)
        mask = first_round_masks(model, torch.Generator().manual_seed(r))
        state = model.state_dict()
        with torch.no_grad():
            for name, value in mask.items():
                state[name].mul_(value)
        models.append(model.to(device))
        masks.append(mask)
    net = ReplicaFCN(models)
    stacked = {name: torch.stack([m[name] for m in masks]).to(device) for name in masks[0]}
    optimizer = MaskedSGD(net, stacked, lr)
    gens = [torch.Generator(device=device).manual_seed(r) for r in range(replicas)]
    loss_sum = torch.zeros(replicas, device=device)
    correct_sum = torch.zeros(replicas, device=device)
    step_fn = compiled_train_step() if compiled else train_step

    def step() -> None:
        # train_replicas enters step_threads once per round; here once per step (~3 us).
        with step_threads(net.dims, replicas, batch, device):
            x, y = sample_batch(data, gens, batch)
            result = step_fn(net, x, y, data.offset, data.scale)
            optimizer.step(result.grads)
            loss_sum.add_(result.loss)
            correct_sum.add_(result.correct)

    return step


def baseline_step(
    data: ImageData, hidden: list[int], batch: int, device: torch.device, lr: float = 0.1
) -> Callable[[], None]:
    """The straightforward PyTorch loop: prune hooks, DataLoader, autograd, optim.SGD."""
    model = make_model(data, hidden)
    masks = first_round_masks(model, torch.Generator().manual_seed(0))
    for layer_index, layer in enumerate(model.layers):
        for name in ("weight", "bias"):
            torch_prune.custom_from_mask(layer, name, masks[f"layers.{layer_index}.{name}"])
    model.to(device).train()
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

    def step() -> None:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


# ----------------------------------------------------------------------------- workloads


def paper_data(device: torch.device, n_train: int = 20_000, n_val: int = 10_000) -> ImageData:
    """Random uint8 32x32 RGB images in 1000 classes, normalised as ImageNet32 is:
    (x - mean image) / 255. Content does not change the cost of a dense step."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train, 3072), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 1000, (n_train,), generator=gen)
    xv = torch.randint(0, 256, (n_val, 3072), generator=gen, dtype=torch.uint8)
    yv = torch.randint(0, 1000, (n_val,), generator=gen)
    data = ImageData(x, y, xv, yv, (3, 32, 32), 1000, offset=x.float().mean(0), scale=1 / 255)
    return data.to(device)


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


def calls_for(seconds: float, step: Callable[[], None], device: torch.device) -> int:
    """Calls of ``step`` filling about ``seconds`` (one timed call decides)."""
    step()
    once = _per_call(step, 1, device)
    return max(1, round(seconds / max(once, 1e-6)))


# ------------------------------------------------------------------------------ report


def header(device: torch.device) -> None:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(
        f"machine: {model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, device {device}"
    )
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"load average (1, 5, 15 min): {load}; OMP_WAIT_POLICY {policy}")


def rate(seconds: float, flops: float) -> str:
    return f"{flops / seconds / 1e9:7.1f} GFLOP/s"


def compare(
    title: str,
    data: ImageData,
    hidden: list[int],
    batch: int,
    device: torch.device,
    reps: int,
    seconds: float,
    with_matmul: bool,
    with_compile: bool = False,
) -> dict[str, list[float]]:
    dims = [data.input_dim, *hidden, data.num_classes]
    ours = imprint_step(data, hidden, batch)
    theirs = baseline_step(data, hidden, batch, device)
    jobs: dict[str, tuple[Callable[[], object], int]] = {}
    matmul_flops = 0.0
    if with_matmul:
        mm, mm_calls, matmul_flops = matmul_job(device)
        jobs["matmul"] = (mm, mm_calls)
    jobs["imprint"] = (ours, calls_for(seconds, ours, device))
    names = ["imprint"]
    compile_seconds = 0.0
    if with_compile:
        fused = imprint_step(data, hidden, batch, compiled=True)
        started = time.perf_counter()
        try:
            fused()  # compiles
        except Exception as error:  # no compiler, no triton...: report, measure the rest
            print(f"  (torch.compile unavailable here: {type(error).__name__}: {error})")
        else:
            compile_seconds = time.perf_counter() - started
            jobs["+compile"] = (fused, calls_for(seconds, fused, device))
            names.append("+compile")
    jobs["baseline"] = (theirs, calls_for(seconds, theirs, device))
    names.append("baseline")
    samples = interleaved(jobs, reps, device)
    flops = step_flops(dims, batch)
    print(f"\n{title}: {'-'.join(map(str, dims))}, batch {batch}")
    if with_matmul:
        mm_best, mm_typ = (
            matmul_flops / best(samples["matmul"]),
            matmul_flops / typical(samples["matmul"]),
        )
        print(
            f"  large matmul        {mm_best / 1e9:7.1f} GFLOP/s best, {mm_typ / 1e9:7.1f} typical"
        )
    for name in names:
        b, t = best(samples[name]), typical(samples[name])
        line = f"  {name:9s} step {b * 1e3:9.3f} ms best, {t * 1e3:9.3f} typical"
        if with_matmul:
            line += (
                f"  {rate(b, flops)} = {flops / b / mm_best:.0%} of matmul "
                f"(typical {flops / t / mm_typ:.0%})"
            )
        print(line)
    if "+compile" in names:
        print(
            f"  (+compile: imprint with train.compile = true, compiled in {compile_seconds:.0f} s; "
            f"{best(samples['imprint']) / best(samples['+compile']):.2f}x the eager step)"
        )
    ratio_best = best(samples["baseline"]) / best(samples["imprint"])
    ratio_typ = typical(samples["baseline"]) / typical(samples["imprint"])
    print(f"  imprint / baseline throughput: {ratio_best:.2f}x best, {ratio_typ:.2f}x typical")
    return samples


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


def paper_run_hours(step_seconds: float, eval_seconds: float) -> float:
    """Hours of a full paper run: 21 rounds x (100,000 steps + 1,000 validations)."""
    rounds, steps, every, _ = PAPER_RUN
    return rounds * (steps * step_seconds + steps // every * eval_seconds) / 3600


def eval_seconds(data: ImageData, device: torch.device, reps: int) -> float:
    """Best time of ``evaluate`` (the validation of ``train_round``) on 10,000 images."""
    model = make_model(data, PAPER_HIDDEN).to(device)
    return best(
        interleaved({"eval": ((lambda: evaluate(model, data, 10_000)), 1)}, reps, device)["eval"]
    )


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
    parser.add_argument("--reps", type=int, default=12, help="interleaved repeats (default 12)")
    parser.add_argument(
        "--seconds", type=float, default=0.6, help="seconds per sample (default 0.6)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile row (saves ~10-30 s)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if device.type == "cpu":
        # What train_replicas does on a CPU; process-wide, so the baseline gains too.
        retain_freed_memory()
    started = time.perf_counter()
    header(device)

    paper = paper_data(device)
    samples = compare(
        "paper FCN",
        paper,
        PAPER_HIDDEN,
        PAPER_BATCH,
        device,
        args.reps,
        args.seconds,
        with_matmul=True,
    )
    if device.type == "cpu":
        evaluation = eval_seconds(paper, device, 2)
        hours = paper_run_hours(best(samples["imprint"]), evaluation)
        print(
            f"  evaluation on 10,000 images {evaluation:.2f} s; a full paper run "
            f"(21 rounds x 100,000 steps, validation every 100) would take {hours / 24:.1f} days"
        )
    config = load_config(os.path.join(ROOT, "configs", "default.toml"))
    assert isinstance(config.data, NLGPData)
    small = load_dataset(config.data).to(device)
    train: TrainConfig = config.train
    compare(
        "default config",
        small,
        list(config.model.hidden),
        train.batch_size,
        device,
        args.reps,
        args.seconds,
        with_matmul=False,
        with_compile=not args.no_compile,
    )
    replicas_report(
        small, list(config.model.hidden), train.batch_size, device, args.reps, args.seconds
    )
    if device.type == "cuda":
        precision_report(device, args.reps, args.seconds, ("fp32", "tf32", "bf16"))
    else:
        print(
            "\nGPU: not available here; GPU figures (precision options, paper-run time) unmeasured."
        )
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
