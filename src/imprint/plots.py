"""Figures drawn from computed results; nothing here recomputes an analysis.

Every function takes numbers (a result dataclass or arrays) and an optional axes,
and returns the figure. One style throughout: labelled axes with units, colour bars
on every image of values, ``viridis`` for counts, ``RdBu_r`` centred at 0 for signed
weights, RGB for colour masks.
"""

from __future__ import annotations

import io
import math
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend: figures show
    matplotlib.use("Agg")  # files only; never opens a window

import matplotlib.pyplot as plt  # noqa: E402

if "ipykernel" in sys.modules:
    # The inline backend sets itself up on the first figure; made inside one of our style
    # contexts, that set-up would be undone on leaving it, and later figures not shown.
    plt.close(plt.figure())
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from imprint.safeio import write_bytes  # noqa: E402

__all__ = [
    "STYLE",
    "Animation",
    "save_figure",
    "plot_accuracy_vs_remaining",
    "plot_scalar_over_rounds",
    "plot_curves",
    "plot_cin_histogram",
    "plot_pixel_map",
    "plot_displacement_maps",
    "plot_connection_resolved",
    "plot_gallery",
    "write_evolution_gif",
    "mosaic",
    "plot_groups_over_density",
    "group_color",
    "legend_below",
]

# matplotlib's stub types rcParams keys as a Literal of every known name.
STYLE: dict[Any, Any] = {
    "figure.dpi": 110,
    "savefig.dpi": 200,  # PNGs sharp enough to zoom into; SVG for papers
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": False,
    "figure.constrained_layout.use": True,
}
COUNT_CMAP = "viridis"
SIGNED_CMAP = "RdBu_r"


def _axes(ax: Any | None, size: tuple[float, float] = (5.0, 3.6)) -> tuple[Figure, Any]:
    if ax is not None:
        return ax.figure, ax
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=size)
    return fig, ax


@dataclass(frozen=True)
class Animation:
    """Frames of unit images (n, C, H, W), a title each: saved as an animated GIF."""

    frames: Sequence[torch.Tensor]
    titles: Sequence[str]


def save_figure(
    fig: Figure | Animation, stem: Path, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Write ``fig`` as ``stem.png`` (and ``.svg`` for papers); close it. An
    :class:`Animation` becomes ``stem.gif`` whatever the formats."""
    if isinstance(fig, Animation):
        return [write_evolution_gif(fig.frames, fig.titles, stem.with_suffix(".gif"))]
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, bbox_inches="tight")  # labels and legends whole
        write_bytes(path, buffer.getvalue())  # a fresh temporary, never a planted link
        paths.append(path)
    plt.close(fig)
    return paths


def _percent(density: Sequence[float]) -> np.ndarray:
    return 100.0 * np.asarray(density, dtype=float)


_PLAIN = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")


def legend_below(
    ax: Any,
    handles: Sequence[Any] | None = None,
    labels: Sequence[str] | None = None,
    columns: int = 2,
) -> None:
    """The legend below the axes, outside the data: curves that sweep across the whole
    plot (accuracy, locality, kurtosis) leave no corner free."""
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        # as many columns as fit the width of the figure (about 50 characters of labels)
        ncol=max(1, min(columns, len(labels), 50 // max(12, *map(len, labels)))),
        frameon=False,
    )


def density_axis(ax: Any, ylabel: str, log_y: bool = False) -> None:
    """The x axis every over-rounds figure shares: % of prunable weights left, log scale,
    reversed so that pruning proceeds to the right."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    # 100, 50, 20, 10, ...: plain numbers (not 10^2 or 2x10^0), labelled even when the
    # rounds span less than a decade
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_PLAIN)
    ax.set_xlabel("prunable weights left (%)")
    ax.set_ylabel(ylabel)


