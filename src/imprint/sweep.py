"""Sweeps: many runs from one file, on this machine or a Ray cluster, and one table.

A sweep file (TOML) names a base config and the overrides to vary::

    base = "../configs/default.toml"      # relative to the sweep file
    seeds = [0, 1, 2]                     # sets seeds.init, .data and .prune together
    together = true                       # the seeds of a run train as one batched model
    [set]                                 # applied to every run
    "train.steps" = 1000
    [grid]                                # cartesian product
    "prune.procedure" = ["imp", "oneshot", "random"]
    [[variants]]                          # explicit override sets, crossed with the grid
    name = "nlgp"
    "data.process" = "nlgp"

Each run gets a folder under SWEEP_DIR/runs/ named from its overrides and a hash of
its resolved config (with ``together``, a group folder holding one run per seed), so
the same sweep file always maps a run to the same folder.
Finished runs are skipped and interrupted ones resume (each run folder resumes).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imprint.analysis.uncertainty import as_number, format_spread
from imprint.config import (
    Config,
    ConfigError,
    config_to_dict,
    parse_config,
    read_toml,
    set_values,
)
from imprint.readings import aggregate_over_seeds, shown_in
from imprint.runs import RunFolder, group_members, is_group
from imprint.safeio import (
    RunFolderError,
    check_confined,
    confine,
    read_json,
    write_bytes,
    write_csv,
    write_text,
)

__all__ = [
    "SweepRun",
    "Sweep",
    "load_sweep",
    "run_sweep",
    "collect",
    "sweep_run_folders",
    "expand_run_dirs",
    "run_finished",
]

_SWEEP_KEYS = {"base", "name", "seeds", "together", "set", "grid", "variants"}


@dataclass(frozen=True)
class SweepRun:
    name: str  # folder name under SWEEP_DIR/runs
    overrides: dict[str, Any]  # what this run varies (variant, grid values, seed)
    config: Config


@dataclass(frozen=True)
class Sweep:
    name: str
    source: Path
    runs: tuple[SweepRun, ...]


def _flat_table(table: Any, where: str, source: Path) -> dict[str, Any]:
    """A TOML table of dotted keys ("train.steps" = 1) or nested tables -> flat dict."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: '{where}' must be a table. Got {type(table).__name__}.")
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            for sub, v in _flat_table(value, f"{where}.{key}", source).items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


_SAFE_NAME = re.compile(r"[A-Za-z0-9=.,_-]{1,255}")
MAX_RUNS = 10_000  # a sweep file asking for more is a mistake (or 2.6e10 runs by design)


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} characters)"


