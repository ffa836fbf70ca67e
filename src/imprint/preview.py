"""`imprint sweep FILE --dry-run`: what a sweep will run, and about how long it takes.

Lists the runs (each variant with its seeds, finished ones marked) and an estimate of
their time from a short measured round on this machine: per kind of run (the net's
widths, batch, validation cadence, seeds trained together, device), one round of
``min(train.steps, train.eval_every, 200)`` steps and its validation is trained on the
run's own data, and a run is taken to cost (prune.max_rounds + 1) rounds at that rate.
It counts training and validation only: every round is charged the dense step (late
rounds that run sparse, or a stop rule ending a run early, make it shorter), while each
round's readings and files come on top (about a fifth more for the default config:
its 3-seed run took 50 s where this estimates 41 s). Nothing is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imprint.config import Config, config_to_dict
from imprint.data import ImageData, load_dataset
from imprint.model import build_model
from imprint.prune import full_masks
from imprint.sweep import Sweep, SweepRun, run_finished
from imprint.train import train_replicas

__all__ = ["preview_sweep", "format_duration", "PlannedRun"]

PROBE_STEPS = 200


@dataclass(frozen=True)
class PlannedRun:
    run: SweepRun
    finished: bool  # its folder holds a completed run
    seconds: float  # estimated (0 when finished)


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cost_key(config: Config, device: str) -> str:
    train, data = config.train, config_to_dict(config)["data"]
    replicas = max(1, len(config.seeds.group))
    return json.dumps(
        [data, list(config.model.hidden), train.batch_size, train.eval_every, replicas, device]
    )


def _probe(config: Config, data: ImageData, device: str) -> float:
    """Seconds per step, validation included, of a short dense round of ``config``."""
    steps = min(config.train.steps, config.train.eval_every, PROBE_STEPS)
    train = config.train.model_copy(
        update={"steps": steps, "eval_every": steps, "checkpoint_every": 0, "sparse": "off"}
    )
    seeds = list(config.seeds.group) or [config.seeds.init]
    models = [
        build_model(config.model, data.input_dim, data.num_classes, s).to(device) for s in seeds
    ]
    masks = [full_masks(m.state_dict()) for m in models]
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    started = time.perf_counter()
    train_replicas(models, masks, data, train, gens)
    return (time.perf_counter() - started) / steps


def preview_sweep(
    sweep: Sweep,
    out: str | Path,
    workers: int = 1,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Log the runs of ``sweep`` (finished ones in ``out`` marked) and their estimated
    time; returns {"runs": [...], "seconds": total of the unfinished, "wall": with
    ``workers`` in parallel}. Trains short probes; writes nothing."""
    out = Path(out)
    datasets: dict[str, ImageData] = {}
    rates: dict[str, float] = {}
    rows: list[PlannedRun] = []
    for run in sweep.runs:
        done = run_finished(out / "runs" / run.name)
        key = _cost_key(run.config, device)
        if key not in rates and not done:
            data_key = json.dumps(config_to_dict(run.config)["data"])
            if data_key not in datasets:
                datasets[data_key] = load_dataset(run.config.data).to(device)
            rates[key] = _probe(run.config, datasets[data_key], device)
        rounds = run.config.prune.max_rounds + 1
        seconds = 0.0 if done else rounds * run.config.train.steps * rates[key]
        rows.append(PlannedRun(run, done, seconds))
    total = sum(row.seconds for row in rows)
    wall = total / max(1, workers)
    todo = sum(not row.finished for row in rows)
    log(
        f"Sweep {sweep.name}: {len(rows)} runs, {len(rows) - todo} finished in {out}, "
        f"{todo} to run; about {format_duration(wall)} with {workers} worker(s) on {device} "
        "(training and validation at the dense step's measured rate; each round's "
        "readings and files come on top)."
    )
    for row in rows:
        config = row.run.config
        shown = ", ".join(f"{k}={v}" for k, v in row.run.overrides.items())
        seeds = config.seeds.group or [config.seeds.init]
        state = "finished" if row.finished else f"~{format_duration(row.seconds)}"
        log(
            f"  {shown or '(base)'}  seeds {seeds}  {config.prune.max_rounds + 1} rounds "
            f"x {config.train.steps} steps  {state}"
        )
    return {"runs": rows, "seconds": total, "wall": wall}
