"""Figures of what first-layer units do: node ablation (accuracy as units are removed,
by order, with its spread over seeds) and class response. Drawn from results, never
recomputing them, in :mod:`imprint.plots`' style."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from imprint.plots import SIGNED_CMAP, STYLE, _axes, legend_below

__all__ = ["plot_ablation", "plot_class_response"]


def plot_ablation(
    curves: Sequence[Any],
    n_units: int,
    baseline: float | None = None,
    ax: Any | None = None,
    spread: Mapping[str, Sequence[float]] | None = None,
    difference: tuple[Sequence[int], Sequence[float], Sequence[float]] | None = None,
    seeds: int | None = None,
) -> Figure:
    """Validation top-1 after removing s first-layer units, for each removal order.
    Over seeds: curves are means with ± 1 sd bands (``spread`` by order) and, given
    ``difference`` (removed, mean, sd of most-first minus random, paired by seed), a
    second panel shows that paired difference."""
    below = None
    if difference is not None and ax is None:
        with plt.rc_context(STYLE):
            fig, (ax, below) = plt.subplots(
                2, 1, figsize=(5.0, 5.2), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
            )
    else:
        fig, ax = _axes(ax)
    names = {"most": "most connected first", "least": "least connected first"}
    over = f" (mean of {seeds} seeds)" if seeds else ""
    for i, curve in enumerate(curves):
        y = 100 * np.asarray(curve.top1, dtype=float)
        name = names.get(curve.mode, f"{curve.mode} order")
        ax.plot(curve.removed, y, "o-", ms=3, color=f"C{i}", label=name + over)
        if spread is not None:
            sd = 100 * np.asarray(spread[curve.mode], dtype=float)
            ax.fill_between(curve.removed, y - sd, y + sd, color=f"C{i}", alpha=0.15, lw=0)
    if baseline is not None:
        ax.axhline(100 * baseline, color="0.6", lw=0.8, ls=":", label="chance")
    ax.set_ylabel("validation top-1 (%)")
    if below is not None and difference is not None:
        removed, mean, sd = (np.asarray(v, dtype=float) for v in difference)
        below.plot(removed, 100 * mean, "o-", ms=3, color="k", label="most first - random")
        below.fill_between(
            removed, 100 * (mean - sd), 100 * (mean + sd), color="k", alpha=0.15, lw=0
        )
        below.axhline(0, color="0.6", lw=0.8, ls=":")
        below.set_ylabel("paired difference\n(points, ± 1 sd)")
    bottom = below if below is not None else ax
    bottom.set_xlabel(f"first-layer units removed (of {n_units})")
    if below is None:
        legend_below(ax, *_handles(fig), columns=2)
    else:  # below both panels, clear of the lower one's axis label
        fig.legend(*_handles(fig), loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig


def _handles(fig: Figure) -> tuple[list[Any], list[str]]:
    """Every line of a figure's axes, for one legend below them all."""
    handles, labels = [], []
    for a in fig.axes:
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    return handles, labels


def plot_class_response(
    means: torch.Tensor,
    spread: torch.Tensor,
    scores: Sequence[float],
    units: Sequence[int],
    ax: Any | None = None,
) -> Figure:
    """Class-averaged activation of selected units (rows) as (class mean - unit mean) /
    unit std: near 0 everywhere means the unit responds alike to every class."""
    m = means.double().cpu().numpy()
    sd = spread.double().cpu().numpy()[:, None]
    z = (m - m.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    peak = max(float(np.nanmax(np.abs(z))) if z.size else 1.0, 0.1)
    fig, ax = _axes(ax, (5.2, 0.22 * len(units) + 1.5))
    im = ax.imshow(
        z, aspect="auto", cmap=SIGNED_CMAP, vmin=-peak, vmax=peak, interpolation="nearest"
    )
    fig.colorbar(im, ax=ax, label="(class mean - mean) / std")
    ax.set_yticks(range(len(units)))
    ax.set_yticklabels([f"unit {u} ({s:.2f})" for u, s in zip(units, scores)], fontsize=6)
    ax.set_xlabel("class")
    ax.set_title(
        "class response of the most connected units\n(class-independence 1 - η² in brackets)"
    )
    return fig