def _safe_entry(name: Any, plan_path: Path) -> str:
    """A run name read back from sweep.json: a plain folder name, never a path."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name.startswith("."):
        raise RunFolderError(
            f"{plan_path}: run name {name!r} is not a plain folder name (letters, digits "
            "and . , _ = -): a damaged or hostile sweep.json."
        )
    return name


def _slug(overrides: dict[str, Any]) -> str:
    parts = []
    for key, value in overrides.items():
        short = key.split(".")[-1]
        text = json.dumps(value) if not isinstance(value, str) else value
        parts.append(f"{short}={text}")
    slug = re.sub(r"[^A-Za-z0-9=.,_-]+", "", ",".join(parts))
    return slug[:80] or "base"


def _config_hash(config: Config) -> str:
    document = config_to_dict(config)
    document.pop("track", None)  # tracking changes no result (and older folders lack it)
    text = json.dumps(document, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; every run's config is validated before any work."""
    source = Path(path)
    document = read_toml(source, "Sweep file")
    unknown = set(document) - _SWEEP_KEYS
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(unknown)}. Allowed: {sorted(_SWEEP_KEYS)}."
        )
    if "base" not in document:
        raise ConfigError(f"{source}: 'base' must name the base config file.")
    base_path = (source.parent / str(document["base"])).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{source}: base config {base_path} does not exist.")
    base = read_toml(base_path)
    common = _flat_table(document.get("set", {}), "set", source)
    grid = _flat_table(document.get("grid", {}), "grid", source)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: grid '{key}' must be a non-empty list of values.")
    seeds = document.get("seeds", [None])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(s is None or (isinstance(s, int) and s >= 0) for s in seeds)
    ):
        raise ConfigError(f"{source}: 'seeds' must be a list of integers >= 0. Got {seeds!r}.")
    together = document.get("together", False)
    if not isinstance(together, bool):
        raise ConfigError(f"{source}: 'together' must be true or false. Got {together!r}.")
    if together and None in seeds:
        raise ConfigError(f"{source}: 'together' needs 'seeds', the seeds to run together.")
    seed_sets: list[Any] = [seeds] if together else seeds
    variants = document.get("variants", [{}])
    if not isinstance(variants, list):
        raise ConfigError(f"{source}: 'variants' must be an array of tables ([[variants]]).")
    sweep_name = document.get("name", source.stem)
    if (
        not isinstance(sweep_name, str)
        or not _SAFE_NAME.fullmatch(sweep_name)
        or sweep_name.startswith(".")
    ):
        raise ConfigError(
            f"{source}: 'name' must be letters, digits and . , _ = - (it names the sweep "
            f"folder runs/sweeps/NAME). Got {_shown(sweep_name)}."
        )
    count = len(variants) * len(seed_sets) * math.prod(len(v) for v in grid.values())
    if count > MAX_RUNS:
        raise ConfigError(
            f"{source}: the grid, variants and seeds expand to {count} runs; at most "
            f"{MAX_RUNS} are allowed in one sweep file."
        )

    runs: list[SweepRun] = []
    names: set[str] = set()
    keys = list(grid)
    for variant in variants:
        variant = _flat_table(variant, "variants", source)
        label = variant.pop("name", None)
        if label is not None and (
            not isinstance(label, str) or not _SAFE_NAME.fullmatch(label) or label.startswith(".")
        ):
            raise ConfigError(
                f"{source}: a variant's name must be letters, digits and . , _ = - "
                f"(it names folders). Got {label!r}."
            )
        for combo in itertools.product(*(grid[k] for k in keys)):
            for seed in seed_sets:
                shown = {**variant, **dict(zip(keys, combo))}  # names, plan and table columns
                applied = dict(shown)
                if isinstance(seed, list):  # together: one group of seeds
                    applied["seeds.group"] = seed
                elif seed is not None:
                    shown["seed"] = seed
                    applied.update({"seeds.init": seed, "seeds.data": seed, "seeds.prune": seed})
                where = f"{source} {f'variant {label!r}, ' if label else ''}run {_slug(shown)}"
                config = parse_config(set_values(base, {**common, **applied}), source=where)
                name = f"{label + ',' if label else ''}{_slug(shown)}-{_config_hash(config)}"
                if name in names:
                    raise ConfigError(f"{source}: two runs resolve to the same config ({name}).")
                names.add(name)
                runs.append(
                    SweepRun(name, {**({"variant": label} if label else {}), **shown}, config)
                )
    return Sweep(sweep_name, source, tuple(runs))


def _plan_path(out: Path) -> Path:
    return out / "sweep.json"


def run_finished(folder: Path) -> bool:
    """Whether a sweep's run folder (a run or a group) holds a completed run."""
    if is_group(folder):
        return all((member / "run.json").exists() for _, member in group_members(folder))
    return (folder / "run.json").exists()


