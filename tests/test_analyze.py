"""`imprint analyze` on real run folders of the smoke config."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from imprint.analyze import AnalysisOptions, analyze_run
from imprint.cli import main
from imprint.data import pixel_permutation
from imprint.imp import run_imp
from imprint.results import resolve_rounds
from imprint.runs import RunFolder
from imprint.safeio import RunFolderError
from tests.conftest import smoke_config

OPTIONS = AnalysisOptions(
    gallery_size=16, evolution_units=16, invariance_units=24, formats=("png",)
)


def _run(tmp_path_factory, *overrides):
    path = tmp_path_factory.mktemp("run")
    run_imp(
        smoke_config("data.channels=3", *overrides),
        path,
        device="cpu",
        progress=False,
        log=lambda _: None,
    )
    return RunFolder(path)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    folder = _run(tmp_path_factory)
    summary = analyze_run(folder.root, "last", OPTIONS, log=lambda _: None)
    return folder, summary


def test_writes_every_figure_and_table(analysed):
    folder, summary = analysed
    out = folder.root / "analysis"
    for name in (
        "rounds.csv",
        "accuracy.png",
        "locality.png",
        "mass_within.png",
        "kurtosis.png",
        "round_003/evolution.gif",  # with the round whose units it follows
        "summary.json",
    ):
        assert (out / name).is_file(), name
    assert summary["rounds"] == [3]
    expected = {
        "curves",
        "cin_hist_l0",
        "cin_hist_l1",
        "pixel_map",
        "locality_maps_l0",
        "locality_maps_l1",
        "connection_resolved_l0",
        "gallery_most_l0",
        "gallery_weighted_most_l0",
        "gallery_least_l0",
        "gallery_sample_l0",
        "gallery_most_l1",
        "gallery_weighted_most_l1",
        "ablation",
        "invariance",
        "class_response",
    }
    for result in summary["per_round"]:
        stems = {p.split("/")[-1].rsplit(".", 1)[0] for p in result["figures"]}
        assert expected <= stems, expected - stems
        for path in result["figures"]:
            with Image.open(folder.root / path) as image:
                assert image.size[0] > 100 and image.size[1] > 50
    with Image.open(out / "round_003" / "evolution.gif") as gif:
        # the analysed round first (not round 0's all-connected masks), then rounds 0-3
        assert gif.n_frames == 5
        first = np.asarray(gif.convert("RGB"))
        gif.seek(1)
        assert not np.array_equal(first, np.asarray(gif.convert("RGB")))
    assert not (out / "evolution.gif").exists()


def test_numbers_agree_with_the_masks(analysed):
    folder, _ = analysed
    masks = folder.round_masks(3)
    arrays = np.load(folder.root / "analysis" / "round_003" / "arrays.npz")
    c_in = masks["layers.0.weight"].sum(dim=1).numpy()
    assert (arrays["c_in_l0"] == c_in).all()
    assert arrays["pixel_map"].sum() == c_in.sum()
    s_total = arrays["s_sc_l0"].sum() + arrays["s_dc_l0"].sum()
    assert s_total == (c_in * (c_in - 1)).sum()
    # layer 1 lives in input space through the effective mask M1 M2
    eff = masks["layers.1.weight"].double() @ masks["layers.0.weight"].double()
    assert (arrays["c_in_l1"] == (eff > 0).sum(dim=1).numpy()).all()
    results = json.loads((folder.root / "analysis" / "round_003" / "results.json").read_text())
    assert results["layers"]["0"]["disconnected"] == int((c_in == 0).sum())
    ablation = results["ablation"]
    assert set(ablation) == {"most", "least", "random"}
    assert ablation["most"]["top1"][0] == ablation["random"]["top1"][0]  # nothing removed
    with open(folder.root / "analysis" / "rounds.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["round"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[0]["locality_ratio"]) == pytest.approx(1.0)  # dense: no locality
    # the IPR's null is matched to the units read: mean of 3/(C_in + 2) over them
    alive = torch.as_tensor(c_in[c_in > 0]).double()
    assert float(rows[3]["ipr_l0_null"]) == pytest.approx((3 / (alive + 2)).mean().item())
    excess = float(rows[3]["ipr_excess_l0"])
    assert excess == pytest.approx(float(rows[3]["ipr_l0"]) - float(rows[3]["ipr_l0_null"]))


def test_permutation_control_is_undone(tmp_path_factory):
    folder = _run(tmp_path_factory, "data.permute_pixels=true", "prune.max_rounds=1")
    analyze_run(folder.root, "1", OPTIONS, log=lambda _: None)
    arrays = np.load(folder.root / "analysis" / "round_001" / "arrays.npz")
    network_counts = folder.round_masks(1)["layers.0.weight"].sum(dim=0)  # per network input
    perm = pixel_permutation(192, 0)
    # image pixel i is network input j with perm[j] = i
    image_counts = network_counts[torch.argsort(perm)]
    assert (arrays["pixel_map"].reshape(-1) == image_counts.numpy()).all()


def test_round_selection_and_errors(analysed, tmp_path):
    folder, _ = analysed
    assert resolve_rounds(folder, "last") == [3]
    assert resolve_rounds(folder, "all") == [0, 1, 2, 3]
    best = max(range(4), key=lambda r: folder.round_metrics(r)["best_val_top1"])
    assert resolve_rounds(folder, "best") == [best]
    with pytest.raises(RunFolderError, match="names round 9; .* has rounds 0..3"):
        resolve_rounds(folder, "9")
    with pytest.raises(RunFolderError, match="must be study, best, last, all or a round number"):
        resolve_rounds(folder, "first")
    # The study round: the sparsest round keeping >= 97% of the dense top-1.
    metrics = [folder.round_metrics(r) for r in range(4)]
    floor = 0.97 * metrics[0]["best_val_top1"]
    kept = [m["round"] for m in metrics if m["best_val_top1"] >= floor]
    assert resolve_rounds(folder, "study") == [max(kept)]
    record = json.loads(folder.run_path.read_text())
    assert record["study_round"] == max(kept) and record["study_tolerance"] == 0.03
    with pytest.raises(RunFolderError, match="not an imprint run folder"):
        analyze_run(tmp_path, "best", OPTIONS)


def test_readings_carry_their_spread(analysed):
    """Every scalar reading of the analysed round comes with its uncertainty."""
    folder, summary = analysed
    result = summary["per_round"][0]
    layer0 = result["layers"]["0"]
    for name in ("locality_index", "mass_within_r", "ipr_mean"):
        assert name in layer0 and f"{name}_sd" in layer0 and f"{name}_null" in layer0
        value, sd = layer0[name], layer0[f"{name}_sd"]
        assert math.isfinite(value) and 0 < sd < 1, (name, value, sd)
        assert layer0[f"{name}_low"] <= value <= layer0[f"{name}_high"], name
        assert layer0[f"{name}_high"] - layer0[f"{name}_low"] > 2 * sd, name  # ~ +-1.96 sd
    assert result["invariance"]["fraction_shifted_sd"] is not None
    kurtosis = result["kurtosis"]
    assert kurtosis["mean_sd"] > 0 and math.isfinite(kurtosis["null"])
    assert kurtosis["null"] != 0.0  # the mask-keeping null (shuffled weights), not 0
    assert all(len(c["top1_sd"]) == len(c["top1"]) for c in result["ablation"].values())
    # The readings stored by the round loop are the ones rounds.csv reports.
    rows = list(csv.DictReader((folder.root / "analysis" / "rounds.csv").open()))
    stored = folder.round_metrics(3)
    assert float(rows[3]["locality_index"]) == pytest.approx(stored["locality_index"])
    for name in ("locality_index_sd", "ipr_l0_sd", "kurtosis_l0_sd", "mass_within_r_sd"):
        assert rows[3][name] != "", name


def test_cli_analyze(analysed, capsys):
    folder, _ = analysed
    code = main(
        ["analyze", str(folder.root), "--round", "2", "--gallery-size", "8", "--formats", "png"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "round 2:" in printed and "figures" in printed
    assert (folder.root / "analysis" / "round_002" / "gallery_most_l0.png").is_file()
