"""Benchmark: exact locality maps of a CIFAR-sized first layer, loop against vectorised.

    python benchmarks/locality_maps.py [--seed 0] [--density 0.01] [--loop-pairs 5000000]
                                       [--threads N]

(a) A random first-layer mask of 1024 units x 3072 inputs (the paper's 3072 x 1024
    M^(1); here (out, in)) at the given density, inputs of shape (3, 32, 32). The
    pure-Python pair loop runs on all units if they hold at most ``--loop-pairs``
    ordered pairs, else on the first units up to that many, and its time is then
    extrapolated linearly per pair to the whole layer (the output says which). Each
    vectorised method runs on all units and is checked to give identical integers on
    the units the loop computed.
(b) The fully dense mask, FFT method (what "auto" picks there), checked against the
    closed form S(d) = units C (C or C - 1) (H - |dy|)(W - |dx|).

Times are the best of ``--repeats`` (the loop: ``--loop-repeats``) wall-clock runs,
on one torch thread unless ``--threads`` is given (the pair loop uses one core: the
comparison is core for core), and OMP_WAIT_POLICY=PASSIVE
unless the environment sets it. The header prints the load average: on a shared
machine other processes slow every row, the pure-Python loop included.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while idle fight any other busy process for the cores: on
# a shared 2-core machine that made torch calls up to ~40x slower (not measured on
# an idle machine, where passive waiting may cost a little). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from imprint.analysis.maps import (  # noqa: E402
    LocalityMaps,
    locality_maps,
    locality_maps_pairloop,
)

SHAPE = (3, 32, 32)
UNITS = 1024
DENSE_TARGET_S = 10.0
SPEEDUP_TARGET = 100.0


def best_time(run: Callable[[], LocalityMaps], repeats: int) -> tuple[float, LocalityMaps]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def same(a: LocalityMaps, b: LocalityMaps) -> bool:
    return torch.equal(a.s_sc, b.s_sc) and torch.equal(a.s_dc, b.s_dc)


def ordered_pairs(mask: torch.Tensor) -> torch.Tensor:
    """Ordered pairs p != q of each unit: C_in (C_in - 1), (units,) int64."""
    c_in = mask.sum(dim=1)
    return c_in * (c_in - 1)


def sparse_case(
    density: float, seed: int, loop_pairs: int, repeats: int, loop_repeats: int
) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    n_inputs = SHAPE[0] * SHAPE[1] * SHAPE[2]
    mask = torch.rand((UNITS, n_inputs), generator=gen) < density  # (units, D)
    pairs = ordered_pairs(mask)
    total_pairs = int(pairs.sum())
    # The loop's units: all, or the first ones holding at most ``loop_pairs`` pairs.
    n_loop = max(1, int((pairs.cumsum(0) <= loop_pairs).sum()))
    loop_mask = mask[:n_loop]
    loop_pairs_done = int(pairs[:n_loop].sum())
    t_loop, loop = best_time(lambda: locality_maps_pairloop(loop_mask, SHAPE), loop_repeats)
    extrapolated = n_loop < UNITS
    t_loop_all = t_loop * total_pairs / loop_pairs_done if extrapolated else t_loop

    lines = [
        f"(a) random mask, density {density:g}: {int(mask.sum()):,} connections, "
        f"{total_pairs:,} ordered pairs p != q",
        "pair loop: "
        + (
            f"ran on the first {n_loop} units ({loop_pairs_done:,} pairs) in {t_loop:.3f} s; "
            f"whole-layer time EXTRAPOLATED linearly per pair: {t_loop_all:.2f} s"
            if extrapolated
            else f"ran on all {UNITS} units (no extrapolation)"
        ),
        f"{'method':<10} {'units':>6} {'time [s]':>10} {'speed-up':>9}  identical to loop",
        f"{'loop':<10} {UNITS:>6} {t_loop_all:>10.4f} {1.0:>9.1f}  -"
        + (" (extrapolated)" if extrapolated else ""),
    ]
    times = {}
    for method in ("fft", "pairs", "auto"):
        t, result = best_time(lambda m=method: locality_maps(mask, SHAPE, m), repeats)
        times[method] = t
        # identical on the units both computed: the loop's units, or all of them
        check = result if not extrapolated else locality_maps(loop_mask, SHAPE, method)
        ok = same(check, loop)
        lines.append(
            f"{method:<10} {UNITS:>6} {t:>10.4f} {t_loop_all / t:>9.1f}  "
            f"{'yes' if ok else 'NO'} ({n_loop} units)"
        )
    for label, t in (("fft", times["fft"]), ("best vectorised", min(times.values()))):
        ratio = t_loop_all / t
        met = "met" if ratio >= SPEEDUP_TARGET else "NOT met"
        lines.append(f"target >= {SPEEDUP_TARGET:.0f}x, {label}: {ratio:.1f}x, {met}")
    return lines


def dense_case(repeats: int) -> list[str]:
    channels, height, width = SHAPE
    mask = torch.ones((UNITS, channels * height * width), dtype=torch.bool)
    lines = ["(b) fully dense mask (every input of every unit)"]
    dy = torch.arange(-(height - 1), height).abs().view(-1, 1)
    dx = torch.arange(-(width - 1), width).abs().view(1, -1)
    separation = (height - dy) * (width - dx)  # ordered pixel pairs at each displacement
    expected_sc = UNITS * channels * separation
    expected_sc[height - 1, width - 1] = 0
    expected_dc = UNITS * channels * (channels - 1) * separation
    for method in ("fft", "auto"):
        t, result = best_time(lambda m=method: locality_maps(mask, SHAPE, m), repeats)
        ok = torch.equal(result.s_sc, expected_sc) and torch.equal(result.s_dc, expected_dc)
        met = "met" if t < DENSE_TARGET_S else "NOT met"
        lines.append(
            f"{method:<10} {UNITS:>6} {t:>10.4f} s  closed form: {'yes' if ok else 'NO'}; "
            f"target < {DENSE_TARGET_S:.0f} s: {met}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--loop-pairs", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, as the loop)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"locality maps, inputs {SHAPE}, {UNITS} units; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load:.2f}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    for line in sparse_case(
        args.density, args.seed, args.loop_pairs, args.repeats, args.loop_repeats
    ):
        print(line)
    for line in dense_case(args.repeats):
        print(line)


if __name__ == "__main__":
    main()
