"""The comparison page's panels (:data:`COMPARE_PANELS`): one run's round beside the
other runs' at about the same density."""

from __future__ import annotations

from imprint.analyses.base import Panel, Result, Round, no_geometry, skip
from imprint.analysis.maps import locality_maps
from imprint.analysis.units import select_units, unit_images
from imprint.plots import (
    plot_displacement_maps,
    plot_gallery,
)

__all__ = [
    "COMPARE_PANELS",
]


def _compare_map(r: Round) -> Result:
    """S_sc as percent of the run's pairs: runs with more units or inputs have more
    pairs, and the share at each displacement is what compares across runs."""
    if reason := no_geometry(r):
        return skip(reason)
    s_sc = locality_maps(r.layer(0).image > 0, r.shape).s_sc.double()
    total = float(s_sc.sum())
    return Result(shown={"s_sc": 100 * s_sc / total if total > 0 else s_sc})


def _compare_gallery(r: Round) -> Result:
    if reason := no_geometry(r):
        return skip(reason)
    one = r.layer(0)
    top = select_units(one.conn.c_in, "most", r.options.gallery_size)
    return Result(shown={"images": unit_images((one.image > 0).double(), r.shape, top)})


COMPARE_PANELS: tuple[Panel, ...] = (
    Panel(
        "maps",
        "S_sc maps",
        "S_sc as a share of the run's pairs, one colour scale for all runs",
        _compare_map,
        lambda res, title, scale: plot_displacement_maps(
            res.shown["s_sc"], None, title=title, vmax=scale, unit="% of the run's pairs"
        ),
        scale=lambda res: float(res.shown["s_sc"].max()),
    ),
    Panel(
        "galleries",
        "Galleries",
        "most connected units",
        _compare_gallery,
        lambda res, title, scale: plot_gallery(res.shown["images"], title, columns=9),
    ),
)
