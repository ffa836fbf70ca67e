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
    if reason := no_geometry(r):
        return skip(reason)
    return Result(shown={"s_sc": locality_maps(r.layer(0).image > 0, r.shape).s_sc})


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
        "S_sc",
        _compare_map,
        lambda res, title: plot_displacement_maps(res.shown["s_sc"], None, title=title),
    ),
    Panel(
        "galleries",
        "Galleries",
        "most connected units",
        _compare_gallery,
        lambda res, title: plot_gallery(res.shown["images"], title, columns=9),
    ),
)