def plot_accuracy_vs_remaining(
    rounds: Sequence[Mapping[str, Any]], ax: Any | None = None, study: int | None = None
) -> Figure:
    """Best validation top-1 of each round against the % of prunable weights left
    (log axis, reversed: pruning proceeds to the right); the best round marked, and the
    study round when given. Rows with ``best_val_top1_sd`` (a group's mean over seeds)
    get a ± 1 sd band."""
    fig, ax = _axes(ax)
    x = _percent([m["density"] for m in rounds])
    y = [100 * m["best_val_top1"] for m in rounds]
    seeds = rounds[0].get("seeds") if rounds else None
    ax.plot(
        x,
        y,
        "o-",
        color="C0",
        ms=4,
        label="best validation top-1" + (f" (mean of {seeds} seeds)" if seeds else ""),
    )
    if seeds:
        sd = np.nan_to_num([100 * m["best_val_top1_sd"] for m in rounds])
        ax.fill_between(x, np.asarray(y) - sd, np.asarray(y) + sd, color="C0", alpha=0.2, lw=0)
    if study is not None:
        at = [m["round"] for m in rounds].index(study)
        ax.axvline(x[at], color="C2", lw=1, ls=":", label=f"study round {study}")
    best = int(np.argmax(y))
    ax.plot(
        [x[best]],
        [y[best]],
        "*",
        color="C3",
        ms=14,
        clip_on=False,  # a star at the axis' edge drawn whole
        label=f"best: round {rounds[best]['round']} ({y[best]:.2f}%)",
    )
    ax.axhline(y[0], color="0.6", lw=0.8, ls="--", label="dense")
    density_axis(ax, "validation top-1 (%)")
    legend_below(ax)
    return fig


def plot_scalar_over_rounds(
    rounds: Sequence[Mapping[str, Any]],
    values: Sequence[float],
    label: str,
    null: float | Sequence[float] | None = None,
    ax: Any | None = None,
    log_y: bool = False,
    null_label: str = "null",
    spread: Sequence[float] | None = None,
    spread_label: str = "± 1 sd",
) -> Figure:
    """A per-round scalar (locality, kurtosis, ...) against % weights left, with its null
    and, when given, a band of ± ``spread`` (a bootstrap sd, or the sd over seeds)."""
    fig, ax = _axes(ax)
    x = _percent([m["density"] for m in rounds])
    ax.plot(x, values, "o-", ms=4, color="C0", label=label)
    if spread is not None:
        y = np.asarray(values, dtype=float)
        sd = np.nan_to_num(np.asarray(spread, dtype=float))
        ax.fill_between(x, y - sd, y + sd, color="C0", alpha=0.2, lw=0, label=spread_label)
    if null is not None:
        nulls = np.broadcast_to(np.asarray(null, dtype=float), x.shape)
        ax.plot(x, nulls, "--", color="0.5", label=null_label)
    density_axis(ax, textwrap.fill(label, 30), log_y)  # a long label on two lines, not cut
    legend_below(ax)
    return fig


def plot_curves(
    curves: Sequence[Mapping[str, float]],
    title: str = "",
    ax: Any | None = None,
    spread: Sequence[Mapping[str, float]] | None = None,
) -> Figure:
    """Training loss and validation accuracy against SGD steps; with ``spread`` (rows
    of sds at the same steps: a group's sd over seeds), a ± 1 sd band on each curve."""
    fig, ax = _axes(ax)
    steps = [row["step"] for row in curves]
    right = ax.twinx()
    lines = (
        (ax, "train_loss", 1, "C0", "-", "train loss"),
        (ax, "val_loss", 1, "C0", "--", "val loss"),
        (right, "val_top1", 100, "C1", "-", "val top-1"),
        (right, "train_top1", 100, "C1", ":", "train top-1"),
    )
    for axis, key, scale, color, style, label in lines:
        y = scale * np.array([row[key] for row in curves], dtype=float)
        axis.plot(steps, y, color=color, ls=style, label=label)
        if spread is not None:
            sd = scale * np.array([row[key] for row in spread], dtype=float)
            axis.fill_between(steps, y - sd, y + sd, color=color, alpha=0.15, lw=0)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("cross-entropy loss (nats)")
    right.set_ylabel("accuracy (%)")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    legend_below(ax, lines[0] + more[0], lines[1] + more[1], columns=4)
    if title:
        ax.set_title(title)
    return fig


