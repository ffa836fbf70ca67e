"""scripts/survivors.py: the untrained-survivor readings of the Fashion-MNIST findings."""

from __future__ import annotations

import importlib.util

from imprint.data import load_dataset
from imprint.imp import run_imp
from imprint.runs import RunFolder
from tests.conftest import ROOT, smoke_config

spec = importlib.util.spec_from_file_location("survivors", ROOT / "scripts" / "survivors.py")
survivors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(survivors)


def test_readings_match_a_direct_count(tmp_path, capsys):
    config = smoke_config("prune.max_rounds=2")
    run_imp(config, tmp_path / "run", device="cpu", progress=False, log=lambda _: None)
    folder = RunFolder(tmp_path / "run")
    pixel_sd = load_dataset(config.data).x_train.double().std(dim=0)
    quiet = float(pixel_sd.median())  # half the pixels count as quiet
    got = survivors.survivors(folder, 2, pixel_sd, quiet)
    alive = folder.round_masks(2)["layers.0.weight"]
    units, inputs = alive.nonzero(as_tuple=True)
    assert got["on quiet pixels"] == (pixel_sd[inputs] < quiet).double().mean().item()
    cut_off = ~folder.round_masks(2)["layers.1.weight"].any(dim=0)
    assert got["cut-off units with inputs"] == int((cut_off & alive.any(dim=1)).sum())
    assert 0.0 <= got["unmoved (<10%)"] <= 1.0 and got["moved (others)"] > 0
    assert survivors.main([str(folder.root), "--rounds", "1,2", "--quiet", str(quiet)]) == 0
    out = capsys.readouterr().out
    assert "round 1 (1 runs" in out and "round 2 (1 runs" in out
    assert survivors.main([str(tmp_path / "missing"), "--rounds", "1"]) == 2
    assert "survivors: error:" in capsys.readouterr().err
