"""imprint in a notebook: :func:`open` a run, group or sweep folder and read it as
Python objects. Rounds and readings come as pandas DataFrames (each reading with its
spread: a run's bootstrap sd, a group's sd over seeds), masks and weights as tensors,
every registered figure as a matplotlib Figure drawn on demand (no ``imprint analyze``
needed first), and a summary in HTML when a notebook displays the object.

    >>> import imprint
    >>> run = imprint.open("runs/smoke")
    >>> run.rounds[["density", "best_val_top1", "locality_index", "locality_index_sd"]]
    >>> run.figure("locality_maps")          # the study round's S_sc map
    >>> group = imprint.open("runs/imp3")    # seeds run together: mean ± sd over seeds
    >>> group.figure("ablation", round=8)    # pooled over the seeds

Everything here reads through :mod:`imprint.results` and draws through the analyses
registry, the same entries `imprint analyze` and `imprint report` use; nothing is
written to the folders."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from imprint import analyses
from imprint.analyses import AnalysisOptions, History
from imprint.analyze import load_round
from imprint.data import DataError, ImageData, load_dataset
from imprint.pages import readable, table
from imprint.plots import Animation
from imprint.readings import READINGS, aggregate_over_seeds, format_spread
from imprint.results import GroupResults, RunResults, read_curves
from imprint.runs import is_group
from imprint.safeio import RunFolderError
from imprint.sweep import results_rows, sweep_run_folders

if TYPE_CHECKING:
    import pandas

__all__ = ["Group", "Run", "Sweep", "open"]


def open(path: str | Path) -> Run | Group | Sweep:  # noqa: A001  # imprint.open, as asked
    """A run folder, a group folder (seeds run together) or a sweep folder, as its
    :class:`Run`, :class:`Group` or :class:`Sweep`; a RunFolderError naming the path
    when it is none of them."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path} is not a folder: give a run, group or sweep folder.")
    if (path / "sweep.json").is_file():
        return Sweep(path)
    if is_group(path):
        return Group(path)
    return Run(path)


def _frame(rows: Sequence[dict[str, Any]]) -> pandas.DataFrame:
    import pandas

    return pandas.DataFrame(list(rows))


def _figure_names() -> dict[str, tuple[Any, int]]:
    """Every registered figure by name (its file stem without the layer): the entry
    that draws it and its place among the entry's figures."""
    names: dict[str, tuple[Any, int]] = {}
    entries: list[Any] = [*analyses.OVER_ROUNDS, *analyses.ROUND_ANALYSES]
    for entry in entries:
        for position, spec in enumerate(entry.figures):
            names[re.sub(r"_l(\{l\}|0)$", "", spec.stem)] = (entry, position)
    return names


def _entry(name: str) -> tuple[Any, int]:
    names = _figure_names()
    if name not in names:
        raise ValueError(
            f"The 'name' parameter must be one of the registered figures "
            f"({', '.join(sorted(names))}). Got {name!r}."
        )
    return names[name]


def _drawn(entry: Any, result: analyses.Result, position: int, name: str) -> Any:
    if result.skip:
        raise ValueError(f"Figure {name!r} cannot be drawn here: {result.skip}.")
    figures = list(entry.plot(result))
    if isinstance(figures[position], Animation):
        raise ValueError(f"Figure {name!r} is an animation: `imprint analyze` writes it as a GIF.")
    return figures[position]