def plot_cin_histogram(c_in: torch.Tensor, title: str = "", ax: Any | None = None) -> Figure:
    """Histogram of C_in over units, log counts; disconnected units counted in the legend."""
    fig, ax = _axes(ax)
    values = c_in.long().cpu().numpy()
    connected = values[values > 0]
    if connected.size:
        lo, hi = int(connected.min()), int(connected.max())
        # integer-centred bins while they are few; 50 equal bins beyond
        bins = np.arange(lo, hi + 2) - 0.5 if hi - lo < 50 else 50
        ax.hist(connected, bins=bins, color="C0", log=True)
        ax.yaxis.set_major_formatter(_PLAIN)  # 1, 10, 100 units, not 10^0
        ax.yaxis.set_minor_formatter(_PLAIN)  # 20, 30, ..., not 2 x 10^1
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # counts
    ax.set_xlabel("C_in: inputs connected to the unit")
    ax.set_ylabel("units (log)")
    ax.set_title(
        title or f"{connected.size} connected, {values.size - connected.size} disconnected"
    )
    return fig


def _rgb(image: np.ndarray) -> np.ndarray:
    """(3, H, W) non-negative -> (H, W, 3) in [0, 1], one common scale."""
    peak = image.max()
    return np.transpose(image / peak if peak > 0 else image, (1, 2, 0))


def plot_pixel_map(
    pixel_map: torch.Tensor,
    title: str = "connections per input pixel",
    ax: Any | None = None,
    quiet: np.ndarray | None = None,
    share: float | None = None,
) -> Figure:
    """(C, H, W) connection counts: RGB for 3 channels, one panel with a colour bar
    per channel otherwise. ``quiet`` (H, W) bool pixels are marked with an x, and
    ``share`` (their share of the connections) is said in the title."""
    image = pixel_map.double().cpu().numpy()
    if quiet is not None:
        said = f"; x: {int(quiet.sum())} quiet pixels" + (
            # beside its null: connections spread evenly over the pixels
            f", {share:.1%} of connections (even: {quiet.mean():.1%})"
            if share is not None and math.isfinite(share)
            else ""
        )
        title = textwrap.fill(title + said, 48)
    figure = _pixel_panels(image, title, ax)
    if quiet is not None and quiet.any():
        ys, xs = np.nonzero(quiet)
        for a in figure.axes:
            if a.images:  # the image panels, not their colour bars
                a.plot(xs, ys, "x", color="0.55", ms=3, mew=0.7, lw=0)
    return figure


def _pixel_panels(image: np.ndarray, title: str, ax: Any | None) -> Figure:
    channels = image.shape[0]
    if channels == 3:
        fig, ax = _axes(ax, (4.4, 3.6))
        ax.imshow(_rgb(image), interpolation="nearest")
        ax.set_title(f"{title} (RGB, max {image.max():.0f})")
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
        return fig
    with plt.rc_context(STYLE):
        zoom = 1.4 if image.shape[1] >= 20 else 1.0  # room to see single pixels of big images
        fig, axes = plt.subplots(
            1, channels, figsize=(3.8 * channels * zoom, 3.3 * zoom), squeeze=False
        )
    for c, a in enumerate(axes[0]):
        im = a.imshow(image[c], cmap=COUNT_CMAP, interpolation="nearest")
        bar = fig.colorbar(im, ax=a, label="connections")
        bar.locator = matplotlib.ticker.MaxNLocator(integer=True)  # counts: whole ticks
        bar.update_ticks()
        a.set_title(title if channels == 1 else f"{title}, channel {c}")
        a.set_xlabel("x (pixels)")
        a.set_ylabel("y (pixels)")
    return fig


def _displacement_image(
    ax: Any, values: np.ndarray, title: str, fig: Figure, log: bool, vmax: float | None, unit: str
) -> None:
    height, width = (values.shape[0] + 1) // 2, (values.shape[1] + 1) // 2
    extent = (-width + 0.5, width - 0.5, height - 0.5, -height + 0.5)
    shown = np.log10(values + 1) if log else values
    top = None if vmax is None else (np.log10(vmax + 1) if log else vmax)
    im = ax.imshow(shown, cmap=COUNT_CMAP, extent=extent, interpolation="nearest", vmin=0, vmax=top)
    fig.colorbar(im, ax=ax, label=f"log10(1 + {unit})" if log else unit)
    ax.set_title(title)
    ax.set_xlabel("dx (pixels)")
    ax.set_ylabel("dy (pixels)")


