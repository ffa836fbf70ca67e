"""imprint in a notebook: `imprint.open` reads a run, group and sweep folder into
DataFrames that agree with the files, draws registered figures (a group's pooled over
its seeds), shows an HTML summary, refuses what is not a folder of imprint's; and the
tutorial notebook runs from top to bottom."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import imprint
from imprint.imp import run_group, run_imp
from imprint.results import RunResults
from imprint.runs import RunFolder
from imprint.safeio import RunFolderError
from imprint.sweep import load_sweep, run_sweep
from tests.conftest import CONFIGS, ROOT, smoke_config


def _quiet(_):
    return None


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook")
    run_imp(smoke_config(), root / "run", device="cpu", progress=False, log=_quiet)
    config = smoke_config("seeds.group=[0, 1, 2]")
    run_group(config, root / "group", device="cpu", progress=False, log=_quiet)
    return root


def test_a_run_reads_as_its_files_say(folders):
    run = imprint.open(folders / "run")
    assert isinstance(run, imprint.Run)
    files = RunResults(folders / "run")
    rounds = run.rounds
    assert list(rounds.index) == files.rounds
    for index, metrics in zip(files.rounds, files.metrics):
        assert rounds.loc[index, "best_val_top1"] == metrics["best_val_top1"]
        assert rounds.loc[index, "density"] == metrics["density"]
        assert rounds.loc[index, "locality_index"] == files.readings(index)["locality_index"]
    readings = run.readings("last")
    typed = files.typed_readings(files.rounds[-1])
    assert set(readings.index) == set(typed)
    assert readings.loc["locality_index", "sd"] == typed["locality_index"].sd
    masks = run.masks(2)
    expected = RunFolder(folders / "run").round_masks(2)
    assert all(torch.equal(masks[k], expected[k]) for k in expected)
    assert set(run.weights(2)) >= {"layers.0.weight", "norms.0.running_mean"}
    assert len(run.curves(1)) == 4  # the smoke config validates every 10 of 40 steps
    html = run._repr_html_()
    assert f"study round {run.study_round}" in html and "<table>" in html


def test_figures_are_drawn_by_name(folders):
    import matplotlib.figure

    run = imprint.open(folders / "run")
    assert {"accuracy", "locality", "locality_maps", "ablation", "gallery_most"} <= set(run.figures)
    for name in ("accuracy", "locality_maps", "pixel_usage_map", "gallery_most", "ablation"):
        assert isinstance(run.figure(name, "last"), matplotlib.figure.Figure), name
    with pytest.raises(ValueError, match="must be one of the registered figures"):
        run.figure("no such figure")
    with pytest.raises(ValueError, match="animation"):
        run.figure("evolution")


def test_a_group_is_mean_and_sd_over_its_seeds_and_pools_its_figures(folders):
    group = imprint.open(folders / "group")
    assert isinstance(group, imprint.Group) and group.seeds == [0, 1, 2]
    per_seed = [imprint.open(folders / "group" / f"seed_{s}").rounds for s in (0, 1, 2)]
    values = [frame.loc[2, "best_val_top1"] for frame in per_seed]
    assert group.rounds.loc[2, "best_val_top1"] == pytest.approx(np.mean(values))
    assert group.rounds.loc[2, "best_val_top1_sd"] == pytest.approx(np.std(values, ddof=1))
    assert set(group.per_seed["seed"]) == {0, 1, 2}
    # S_sc summed over the seeds: the pooled map is the sum of the seeds' maps
    pooled = group.figure("locality_maps", 2).axes[0].images[0].get_array()
    seeds = [run.figure("locality_maps", 2).axes[0].images[0].get_array() for run in group.runs]
    assert np.allclose(pooled, sum(seeds))
    example = group.figure("gallery_most", 2)
    assert "Example, one seed: seed 0 of 3" in example._suptitle.get_text()
    assert "3 seeds" in group._repr_html_() and " ± " in group._repr_html_()


def test_a_sweep_reads_without_writing(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        f'name = "tiny"\nbase = "{CONFIGS / "smoke.toml"}"\nseeds = [0]\n'
        '[set]\n"prune.max_rounds" = 1\n"train.steps" = 20\n"prune.rewind_step" = 2\n'
        '[grid]\n"prune.procedure" = ["imp", "oneshot"]\n'
    )
    out = tmp_path / "sweep"
    run_sweep(load_sweep(path), out, log=_quiet)
    sweep = imprint.open(out)
    assert isinstance(sweep, imprint.Sweep)
    assert len(sweep.names) == 2 and len(sweep.rounds) == 4  # 2 runs x rounds 0 and 1
    assert set(sweep.rounds["prune.procedure"]) == {"imp", "oneshot"}
    assert not (out / "results.csv").exists()  # read, not collected
    assert isinstance(sweep.run(sweep.names[0]), imprint.Run)
    with pytest.raises(ValueError, match="must be one of"):
        sweep.run("nope")
    assert "2 runs" in sweep._repr_html_()


def test_what_is_not_a_folder_of_imprint_is_refused_by_name(tmp_path):
    with pytest.raises(RunFolderError, match="is not a folder"):
        imprint.open(tmp_path / "missing")
    with pytest.raises(RunFolderError, match="not an imprint run folder"):
        imprint.open(tmp_path)


def test_the_tutorial_notebook_runs(tmp_path):
    """docs/tutorial.ipynb, executed cell by cell in a fresh kernel: no cell fails."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "docs")}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    shown = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in shown) >= 3  # the figures drew
    assert any("text/html" in o.get("data", {}) for o in shown)  # a group's summary
