from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imprint.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def smoke_config(*overrides: str) -> Config:
    """The shipped smoke config with ``--set`` style overrides."""
    return load_config(CONFIGS / "smoke.toml", list(overrides))


def round_inputs(config: Config, index: int = 1, masks=None, options: bool = False):
    """What a procedure's rules see for round ``index`` of a run of ``config`` that has
    not trained (initial weights, dense masks unless given); ``options``: the config's
    [prune.options] parsed for its procedure (else None, the procedure's defaults)."""
    from imprint.data import load_dataset
    from imprint.imp import _layer_rates, derive_seed
    from imprint.model import build_model
    from imprint.procedures import RoundInputs, get_procedure
    from imprint.prune import full_masks

    data = load_dataset(config.data)
    model = build_model(config.model, data.input_dim, data.num_classes, config.seeds.init)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    procedure = get_procedure(config.prune.procedure)
    return RoundInputs(
        config=config,
        index=index,
        previous_masks=masks or full_masks(init),
        previous_final=None,
        dense_final=None,
        init_state=init,
        rewind_state=None,
        reference=None,
        data=data,
        rates=_layer_rates(config),
        derive_seed=derive_seed,
        build_state=lambda seed: build_model(
            config.model, data.input_dim, data.num_classes, seed
        ).state_dict(),
        options=procedure.parse_options(config.prune.options) if options else None,
    )


def smoke_run_args(out, *overrides: str, device: str = "cpu") -> list[str]:
    """`imprint run` arguments for the smoke config, quiet, with ``--set`` overrides."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    return [
        "run",
        str(CONFIGS / "smoke.toml"),
        "--out",
        str(out),
        "--quiet",
        "--device",
        device,
        *sets,
    ]


def interrupt_at(monkeypatch, round_index: int, step: int) -> None:
    """Make a run stop (as a kill would) right after writing that round's checkpoint."""
    from imprint.runs import RunFolder

    save = RunFolder.save_checkpoint

    def save_then_stop(self, tensors, metadata):
        save(self, tensors, metadata)
        if (metadata["round"], metadata["step"]) == (round_index, step):
            raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "save_checkpoint", save_then_stop)


# Float checks of the analysis code, marked `numerics` here rather than in their files
# (the training tests carry the marker themselves): scripts/test.sh reruns the numerics
# tests under other ATen CPU capabilities, where vectorised sums round differently.
NUMERICS_ELSEWHERE = (
    "tests/test_locality_scalar.py::test_matches_brute_force",
    "tests/test_locality_scalar.py::test_per_unit_ratios_match_single_unit_calls",
    "tests/test_invariance.py::test_matches_naive_loop",
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.nodeid.split("[")[0] in NUMERICS_ELSEWHERE:
            item.add_marker(pytest.mark.numerics)


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request) -> int:
    """Tests that take this fixture must pass for any seed."""
    return request.param


# Small tensors: thread start-up costs more than it saves. One thread for the whole
# session also keeps float summation order, and so bitwise results, the same in
# every test (module-scoped runs are compared with later ones).
torch.set_num_threads(1)


def clipped_texts(fig, saved: Path | None = None) -> list[str]:
    """The text artists of ``fig`` (titles, labels, tick labels, legends, annotations)
    that fall outside the image ``savefig(bbox_inches="tight")`` writes, as imprint
    saves every figure: the saved PNG's size is read back, so what is checked is the
    file, not the layout's own idea of itself."""
    import io

    from PIL import Image

    if saved is None:  # ``saved``: the PNG imprint wrote of it
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        saved = buffer  # type: ignore[assignment]
    with Image.open(saved) as image:
        width, height = image.size
    scale = image.info.get("dpi", (fig.dpi,))[0] / fig.dpi  # the file's pixels per figure pixel
    width, height = width / scale, height / scale
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # a closed figure has lost its canvas
    pad = fig.dpi * 0.1  # savefig's pad_inches around the tight box
    box = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    left, bottom = box.x0 - pad, box.y0 - pad
    undrawn = set()  # tick labels of ticks outside the view: matplotlib keeps, never draws
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not ax.axison or (
                    not low - 1e-9 * abs(high - low)
                    <= tick.get_loc()
                    <= high + 1e-9 * abs(high - low)
                ):
                    undrawn |= {id(tick.label1), id(tick.label2)}
    out = []
    for text in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent")):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        extent = text.get_window_extent(renderer)
        if not (
            extent.x0 - left >= -1
            and extent.y0 - bottom >= -1
            and extent.x1 - left <= width + 1
            and extent.y1 - bottom <= height + 1
        ):
            out.append(text.get_text())
    return out


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures a test draws and keeps (plot functions return them open) closed after it."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