class Run:
    """One run folder: its rounds, readings, masks, weights and figures."""

    def __init__(self, path: str | Path, options: AnalysisOptions | None = None) -> None:
        self.results = RunResults(path)
        self.path = self.results.root
        self.options = options or AnalysisOptions(formats=("png",))
        self._data: ImageData | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Any:
        """The run's resolved config (:class:`imprint.config.Config`)."""
        return self.results.config

    @property
    def study_round(self) -> int:
        """The sparsest round keeping >= 97% of the dense round's best top-1."""
        return self.results.study_round

    def round_index(self, round: int | str = "study") -> int:  # noqa: A002  # the CLI's word
        """A round number from ``round``: a number, "study", "best" or "last"."""
        (index,) = self.results.resolve(str(round))
        return index

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per completed round: density, accuracies, stop-relevant counts and
        every registered round reading (value, ``_sd``, ``_null``, ...)."""
        out = []
        for index, metrics in zip(self.results.rounds, self.results.metrics):
            out.append(
                {
                    "round": index,
                    "density": metrics["density"],
                    "density_l0": metrics["layer_density"][0],
                    "best_val_top1": metrics["best_val_top1"],
                    "test_top1_at_best": metrics.get("test_top1_at_best", math.nan),
                    "connected_l0": metrics["connected_units"][0],
                    **self.results.readings(index),
                }
            )
        return out

    @property
    def rounds(self) -> pandas.DataFrame:
        """A DataFrame, one row per completed round (see :attr:`rows`)."""
        return _frame(self.rows).set_index("round")

    def readings(self, round: int | str = "study") -> pandas.DataFrame:  # noqa: A002
        """The registered readings of one round, one row each: value, sd, interval,
        null, number of pairs or units, and the reason where there is no value."""
        index = self.round_index(round)
        rows = []
        for name, reading in self.results.typed_readings(index).items():
            rows.append(
                {
                    "reading": name,
                    "label": READINGS[name].label,
                    "value": reading.value,
                    "sd": reading.sd,
                    "low": reading.low,
                    "high": reading.high,
                    "null": reading.null,
                    "n": reading.n,
                    "reason": reading.reason,
                }
            )
        return _frame(rows).set_index("reading")

    def curves(self, round: int | str = "study") -> pandas.DataFrame:  # noqa: A002
        """Loss and accuracy at each validation step of one round."""
        return _frame(read_curves(self.results.folder, self.round_index(round)))

    def masks(self, round: int | str = "study") -> dict[str, torch.Tensor]:  # noqa: A002
        """The round's bool masks, keyed like the model's state dict."""
        return self.results.masks(self.round_index(round))

    def weights(self, round: int | str = "study", which: str = "final") -> dict[str, torch.Tensor]:  # noqa: A002
        """The round's state dict: "final" (after training) or "start" (what it trained from)."""
        if which not in ("final", "start"):
            raise ValueError(f"The 'which' parameter must be 'final' or 'start'. Got {which!r}.")
        return self.results.folder.round_state(self.round_index(round), which)

    @property
    def figures(self) -> list[str]:
        """The names :meth:`figure` draws."""
        return sorted(_figure_names())

    @property
    def data(self) -> ImageData | None:
        """The run's dataset, loaded on first use (None when it cannot be loaded)."""
        if self._data is None:
            try:
                self._data = load_dataset(self.config.data)
            except DataError:
                return None
        return self._data

    def result(self, entry: Any, index: int, layer: int) -> analyses.Result:
        """``entry``'s result on round ``index``, with the run's data when it loads (some
        entries need it, the pixel map's quiet pixels use it), as `imprint analyze`."""
        one = load_round(self.results.folder, self.config, index, self.options, self.data)
        return entry.compute(one, layer)

    def history(self) -> History:
        index = self.results.rounds[-1]
        return History(
            self.results.metrics,
            self.rows,
            self.study_round,
            "within-run bootstrap",
            self.options,
            round_masks=self.results.masks,
            shape=self.results.shape,
            perm=self.results.permutation,
            anchor=index,
        )

    def figure(self, name: str, round: int | str = "study", layer: int = 0) -> Any:  # noqa: A002
        """A registered figure (see :attr:`figures`) as a matplotlib Figure: over rounds
        ("accuracy", "locality", ...) or of one round ("locality_maps", "gallery_most",
        "ablation", ...; ``layer`` for the entries drawn per hidden layer)."""
        entry, position = _entry(name)
        if isinstance(entry, analyses.OverRounds):
            return _drawn(entry, entry.compute(self.history()), position, name)
        return _drawn(entry, self.result(entry, self.round_index(round), layer), position, name)

    def _repr_html_(self) -> str:
        config = self.config
        at = self.rows[[r["round"] for r in self.rows].index(self.study_round)]
        head = (
            f"<b>{html.escape(self.name)}</b>: {config.data.name}, procedure "
            f"{config.prune.procedure}, {len(self.rows)} rounds; study round "
            f"{self.study_round} ({at['density']:.2%} left, top-1 {at['best_val_top1']:.4f}); "
            f"stop: {html.escape(str(self.results.record.get('stop_reason', 'running')))}"
        )
        return f"<div>{head}{table(readable(self.results.summary_table()))}</div>"

    def __repr__(self) -> str:
        return f"imprint.Run({str(self.path)!r})"