def plot_displacement_maps(
    s_sc: torch.Tensor,
    s_dc: torch.Tensor | None,
    log: bool = False,
    title: str = "",
    vmax: float | None = None,
    unit: str = "pairs",
) -> Figure:
    """S_sc(d) (and S_dc(d) for colour inputs): pairs of connected inputs at displacement
    d, displacement 0 at the centre; the colour scale from 0 to ``vmax`` (maps side by
    side share one), else to the map's largest value."""
    panels = [("same channel S_sc(d)", s_sc)] + (
        [("different channels S_dc(d)", s_dc)] if s_dc is not None else []
    )
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for a, (name, values) in zip(axes[0], panels):
        _displacement_image(a, values.double().cpu().numpy(), name, fig, log, vmax, unit)
    if title:
        fig.suptitle(title)
    return fig


def plot_enrichment_map(observed: torch.Tensor, expected: torch.Tensor, title: str = "") -> Figure:
    """S_sc(d) over its pixel-usage expectation, log2 (0: as pixel usage alone gives;
    red: more pairs at that displacement), displacement 0 at the centre."""
    o, e = observed.double().cpu().numpy(), expected.double().cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(e > 0, np.log2((o + 0.5) / (e + 0.5)), np.nan)
    height, width = (ratio.shape[0] + 1) // 2, (ratio.shape[1] + 1) // 2
    extent = (-width + 0.5, width - 0.5, height - 0.5, -height + 0.5)
    limit = max(1.0, float(np.nanmax(np.abs(ratio))) if np.isfinite(ratio).any() else 1.0)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.4, 3.6))
    im = ax.imshow(
        ratio, cmap="RdBu_r", vmin=-limit, vmax=limit, extent=extent, interpolation="nearest"
    )
    fig.colorbar(im, ax=ax, label="log2(observed / pixel-usage expected)")
    ax.set_title(title or "S_sc over pixel usage")
    ax.set_xlabel("dx (pixels)")
    ax.set_ylabel("dy (pixels)")
    return fig


def plot_connection_resolved(
    maps: Sequence[torch.Tensor], labels: Sequence[str], columns: int = 4
) -> Figure:
    """S_sc(d) for units binned by C_in, one panel per bin (label: bin and unit count)."""
    n = max(1, len(maps))
    rows = (n + columns - 1) // columns
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            rows, min(columns, n), figsize=(3.2 * min(columns, n), 2.9 * rows), squeeze=False
        )
    for a in axes.flat:
        a.set_axis_off()
    for a, values, label in zip(axes.flat, maps, labels):
        a.set_axis_on()
        _displacement_image(a, values.double().cpu().numpy(), label, fig, False, None, "pairs")
    return fig


def mosaic(data: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """(n, C, H, W) -> one (rows*(H+gap), cols*(W+gap), C) canvas, NaN between tiles."""
    n, channels, height, width = data.shape
    rows = (n + columns - 1) // columns
    canvas = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, channels), np.nan)
    for i in range(n):
        r, c = divmod(i, columns)
        y, x = r * (height + gap), c * (width + gap)
        canvas[y : y + height, x : x + width] = np.transpose(data[i], (1, 2, 0))
    return canvas


