"""The ``imprint`` command: a thin layer over library calls that the tests make too."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from imprint.config import ConfigError, load_config

__all__ = ["main", "format_round_table"]


def format_round_table(rounds: Sequence[Mapping[str, Any]], pruned: Sequence[int]) -> str:
    """The end-of-run console table: one line per round. ``rounds`` are one run's
    metrics (each reading with its within-run bootstrap sd) or a group's rows of
    :func:`imprint.results.summarize_seeds` (mean ± sd over seeds); the readings are those
    the registry shows in the console table."""
    import math

    from imprint.analysis.uncertainty import as_number, format_spread
    from imprint.readings import shown_in

    group = bool(rounds) and "seeds" in rounds[0]
    top5 = not group and bool(rounds) and rounds[0]["units"][-1] > 5  # 5 classes or fewer: 1
    specs = shown_in("console", "round")
    test = any(math.isfinite(as_number(m.get("test_top1_at_best"))) for m in rounds)
    header = [
        "round",
        *[f"left L{layer}" for layer in pruned],
        "val. top-1",
        *(["test top-1"] if test else []),
        *(["top-5"] if top5 else []),
        *[f"conn. L{layer}" for layer in pruned],
        *[spec.label for spec in specs],
        *(["seeds"] if group else []),
    ]
    rows = []
    for m in rounds:
        tested = as_number(m.get("test_top1_at_best"))
        if group:
            top1 = format_spread(m["best_val_top1"], m["best_val_top1_sd"], digits=4)
            test_top1 = format_spread(tested, as_number(m.get("test_top1_at_best_sd")), 4)
            readings = [spec.format_mean(m) for spec in specs]
            conn = [f"{m['connected_units'][layer]:.0f}/{m['units'][layer]}" for layer in pruned]
        else:
            top1 = f"{m['best_val_top1']:.4f}"
            test_top1 = f"{tested:.4f}" if math.isfinite(tested) else "n/a"
            readings = [spec.format(m) for spec in specs]
            conn = [f"{m['connected_units'][layer]}/{m['units'][layer]}" for layer in pruned]
        rows.append(
            [
                str(m["round"]),
                *[f"{m['layer_density'][layer]:.2%}" for layer in pruned],
                top1,
                *([test_top1] if test else []),
                *([f"{m['val_top5_at_best']:.4f}"] if top5 else []),
                *conn,
                *readings,
                *([str(m["seeds"])] if group else []),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    from imprint.imp import GroupResult, prunable_layers, run_experiment
    from imprint.results import study_round

    overrides = list(args.set)
    if args.seeds is not None:
        overrides.append(f"seeds.group=[{_seed_list(args.seeds)}]")
    if args.track is not None:
        from imprint.tracking import TRACKERS

        names = [name.strip() for name in args.track.split(",") if name.strip()]
        if unknown := [name for name in names if name not in TRACKERS]:
            raise ConfigError(
                f"--track {args.track}: unknown tracker {unknown[0]!r}; choose from "
                f"{', '.join(TRACKERS)} (comma-separated)."
            )
        overrides.append(f"track=[{', '.join(repr(name) for name in names)}]")
    config = load_config(args.config, overrides)
    out = args.out or _default_out(args.config)
    result = run_experiment(
        config, out, device=args.device, progress=not args.quiet, allow_changes=args.allow_change
    )
    print()
    print(format_round_table(result.rounds, prunable_layers(config)))
    study = study_round(result.rounds)
    row = result.rounds[study]
    if isinstance(result, GroupResult):
        reasons = sorted({run.stop_reason for run in result.runs})
        print(f"\nStopped: {'; '.join(reasons)}. {len(result.seeds)} seeds, mean ± sd over seeds.")
    else:
        print(f"\nStopped: {result.stop_reason}. Locality index: ± within-run bootstrap sd.")
    print(
        f"Study round {study} (the sparsest keeping >= 97% of the dense top-1): "
        f"{row['density']:.2%} of the prunable weights left."
    )
    print(f"{'Group' if isinstance(result, GroupResult) else 'Run'} folder: {result.folder}")
    return 0


def _seed_list(text: str) -> str:
    """'0,1,2' or '0-4' -> '0, 1, 2' (validated by the config's seeds.group)."""
    spans: list[tuple[int, int]] = []
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            spans.append((int(low), int(high) if dash else int(low)))
    except ValueError:
        raise ConfigError(f"--seeds {text}: list seeds as 0,1,2 or 0-4 (integers >= 0).") from None
    if sum(max(0, last - first + 1) for first, last in spans) > 256:
        raise ConfigError(f"--seeds {text}: at most 256 seeds are trained together.")
    seeds = [seed for first, last in spans for seed in range(first, last + 1)]
    if not seeds:
        raise ConfigError(f"--seeds {text}: no seed listed (a range runs upwards, e.g. 0-4).")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text}: a seed is listed twice.")
    return ", ".join(str(seed) for seed in seeds)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from imprint.analysis.uncertainty import as_number, format_spread
    from imprint.analyze import AnalysisOptions, analyze_run
    from imprint.imp import resolve_device
    from imprint.readings import shown_in

    formats = tuple(f.strip() for f in args.formats.split(","))
    if not all(formats) or not set(formats) <= FIGURE_FORMATS:
        raise ConfigError(
            f"The '--formats' option must list figure formats among "
            f"{', '.join(sorted(FIGURE_FORMATS))}. Got {args.formats!r}."
        )
    if args.gallery_size < 1:
        raise ConfigError(f"The '--gallery-size' option must be >= 1. Got {args.gallery_size}.")
    options = AnalysisOptions(
        gallery_size=args.gallery_size, formats=formats, device=str(resolve_device(args.device))
    )
    summary = analyze_run(args.run, args.round, options, log=_log(args))
    specs = shown_in("console", "round")
    for result in [] if "seeds" in summary else summary["per_round"]:
        layer0 = result["layers"].get("0", {})
        readings = "".join(f", {spec.label} {spec.format(layer0)}" for spec in specs)
        print(
            f"round {result['round']}: {result['density']:.2%} left, top-1 "
            f"{result['best_val_top1']:.4f}{readings}, {len(result['figures'])} figures"
        )
    for reading in summary.get("readings", []):
        top1 = format_spread(
            as_number(reading["best_val_top1"]), as_number(reading["best_val_top1_sd"]), 4
        )
        readings = "".join(f", {spec.label} {spec.format_mean(reading)}" for spec in specs)
        print(
            f"round {reading['round']}, mean ± sd over {len(summary['seeds'])} seeds: "
            f"top-1 {top1}{readings}"
        )
    print(f"Results in {args.run}/analysis")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from imprint.data.catalog import format_datasets

    print(format_datasets())
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from imprint.data.catalog import check_data

    config = load_config(args.config, args.set)
    print(check_data(config.data).format())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from imprint.report import build_report

    if args.round == "all":
        raise ConfigError(
            "The '--round' option of report names one round (study, best, last or a "
            "number): a report tells one round's story. `imprint analyze RUN --round all` "
            "analyses every round."
        )
    path = build_report(args.run, args.round, log=_log(args), out=args.out)
    print(f"Report: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from imprint.export import export_round

    written = export_round(args.run, args.round, args.out)
    print(f"Exported {len(written)} files into {written[0].parent.parent}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from imprint.compare import build_comparison
    from imprint.sweep import expand_run_dirs

    if args.density is not None and not 0 < args.density <= 1:
        raise ConfigError(f"The '--density' option must be in (0, 1]. Got {args.density}.")
    # Next to the inputs: in the one folder given (a sweep, a group or a run), else in
    # the folder that holds the first one.
    first = Path(args.runs[0])
    out = args.out or str((first if len(args.runs) == 1 else first.parent) / "compare.html")
    path = build_comparison(expand_run_dirs(args.runs), out, density=args.density)
    print(f"Comparison: {path}")
    return 0


def _log(args: argparse.Namespace):
    """print, or nothing with --quiet."""
    return (lambda _: None) if getattr(args, "quiet", False) else print


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from imprint.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.sweep)
    out = args.out or str(Path("runs") / "sweeps" / sweep.name)
    if args.dry_run:
        from imprint.preview import preview_sweep

        device = "cuda" if args.device == "cuda" else "cpu"
        preview_sweep(sweep, out, workers=args.workers, device=device)
        return 0
    run_sweep(
        sweep,
        out,
        backend=args.backend,
        workers=args.workers,
        device=args.device,
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
    )
    print(f"Sweep folder: {out}  (next: imprint collect {out})")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from imprint.config import ConfigError
    from imprint.sweep import collect, format_summary, summarize, summary_figures

    rounds: list[int] = []
    if args.rounds:  # before any work
        try:
            rounds = [int(r) for r in args.rounds.split(",")]
        except ValueError:
            rounds = [-1]
        if any(r < 0 for r in rounds):
            raise ConfigError(
                f"--rounds {args.rounds}: expected round numbers >= 0, comma-separated "
                "(e.g. 10,12,14)."
            )
    rows = collect(args.sweep_dir)
    if args.summary and rows and args.by not in rows[0]:
        columns = ", ".join(k for k in rows[0] if not k.startswith(("best_", "val_", "final_")))
        raise ConfigError(f"--by {args.by}: not a column of the runs. Columns: {columns}.")
    print(
        f"{len(rows)} rows ({_count(len({r['run'] for r in rows}), 'run')}) written to "
        f"{args.sweep_dir}/results.csv (and results.parquet where pandas is installed)"
    )
    if args.summary:
        print(format_summary(summarize(rows, by=args.by, rounds=rounds), args.by))
        if args.figures:
            for path in summary_figures(summarize(rows, by=args.by), args.by, args.figures):
                print(f"figure: {path}")
    return 0


def _count(n: int, noun: str) -> str:
    """'1 run', '2 runs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _default_out(config_path: str) -> str:
    """runs/<the config's name>, when that name is a plain folder name."""
    import re
    from pathlib import Path

    from imprint.config import ConfigError

    stem = Path(config_path).stem
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9=.,_-]{0,100}", stem):
        raise ConfigError(
            f"{config_path}: its name does not make a folder name for runs/NAME; "
            "give the run folder with --out."
        )
    return str(Path("runs") / stem)


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    """The --set option of every command that loads a config."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=2000 (repeatable)",
    )


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Long options only as written (``--seed`` is not ``--seeds``), every subcommand."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imprint",
        description="Iterative magnitude pruning of fully connected networks on images, "
        "and the local connectivity that survives.",
    )
    from imprint import __version__

    parser.add_argument("--version", action="version", version=f"imprint {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run (or resume) an IMP experiment",
        description="Run the procedure of CONFIG into a run folder; re-running the same "
        "command resumes from the last completed round.",
    )
    run.add_argument("config", help="a TOML config, e.g. configs/default.toml")
    run.add_argument("--out", help="run folder (default: runs/<config name>)")
    _add_overrides(run)
    run.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where to train (default: auto = cuda when available)",
    )
    run.add_argument(
        "--seeds",
        metavar="LIST",
        help="train these seeds together as replicas of one batched model, e.g. 0,1,2 or "
        "0-4: one run folder per seed under --out, tables with mean ± sd "
        "(sets seeds.group)",
    )
    run.add_argument(
        "--track",
        metavar="NAMES",
        help="log each round to tensorboard and/or mlflow, e.g. tensorboard,mlflow: event "
        "files in RUN/tensorboard, an MLflow file store in RUN/mlruns (sets track; needs "
        "pip install -e '.[track]')",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="KEY",
        help="on resume, accept a changed value of KEY (e.g. train.lr after a divergence); "
        "the change is logged in the run folder (repeatable)",
    )
    run.set_defaults(handler=_cmd_run)

    analyze = commands.add_parser(
        "analyze",
        help="analyse a run: connectivity, locality maps, galleries, ablation, ...",
        description="Compute every analysis of a run's rounds and write numbers (JSON, npz, "
        "CSV) and figures into RUN/analysis.",
    )
    analyze.add_argument("run", help="a run folder written by `imprint run`")
    analyze.add_argument(
        "--round",
        default="study",
        help="study (default: the sparsest round keeping >= 97%% of the dense top-1), "
        "best (highest top-1), last, all, or a round number",
    )
    analyze.add_argument(
        "--gallery-size",
        type=int,
        default=120,
        help="units per mask gallery (default 120, as the paper)",
    )
    analyze.add_argument(
        "--formats", default="png,svg", help="figure formats, comma-separated (default png,svg)"
    )
    analyze.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where to evaluate the network (default: auto = cuda when available)",
    )
    analyze.add_argument("--quiet", action="store_true", help="no progress lines")
    analyze.set_defaults(handler=_cmd_analyze)

    report = commands.add_parser(
        "report",
        help="write RUN/report.html: the whole story of a run on one page",
        description="Write a self-contained HTML report of a run (figures embedded), "
        "analysing the chosen round first if needed.",
    )
    report.add_argument("run", help="a run folder")
    report.add_argument(
        "--round",
        default="study",
        help="study (default: the sparsest round keeping >= 97%% of the dense top-1), "
        "best (highest top-1), last, or a number",
    )
    report.add_argument(
        "--out",
        default=None,
        help="the page to write (an .html file; default RUN/report.html): one page per "
        "round with --round N --out RUN/report-round-N.html",
    )
    report.add_argument("--quiet", action="store_true", help="no progress lines")
    report.set_defaults(handler=_cmd_report)

    export = commands.add_parser(
        "export",
        help="one round's masks (NPY, PNG), weights (PyTorch state dicts) and tables (CSV, LaTeX)",
        description="Export a round of RUN in plain formats: every mask as .npy and the first "
        "layer's as a PNG grid; the weights as a state dict for imprint.FCN and one for a plain "
        "nn.Sequential with torch.nn.utils.prune masks; the round's metrics as CSV and LaTeX.",
    )
    export.add_argument("run", help="a run folder")
    export.add_argument(
        "--round", default="study", help="study (default), best, last, or a round number"
    )
    export.add_argument("--out", default=None, help="folder (default RUN/export/round_NNN)")
    export.set_defaults(handler=_cmd_export)

    compare = commands.add_parser(
        "compare",
        help="compare runs on one HTML page",
        description="Overlay accuracy and locality against remaining weights across runs "
        "(seeds of one config grouped), S_sc maps and galleries at equal density, and a "
        "table of scalar results.",
    )
    compare.add_argument("runs", nargs="+", help="run folders, or sweep folders (all their runs)")
    compare.add_argument(
        "--out",
        default=None,
        help="output page (default: compare.html in the folder given, or beside the first "
        "of several)",
    )
    compare.add_argument(
        "--density",
        type=float,
        default=None,
        help="common density in (0, 1] (default: the density of the first run's study "
        "round, the sparsest keeping >= 97%% of its dense top-1)",
    )
    compare.set_defaults(handler=_cmd_compare)

    sweep = commands.add_parser(
        "sweep",
        help="run every run of a sweep file (resumable), locally or on Ray",
        description="Expand SWEEP (a base config, a grid and variants of overrides) and run "
        "what is not finished yet; re-running continues an interrupted sweep.",
    )
    sweep.add_argument("sweep", help="a sweep TOML file, e.g. sweeps/synthetic.toml")
    sweep.add_argument("--out", help="sweep folder (default: runs/sweeps/<name>)")
    sweep.add_argument(
        "--backend",
        default="local",
        choices=["local", "ray"],
        help="local: a process pool on this machine (default); ray: tasks on a Ray cluster",
    )
    sweep.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local: runs in parallel processes (torch threads divided)",
    )
    sweep.add_argument("--address", default=None, help="ray: cluster address (default: local)")
    sweep.add_argument("--cpus-per-run", type=float, default=1.0, help="ray: CPUs per run")
    sweep.add_argument(
        "--gpus-per-run", type=float, default=0.0, help="ray: GPUs per run (fractions share a GPU)"
    )
    sweep.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where each run trains (default: auto = cuda when available)",
    )
    sweep.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs (finished ones marked) and an estimated time from a short "
        "measured round of each kind on this machine; run and write nothing",
    )
    sweep.set_defaults(handler=_cmd_sweep)

    collect = commands.add_parser(
        "collect",
        help="one table of a sweep's runs and rounds (CSV and Parquet)",
        description="Write SWEEP_DIR/results.csv and results.parquet: a row per run and "
        "round with the overrides, remaining weights, accuracies and scalar locality.",
    )
    collect.add_argument("sweep_dir", help="a folder written by `imprint sweep`")
    collect.add_argument(
        "--summary",
        action="store_true",
        help="print mean +- sd over seeds per group and round (Markdown)",
    )
    collect.add_argument("--by", default="variant", help="group column (default variant)")
    collect.add_argument("--rounds", default="", help="rounds to summarise, e.g. 12,13,14")
    collect.add_argument(
        "--figures", default="", help="with --summary: folder for figures over density per group"
    )
    collect.set_defaults(handler=_cmd_collect)

    datasets = commands.add_parser(
        "datasets",
        help="list the datasets, their options and the files each reads",
        description="List the datasets imprint reads, their options and where each looks.",
    )
    datasets.set_defaults(handler=_cmd_datasets)

    data = commands.add_parser("data", help="data utilities (check)", description="Data utilities.")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    check = data_commands.add_parser(
        "check",
        help="validate the data a config points at",
        description="Load the data of CONFIG and print counts, shapes, label range and class "
        "balance; any problem is one clear error naming the file.",
    )
    check.add_argument("config", help="a TOML config")
    _add_overrides(check)
    check.set_defaults(handler=_cmd_data_check)
    _no_abbreviations(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    for flag, value, after in zip(words, words[1:], [*words[2:], None]):
        if flag == "--set" and "=" not in value and after is not None and not after.startswith("-"):
            print(
                f"imprint: error: --set {value} {after}: write --set {value}={after} "
                "(key=value, no space).",
                file=sys.stderr,
            )
            return 2
    args = build_parser().parse_args(words)  # --help and --version end here, before torch loads
    for option in ("out",):  # an empty path is a mistake, not "the default"
        if getattr(args, option, None) == "":
            print(
                f"imprint: error: the '--{option}' option is empty: name a path.", file=sys.stderr
            )
            return 2
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"\nimprint: {INTERRUPTED.get(args.command, 'interrupted.')}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`imprint ... | head`): stop quietly, as a
        # command killed by SIGPIPE does; output still buffered goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as error:
        if _expected(error):
            print(f"imprint: error: {error}", file=sys.stderr)
            return 2
        if _out_of_memory(error) and not os.environ.get("IMPRINT_DEBUG"):
            print(
                f"imprint: error: out of memory ({type(error).__name__}: {error}). Completed "
                "rounds and checkpoints are kept; use narrower layers, a smaller "
                "train.batch_size or train.eval_batch_size, fewer seeds at once, or a "
                "machine with more memory, then run the same command again.",
                file=sys.stderr,
            )
            return 2
        if isinstance(error, OSError) and error.filename and not os.environ.get("IMPRINT_DEBUG"):
            # The system's own refusal (a name too long, a file where a folder is needed,
            # no permission): its reason and the path are the message.
            print(f"imprint: error: {error.filename}: {error.strerror}.", file=sys.stderr)
            return 2
        if os.environ.get("IMPRINT_DEBUG"):
            raise
        # The last resort: an error imprint did not foresee is still one line.
        print(
            f"imprint: internal error: {type(error).__name__}: {error}. This is a bug in "
            "imprint: please report it with the command you ran (IMPRINT_DEBUG=1 shows "
            "the traceback).",
            file=sys.stderr,
        )
        return 70


FIGURE_FORMATS = {"png", "svg", "pdf"}
INTERRUPTED = {
    "run": "interrupted; completed rounds (and the round in progress, up to its last "
    "checkpoint) are kept. Run the same command to resume.",
    "sweep": "interrupted; finished runs are kept and interrupted ones resume. Run the "
    "same command to continue.",
    "analyze": "analysis interrupted; the figures written so far are kept. Run the same "
    "command to analyse again.",
    "report": "interrupted; no report written. Run the same command again.",
    "compare": "interrupted; no comparison written. Run the same command again.",
}


def _out_of_memory(error: Exception) -> bool:
    """An allocation the system or the device refused: not a bug, a size."""
    import errno

    if isinstance(error, MemoryError):
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOMEM:
        return True
    return "out of memory" in str(error).lower() and type(error).__name__.endswith(
        ("OutOfMemoryError", "RuntimeError")
    )


def _expected(error: Exception) -> bool:
    """Errors that name their file or option: one line, no traceback. Their modules are
    loaded by now (the command raised them), so importing them here costs nothing."""
    from imprint.data import DataError
    from imprint.safeio import RunFolderError
    from imprint.train import TrainingDiverged

    return isinstance(error, (ConfigError, DataError, RunFolderError, TrainingDiverged))


if __name__ == "__main__":
    sys.exit(main())