def _run_one(config_document: dict[str, Any], folder: str, threads: int, device: str) -> str:
    """One run in a worker process (local pool or Ray task)."""
    import torch

    from imprint.imp import GroupResult, run_experiment

    torch.set_num_threads(max(1, threads))
    config = parse_config(config_document, source=folder)
    result = run_experiment(config, folder, device=device, progress=False, log=lambda _: None)
    if isinstance(result, GroupResult):
        return "; ".join(sorted({run.stop_reason for run in result.runs}))
    return result.stop_reason


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    backend: str = "local",
    workers: int = 1,
    device: str = "cpu",
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Run every run of ``sweep`` not yet finished under OUT/runs/; returns the folders."""
    out = Path(out)
    if (out / "config.toml").exists() or is_group(out):
        raise RunFolderError(f"{out} is a run folder; a sweep needs a folder of its own (--out).")
    confine(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = {
        "name": sweep.name,
        "source": str(sweep.source),
        "runs": [{"name": r.name, "overrides": r.overrides} for r in sweep.runs],
    }
    plan_path = _plan_path(out)
    if plan_path.exists():
        previous = read_json(plan_path)
        if previous.get("name") != sweep.name:
            raise RunFolderError(
                f"{out} holds sweep '{previous.get('name')}', not '{sweep.name}'. "
                "Use another output folder."
            )
        before = _plan_names(previous, plan_path)
        now = [r.name for r in sweep.runs]
        if before != now:
            added, gone = len(set(now) - set(before)), len(set(before) - set(now))
            raise RunFolderError(
                f"{plan_path}: the sweep file {sweep.source} changed since this folder's plan "
                f"({added} run(s) added, {gone} removed, {len(now)} now). Use another --out "
                "folder, or delete sweep.json to adopt the new plan (the runs already there "
                "are kept and reused where their overrides match)."
            )
    write_text(plan_path, json.dumps(plan, indent=2) + "\n")
    folders = [out / "runs" / r.name for r in sweep.runs]
    for folder in folders:
        check_confined(folder / "config.toml")  # a run folder that is a link: refused
    todo = [(r, f) for r, f in zip(sweep.runs, folders) if not run_finished(f)]
    log(
        f"Sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(todo)} finished, "
        f"{len(todo)} to run ({backend})."
    )
    if not todo:
        return folders
    if backend == "local":
        _run_local(todo, workers, device, log)
    elif backend == "ray":
        _run_ray(todo, address, cpus_per_run, gpus_per_run, device, log)
    else:
        raise ConfigError(f"The 'backend' option must be 'local' or 'ray'. Got {backend!r}.")
    return folders


def _plan_names(plan: Any, path: Path) -> list[str]:
    """The run names of a sweep.json plan, or a RunFolderError naming the file."""
    try:
        return [str(entry["name"]) for entry in plan["runs"]]
    except (KeyError, TypeError) as error:
        raise RunFolderError(f"{path}: not a sweep plan ({error!r}).") from None


def _run_local(todo, workers: int, device: str, log) -> None:
    if workers < 1:
        raise ConfigError(f"The 'workers' option must be >= 1. Got {workers}.")
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)  # torch threads divided among the runs
    if workers == 1:
        for i, (run, folder) in enumerate(todo, 1):
            reason = _run_one(config_to_dict(run.config), str(folder), threads, device)
            log(f"[{i}/{len(todo)}] {run.name}: {reason}")
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch state
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {
            pool.submit(_run_one, config_to_dict(run.config), str(folder), threads, device): run
            for run, folder in todo
        }
        done_count = 0
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                run = pending.pop(future)
                try:
                    reason = future.result()
                except BrokenProcessPool:
                    raise RunFolderError(
                        f"A worker process of the sweep ended abruptly (killed, or out of "
                        f"memory) while running {run.name}. Finished runs and checkpoints "
                        "are kept: run the same command again to resume, each run from its "
                        "last checkpoint."
                    ) from None
                done_count += 1
                log(f"[{done_count}/{len(todo)}] {run.name}: {reason}")


def _run_ray(todo, address: str | None, cpus: float, gpus: float, device: str, log) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "The 'ray' backend needs Ray: pip install 'imprint[ray]' (or ray>=2.9)."
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as error:  # Ray's own errors: a timeout, no cluster at the address
            raise ConfigError(
                f"--backend ray: Ray could not start{f' at {address}' if address else ''} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                "Check the address, or run with --backend local."
            ) from None
    try:
        # A task whose worker dies (killed, lost node) is retried, up to 3 times; the retry
        # resumes the run from its last checkpoint.
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=3)(_run_one)
        threads = max(1, int(cpus))
        pending = {
            task.remote(config_to_dict(run.config), str(folder.resolve()), threads, device): run
            for run, folder in todo
        }
        done_count = 0
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                run = pending.pop(ref)
                done_count += 1
                log(f"[{done_count}/{len(todo)}] {run.name}: {ray.get(ref)}")
    finally:
        if started_here:
            ray.shutdown()


def sweep_run_folders(sweep_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, overrides) of every run of a sweep folder that has completed rounds."""
    sweep_dir = Path(sweep_dir)
    plan_path = _plan_path(sweep_dir)
    if not plan_path.exists():
        raise RunFolderError(f"{sweep_dir} is not a sweep folder (no sweep.json).")
    try:
        plan = read_json(plan_path)
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{plan_path} is not readable JSON: {error}.") from None
    out = []
    try:
        entries = [(_safe_entry(e["name"], plan_path), e["overrides"]) for e in plan["runs"]]
        if not all(isinstance(overrides, dict) for _, overrides in entries):
            raise TypeError("overrides must be tables")
    except (KeyError, TypeError) as error:
        raise RunFolderError(f"{plan_path}: not a sweep plan ({error!r}).") from None
    for name, overrides in entries:
        folder = sweep_dir / "runs" / name
        members = (
            [(member, {**overrides, "seed": seed}) for seed, member in group_members(folder)]
            if is_group(folder)
            else [(folder, overrides)]
        )
        out += [(f, o) for f, o in members if RunFolder(f).completed_rounds()]
    return out


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders, each sweep folder or group folder among ``paths`` standing for its
    runs."""
    out: list[Path] = []
    for path in map(Path, paths):
        if _plan_path(path).exists():
            out += [folder for folder, _ in sweep_run_folders(path)]
        elif is_group(path):
            out += [member for _, member in group_members(path)]
        else:
            out.append(path)
    return out


def collect(
    sweep_dir: str | Path,
    out_stem: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per run and round (:func:`results_rows`). Writes SWEEP_DIR/results.csv
    and results.parquet."""
    sweep_dir = Path(sweep_dir)
    rows = results_rows(sweep_dir)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    stem = Path(out_stem) if out_stem else sweep_dir / "results"
    write_csv(stem.with_suffix(".csv"), rows, columns)
    if not _write_parquet(rows, columns, stem.with_suffix(".parquet")):
        log(
            "results.parquet not written: Parquet needs pandas and pyarrow "
            "(pip install -e '.[sweep]'); results.csv has the same table."
        )
    return rows