def plot_gallery(
    images: torch.Tensor,
    title: str,
    labels: Sequence[str] | None = None,
    signed: bool = False,
    columns: int = 12,
) -> Figure:
    """A grid of unit images (n, C, H, W), drawn as one mosaic: binary or count masks
    in RGB (C = 3) or ``viridis``; signed weighted masks in ``RdBu_r`` centred at 0
    (C = 1) or as RGB of 0.5 + w / (2 max|w|) (C = 3). Optional per-tile labels."""
    data = images.double().cpu().numpy()
    if data.shape[0] == 0:
        data = np.zeros((1, *data.shape[1:]))
    n, channels, height, width = data.shape
    cols = min(columns, n)
    peak = float(np.abs(data).max()) or 1.0
    binary = not signed and bool(np.isin(data, (0.0, 1.0)).all())  # a mask: no colour scale
    # Room for a legible label above each tile: the gap between rows, in pixels, sized
    # so that the 7 pt label fits (a tile is ~0.75 in high).
    gap = max(1, round(0.16 * height)) if labels is not None else 1
    canvas = mosaic(data, cols, gap)
    tile = 0.75 if max(height, width) <= 16 else 0.9
    scale_bar = channels != 3 and not binary  # room for it, so the tiles keep their size
    inch = tile / max(height, width)  # per canvas pixel, gaps included
    fig, ax = _axes(
        None,
        (
            # at least wide enough for the title over a handful of tiles
            max(3.0, inch * canvas.shape[1] + (1.6 if scale_bar else 0.4)),
            max(1.6, inch * canvas.shape[0] + (0.9 if labels is not None else 0.6)),
        ),
    )
    if channels == 3:
        shown = 0.5 + canvas / (2 * peak) if signed else canvas / peak
        shown = np.where(np.isnan(shown), 1.0, np.clip(shown, 0, 1))  # white gaps
        ax.imshow(shown, interpolation="nearest")
    else:
        cmap = matplotlib.colormaps[SIGNED_CMAP if signed else COUNT_CMAP].with_extremes(
            bad="white"
        )
        lo = -peak if signed else 0.0
        im = ax.imshow(
            np.ma.masked_invalid(canvas[..., 0]),
            cmap=cmap,
            vmin=lo,
            vmax=peak,
            interpolation="nearest",
        )
        if scale_bar:
            fig.colorbar(im, ax=ax, shrink=0.6, label="weight" if signed else "paths")
    if labels is not None:
        for i, label in enumerate(labels[:n]):
            r, c = divmod(i, cols)
            ax.text(
                c * (width + gap),
                r * (height + gap) - 0.3,
                label,
                fontsize=7,
                va="bottom",
                ha="left",
                clip_on=False,
            )
    ax.set_axis_off()
    ax.set_title(title, fontsize=9, pad=12 if labels is not None else 4)
    return fig


def group_color(i: int, n: int) -> Any:
    """The colour of group i of n: the default cycle, or 20 distinct ones past 10."""
    return matplotlib.colormaps["tab20"](i % 20) if n > 10 else f"C{i}"


def plot_groups_over_density(
    table: Sequence[Mapping[str, Any]],
    by: str,
    metric: str,
    label: str,
    null: float | None = None,
    log_y: bool = False,
    ax: Any | None = None,
) -> Figure:
    """Mean (and +-1 sd band over seeds) of ``metric`` per group against % weights left,
    from rows of :func:`imprint.sweep.summarize`."""
    fig, ax = _axes(ax, (6.4, 4.2))
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in table:
        groups.setdefault(row[by], []).append(row)
    for i, (group, rows) in enumerate(sorted(groups.items(), key=lambda g: str(g[0]))):
        rows = sorted(rows, key=lambda r: r["round"])
        x = _percent([r["density"] for r in rows])
        y = np.array([r[metric] for r in rows], dtype=float)
        sd = np.array([r.get(f"{metric}_sd", 0.0) for r in rows], dtype=float)
        color = group_color(i, len(groups))
        ax.plot(x, y, "o-", ms=3, color=color, label=f"{group} ({rows[0]['runs']} seeds)")
        ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.15)
    if null is not None:
        ax.axhline(null, color="0.5", ls="--", lw=0.8, label="null")
    density_axis(ax, textwrap.fill(label, 34), log_y)
    legend_below(ax, columns=3)
    return fig


def write_evolution_gif(
    frames: Sequence[torch.Tensor],
    titles: Sequence[str],
    path: Path,
    columns: int = 15,
    duration_ms: int = 600,
) -> Path:
    """An animated GIF of the same units' masks across rounds: one frame per round,
    each a grid of (n, C, H, W) images."""
    from PIL import Image

    images = []
    for frame, title in zip(frames, titles):
        fig = plot_gallery(frame, title, columns=columns)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        buffer.seek(0)
        images.append(Image.open(buffer).convert("RGB"))
    if not images:
        raise ValueError("The 'frames' parameter must hold at least one frame. Got none.")
    size = images[0].size
    images = [im.resize(size) for im in images]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0
    )
    write_bytes(path, buffer.getvalue())
    return path
