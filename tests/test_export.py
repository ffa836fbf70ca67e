"""`imprint export`: a round's masks, weights and tables in plain formats, the weights
loading into imprint's FCN and into a plain nn.Sequential with pruning masks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from imprint.cli import main
from imprint.export import export_round, fcn_of, sequential_of
from imprint.imp import run_imp
from imprint.runs import RunFolder
from tests.conftest import smoke_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    run_imp(smoke_config(), out, device="cpu", progress=False, log=lambda m: None)
    return RunFolder(out)


def test_export_round_trips_into_fcn_and_nn_sequential(run, tmp_path):
    written = export_round(run.root, "2", tmp_path / "out")
    out = tmp_path / "out"
    assert all(path.exists() for path in written)
    masks = run.round_masks(2)
    for name, mask in masks.items():
        assert np.array_equal(np.load(out / "masks" / f"{name}.npy"), mask.numpy())
    state = torch.load(out / "fcn_state_dict.pt")
    final = run.round_state(2)
    assert all(torch.equal(state[k], v) for k, v in final.items())
    record = json.loads((out / "model.json").read_text())
    model = fcn_of(state, record["bn_momentum"], record["bn_eps"]).eval()
    dims = record["dims"]
    assert dims == [64, 32, 16, 2]
    plain = sequential_of(dims, record["bn_momentum"], record["bn_eps"])
    plain.load_state_dict(torch.load(out / "sequential_state_dict.pt"))
    plain.eval()
    x = torch.randn(50, dims[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=1e-6, atol=1e-6)
    # the pruning masks ride on the Linear modules, as torch.nn.utils.prune keeps them
    first = plain[1]
    assert torch.equal(first.weight_mask.bool(), masks["layers.0.weight"])
    assert (first.weight[~masks["layers.0.weight"]] == 0).all()
    rows = dict(csv.reader((out / "round.csv").open()))
    assert float(rows["density"]) == pytest.approx(run.round_metrics(2)["density"])
    assert "density" in (out / "round.tex").read_text()
    assert (out / "first_layer_masks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_export_default_folder_and_bad_round(run, capsys):
    assert main(["export", str(run.root), "--round", "last"]) == 0
    last = run.completed_rounds()[-1]
    assert (run.root / "export" / f"round_{last:03d}" / "fcn_state_dict.pt").exists()
    assert main(["export", str(run.root), "--round", "99"]) == 2
    assert "99" in capsys.readouterr().err