def results_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run and round of a sweep folder, read, nothing written: the
    overrides, remaining weights, accuracies and the registered readings with their
    within-run spread (:func:`imprint.results.round_readings`)."""
    from imprint.results import round_readings

    sweep_dir = Path(sweep_dir)
    rows: list[dict[str, Any]] = []
    for folder_path, overrides in sweep_run_folders(sweep_dir):
        folder = RunFolder(folder_path)
        record = read_json(folder.run_path) if folder.run_path.exists() else {}
        for index in folder.completed_rounds():
            metrics = folder.round_metrics(index)
            name = folder_path.name
            if folder_path.parent.parent.name == "runs":  # a member of a group
                name = f"{folder_path.parent.name}/{name}"
            rows.append(
                {
                    "run": name,
                    **{k: _cell(v) for k, v in overrides.items()},
                    "round": index,
                    "density": metrics["density"],
                    "density_l0": metrics["layer_density"][0],
                    "best_val_top1": metrics["best_val_top1"],
                    "test_top1_at_best": metrics.get("test_top1_at_best"),
                    "val_top5_at_best": metrics["val_top5_at_best"],
                    "final_val_top1": metrics["final_val_top1"],
                    "connected_l0": metrics["connected_units"][0],
                    **round_readings(folder, index),
                    "finished": bool(record),
                }
            )
    if not rows:
        raise RunFolderError(f"{sweep_dir} has no run with a completed round yet.")
    return rows


# then the readings shown in collect's table
SUMMARY_METRICS = ("density", "best_val_top1", "test_top1_at_best")


def summary_metrics() -> list[str]:
    """The columns :func:`summarize` averages by default: density, accuracy and every
    registered reading shown in collect's table."""
    return [*SUMMARY_METRICS, *(spec.name for spec in shown_in("collect", "round"))]