class Group:
    """A group folder (seeds trained together): every reading as mean ± sd over its
    seeds, each seed a :class:`Run`, figures pooled over the seeds where the analysis
    pools (S_sc summed, curves and ablation mean ± sd) and one seed's, said, otherwise."""

    def __init__(self, path: str | Path, options: AnalysisOptions | None = None) -> None:
        self.results = GroupResults(path)
        self.path = self.results.root
        self.options = options or AnalysisOptions(formats=("png",))
        self.seeds = self.results.seeds
        self._mean = self.results.mean_metrics
        self.runs = [Run(member.root, self.options) for member in self.results.members]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Any:
        return self.runs[0].config

    @property
    def study_round(self) -> int:
        """The study round of the mean over seeds."""
        return self.results.study_round

    def round_index(self, round: int | str = "study") -> int:  # noqa: A002
        if str(round) == "study":
            return self.study_round
        return self.runs[0].round_index(round)

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """Per round: how many seeds reached it, and each column's mean and ``_sd``
        over them (the columns of :attr:`Run.rows`)."""
        per_seed = [run.rows for run in self.runs]
        names = [k for k in per_seed[0][0] if k != "round"]
        out = []
        for position in range(max(len(rows) for rows in per_seed)):
            reached = [rows[position] for rows in per_seed if len(rows) > position]
            stats = aggregate_over_seeds(reached, names)
            row: dict[str, Any] = {"round": reached[0]["round"], "seeds": len(reached)}
            row |= {k: v for k, v in stats.items() if not k.endswith("_n")}
            out.append(row)
        return out

    @property
    def rounds(self) -> pandas.DataFrame:
        """A DataFrame, one row per round: mean and sd over seeds of every column."""
        return _frame(self.rows).set_index("round")

    @property
    def per_seed(self) -> pandas.DataFrame:
        """Every seed's rounds in one long DataFrame (a "seed" column)."""
        rows = [{"seed": s, **row} for s, run in zip(self.seeds, self.runs) for row in run.rows]
        return _frame(rows)

    @property
    def figures(self) -> list[str]:
        return sorted(_figure_names())

    def figure(self, name: str, round: int | str = "study", layer: int = 0) -> Any:  # noqa: A002
        """A registered figure over the seeds: over rounds with ± 1 sd bands over
        seeds; of one round pooled over the seeds, or (for an analysis that does not
        pool) the first seed's, its title saying so."""
        entry, position = _entry(name)
        if isinstance(entry, analyses.OverRounds):
            if not entry.groups:
                return self._example(self.runs[0].figure(name, round, layer))
            history = History(self._mean, self.rows, self.study_round, "over seeds", self.options)
            return _drawn(entry, entry.compute(history), position, name)
        index = self.round_index(round)
        if entry.pool is None:
            return self._example(self.runs[0].figure(name, index, layer))
        results = [run.result(entry, index, layer) for run in self.runs]
        skipped = next((r.skip for r in results if r.skip), "")
        if skipped:
            raise ValueError(f"Figure {name!r} cannot be drawn here: {skipped}.")
        seeds = analyses.Seeds(
            index,
            self.seeds,
            [r.numbers for r in results],
            [r.arrays for r in results],
            [read_curves(run.results.folder, index) for run in self.runs],
        )
        return _drawn(entry, entry.pool(seeds, layer), position, name)

    def _example(self, figure: Any) -> Any:
        label = f"Example, one seed: seed {self.seeds[0]} of {len(self.seeds)}"
        figure.suptitle(label, fontsize=8, y=1.02)
        return figure

    def _repr_html_(self) -> str:
        at = self.rows[[r["round"] for r in self.rows].index(self.study_round)]
        head = (
            f"<b>{html.escape(self.name)}</b>: {len(self.seeds)} seeds "
            f"({', '.join(map(str, self.seeds))}), {self.config.data.name}, procedure "
            f"{self.config.prune.procedure}; study round {self.study_round} "
            f"({at['density']:.2%} left, top-1 "
            f"{format_spread(at['best_val_top1'], at['best_val_top1_sd'], 4)}); "
            "mean ± sample sd over seeds"
        )
        return f"<div>{head}{table(readable(self.results.summary_table()))}</div>"

    def __repr__(self) -> str:
        return f"imprint.Group({str(self.path)!r})"


class Sweep:
    """A sweep folder: one row per run and round (what `imprint collect` writes, read
    without writing), and each run by name."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._folders = [folder for folder, _ in sweep_run_folders(self.path)]

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        return results_rows(self.path)

    @property
    def rounds(self) -> pandas.DataFrame:
        """One row per run and round: the run's overrides, density, accuracy, readings."""
        return _frame(self.rows)

    @property
    def names(self) -> list[str]:
        """The runs' folder names (a group member: ``group/seed_N``)."""
        return sorted({row["run"] for row in self.rows})

    def run(self, name: str) -> Run:
        """The run called ``name`` (one of :attr:`names`)."""
        for folder in self._folders:
            if name in (folder.name, f"{folder.parent.name}/{folder.name}"):
                return Run(folder)
        raise ValueError(f"The 'name' parameter must be one of {self.names}. Got {name!r}.")

    def _repr_html_(self) -> str:
        last = {}
        for row in self.rows:
            last[row["run"]] = row
        rows = [
            {
                "run": name,
                "rounds": row["round"] + 1,
                "weights left": f"{row['density']:.2%}",
                "val. top-1": f"{row['best_val_top1']:.4f}",
                "finished": row["finished"],
            }
            for name, row in last.items()
        ]
        head = f"<b>{html.escape(self.path.name)}</b>: {len(rows)} runs (their last rounds)"
        return f"<div>{head}{table(rows)}</div>"

    def __repr__(self) -> str:
        return f"imprint.Sweep({str(self.path)!r})"
