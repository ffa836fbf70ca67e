"""A group's per-round figures pooled over its seeds: the ``pool`` functions of
:data:`imprint.analyses.ROUND_ANALYSES`' entries. Counts and maps are summed over the
seeds (the same pairs, units and connections, more of them); curves and accuracies are
the mean with the sample sd over seeds. Each returns what its entry's own plot function
draws, so a pooled figure is the run's figure with the seeds in it. Quiet pixels (the
pixel map's flag) are pixels quiet in every seed's training images."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from imprint.analyses.base import Result, Seeds, skip

__all__ = [
    "pool_ablation",
    "pool_connectivity",
    "pool_curves",
    "pool_locality_maps",
    "pool_pixel_map",
    "quiet_share",
]

CURVE_COLUMNS = ("train_loss", "val_loss", "train_top1", "val_top1")


def _sd(values: np.ndarray) -> np.ndarray:
    """The sample sd over the leading (seed) axis; 0 for a single seed."""
    return values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1:])


def _missing(s: Seeds, what: str) -> Result:
    return skip(f"not every one of the {s.label} has {what} for round {s.index}")


def pool_curves(s: Seeds, layer: int) -> Result:
    """Each curve's mean ± sd over seeds at the validation steps every seed has."""
    if not s.curves or not all(s.curves):
        return _missing(s, "training curves")
    steps = [row["step"] for row in s.curves[0]]
    common = [t for t in steps if all(any(r["step"] == t for r in c) for c in s.curves)]
    by_step = [{r["step"]: r for r in c} for c in s.curves]
    mean, spread = [], []
    for t in common:
        values = np.array([[float(b[t][k]) for k in CURVE_COLUMNS] for b in by_step])
        mean.append({"step": t, **dict(zip(CURVE_COLUMNS, values.mean(axis=0)))})
        spread.append({"step": t, **dict(zip(CURVE_COLUMNS, _sd(values)))})
    title = f"round {s.index}: mean ± sd over {s.label}"
    return Result(shown={"curves": mean, "spread": spread, "title": title})


def pool_connectivity(s: Seeds, layer: int) -> Result:
    """C_in of every seed's units in one histogram."""
    c_in = s.stacked(f"c_in_l{layer}")
    if c_in is None:
        return _missing(s, f"layer {layer}'s C_in")
    flat = torch.from_numpy(c_in.reshape(-1))
    connected = int((flat > 0).sum())
    title = (
        f"layer {layer}: C_in of the units of {s.label} pooled ({connected} connected, "
        f"{flat.numel() - connected} disconnected)"
    )
    return Result(shown={"c_in": flat, "title": title})


def quiet_share(pixel_map: np.ndarray, quiet: np.ndarray) -> float:
    """The share of connections (of a (C, H, W) pixel map) that land on quiet (H, W)
    pixels."""
    total = float(pixel_map.sum())
    return float(pixel_map[:, quiet].sum()) / total if total > 0 else float("nan")


def pool_pixel_map(s: Seeds, layer: int) -> Result:
    """The seeds' pixel maps summed; quiet pixels are those quiet for every seed."""
    maps = s.stacked("pixel_map")
    if maps is None:
        return _missing(s, "a pixel map")
    total = maps.sum(axis=0)
    shown: dict[str, Any] = {
        "map": torch.from_numpy(total),
        "title": f"connections per input pixel, summed over {s.label}",
    }
    quiet = s.stacked("quiet_pixels")
    if quiet is not None:
        every = np.asarray(quiet.all(axis=0))
        shown |= {"quiet": every, "share": quiet_share(total, every)}
        shown["threshold"] = s.results[0].get("pixel_map", {}).get("quiet_threshold")
    return Result(shown=shown)


def pool_locality_maps(s: Seeds, layer: int) -> Result:
    """S_sc (and S_dc), and their pixel-usage expectation, summed over seeds: the
    pairs of every seed's units in one map."""
    names = (f"s_sc_l{layer}", f"s_dc_l{layer}", f"s_sc_pixel_usage_l{layer}")
    s_sc, s_dc, expected = (s.stacked(name) for name in names)
    if s_sc is None or expected is None:
        return _missing(s, f"layer {layer}'s S_sc map")
    dc = None if s_dc is None or not s_dc.any() else torch.from_numpy(s_dc.sum(axis=0))
    return Result(
        shown={
            "s_sc": torch.from_numpy(s_sc.sum(axis=0)),
            "s_dc": dc,
            "expected": torch.from_numpy(expected.sum(axis=0)),
            "title": f"layer {layer}, round {s.index}, summed over {s.label}",
        }
    )


def pool_ablation(s: Seeds, layer: int) -> Result:
    """Top-1 after each removal, mean ± sd over seeds per order, and the paired
    difference (most connected first minus random order, seed by seed)."""
    records = [r.get("ablation") for r in s.results]
    if not all(records):
        return _missing(s, "a node ablation")
    modes = list(records[0])  # type: ignore[arg-type]  # None excluded above
    removed = records[0][modes[0]]["removed"]  # type: ignore[index]  # None excluded above
    if any(rec[m]["removed"] != removed for rec in records for m in modes):  # type: ignore[index]  # None excluded above
        return skip("the seeds removed different numbers of units: no mean to take")
    top1 = {m: np.array([rec[m]["top1"] for rec in records]) for m in modes}  # type: ignore[index]  # None excluded above
    curves = [SimpleNamespace(mode=m, removed=removed, top1=list(top1[m].mean(0))) for m in modes]
    shown: dict[str, Any] = {
        "curves": curves,
        "units": removed[-1],
        "chance": s.results[0].get("ablation_chance"),
        "spread": {m: list(_sd(top1[m])) for m in modes},
        "seeds": len(s.seeds),
    }
    if "most" in top1 and "random" in top1:
        paired = top1["most"] - top1["random"]
        shown["difference"] = (removed, list(paired.mean(0)), list(_sd(paired)))
    return Result(shown=shown)