def summarize(
    rows: Sequence[dict[str, Any]],
    by: str = "variant",
    rounds: Sequence[int] = (),
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds of ``metrics`` per group ``by`` and
    round (all rounds when ``rounds`` is empty): the numbers behind docs/findings.md.
    ``{name}_n`` counts the seeds with a value (a reading may say "too few pairs")."""
    groups: dict[tuple[Any, int], list[dict[str, Any]]] = {}
    for row in rows:
        if rounds and row["round"] not in rounds:
            continue
        groups.setdefault((row.get(by, row["run"]), row["round"]), []).append(row)
    table = []
    for (group, index), members in groups.items():
        entry: dict[str, Any] = {by: group, "round": index, "runs": len(members)}
        entry.update(
            aggregate_over_seeds(members, summary_metrics() if metrics is None else metrics)
        )
        table.append(entry)
    return table


def format_summary(table: Sequence[dict[str, Any]], by: str) -> str:
    """A Markdown table of :func:`summarize`: mean +- sd over seeds per group and round,
    with a column for each registered reading shown in collect's table."""
    specs = [spec for spec in shown_in("collect", "round") if any(spec.name in r for r in table)]
    tested = any(math.isfinite(as_number(row.get("test_top1_at_best"))) for row in table)
    header = [by, "round", "weights left", "seeds", "best validation top-1"]
    header += ["test top-1"] if tested else []
    header += [s.label for s in specs]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in sorted(table, key=lambda r: (r["round"], str(r[by]))):
        cells = [
            str(row[by]),
            str(row["round"]),
            f"{row['density']:.2%}",
            str(row["runs"]),
            format_spread(row["best_val_top1"], row["best_val_top1_sd"], 3),
            *(
                [format_spread(row["test_top1_at_best"], row["test_top1_at_best_sd"], 3)]
                if tested
                else []
            ),
            *(spec.format_mean(row) for spec in specs),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_figures(table: Sequence[dict[str, Any]], by: str, out: str | Path) -> list[Path]:
    """Locality (against random masks and over pixel usage), validation and test
    accuracy and S_sc mass against weights left, one curve per group (a metric no row
    has, such as test top-1 without a test set, is skipped)."""
    from imprint.plots import plot_groups_over_density, save_figure

    paths: list[Path] = []
    for metric, label, null, log_y in (
        ("locality_index", "neighbour locality index (random masks = 0)", 0.0, False),
        ("locality_index_pix", "pixel-usage locality index (null = 0)", 0.0, False),
        ("neighbour_enrichment_pix", "neighbour enrichment over pixel usage (null = 1)", 1.0, True),
        ("locality_ratio", "pair-distance locality ratio (null = 1)", 1.0, True),
        ("best_val_top1", "best validation top-1", None, False),
        ("test_top1_at_best", "test top-1 at the best validation step", None, False),
        ("mass_within_r", "fraction of S_sc mass within 2 px", None, False),
    ):
        if not any(math.isfinite(as_number(row.get(metric))) for row in table):
            continue
        fig = plot_groups_over_density(table, by, metric, label, null=null, log_y=log_y)
        paths += save_figure(fig, Path(out) / metric, ("png",))
    return paths


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _write_parquet(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> bool:
    """Write the table as Parquet; False when pandas or pyarrow is not installed."""
    try:
        import pandas as pd
    except ImportError:
        return False
    frame = pd.DataFrame(rows, columns=list(columns))
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer, index=False)
    except ImportError:
        return False
    write_bytes(path, buffer.getvalue())  # a fresh temporary, never a planted link
    return True
