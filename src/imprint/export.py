"""`imprint export`: one round of a run in plain formats, for other tools and papers.

Into OUT (default RUN/export/round_NNN):

* ``masks/<state-dict name>.npy``: every mask, bool, in the network's input order;
  ``first_layer_masks.png``: the first layer's units as image-space masks in a grid;
* ``fcn_state_dict.pt``: the round's final weights (pruned entries exactly zero), a
  state dict that loads into :class:`imprint.model.FCN` (:func:`fcn_of`);
* ``sequential_state_dict.pt``: the same net as a plain ``nn.Sequential`` of
  BatchNorm1d, Linear and ReLU modules with the masks applied through
  ``torch.nn.utils.prune`` (``weight_orig`` and ``weight_mask``); :func:`sequential_of`
  builds the module it loads into;
* ``model.json``: the widths and BN's momentum and epsilon, what both need to be built;
* ``round.csv`` and ``round.tex``: the round's metrics and readings, a row each.

The network input is the normalised image, as in training: (x - offset) * scale with
the offset and scale of RUN/data.json's normalisation.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from imprint.model import FCN
from imprint.results import RunResults, resolve_rounds
from imprint.safeio import RunFolderError, confine

__all__ = ["export_round", "fcn_of", "sequential_of"]


def fcn_of(state: dict[str, torch.Tensor], bn_momentum: float, bn_eps: float) -> FCN:
    """An :class:`FCN` holding ``state`` (its widths read from the state's weights; BN's
    momentum and epsilon as the run's model.bn_momentum and model.bn_eps)."""
    n_layers = sum(1 for name in state if name.startswith("layers.") and name.endswith(".weight"))
    dims = [state["layers.0.weight"].shape[1]]
    dims += [state[f"layers.{layer}.weight"].shape[0] for layer in range(n_layers)]
    model = FCN(dims[0], dims[1:-1], dims[-1], bn_momentum, bn_eps)
    model.load_state_dict(state)
    return model


def sequential_of(
    dims: list[int], bn_momentum: float, bn_eps: float, pruned: bool = True
) -> nn.Sequential:
    """The plain module ``sequential_state_dict.pt`` loads into: per layer BatchNorm1d
    (the run's epsilon and momentum: export's model.json), Linear (pruning parametrised
    when ``pruned``), and ReLU between layers."""
    modules: list[nn.Module] = []
    for layer, (inputs, outputs) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(inputs, outputs)
        if pruned:
            torch_prune.identity(linear, "weight")
            torch_prune.identity(linear, "bias")
        modules += [nn.BatchNorm1d(inputs, eps=bn_eps, momentum=bn_momentum), linear]
        if layer < len(dims) - 2:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def _sequential_state(model: FCN, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    dims = [model.layers[0].in_features, *(layer.out_features for layer in model.layers)]
    first = model.norms[0]
    assert first.momentum is not None
    plain = sequential_of(dims, first.momentum, first.eps, pruned=False)
    linears = [m for m in plain if isinstance(m, nn.Linear)]
    norms = [m for m in plain if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        for layer, (linear, norm) in enumerate(zip(linears, norms)):
            norm.load_state_dict(model.norms[layer].state_dict())
            linear.load_state_dict(model.layers[layer].state_dict())
            for which in ("weight", "bias"):
                mask = masks.get(f"layers.{layer}.{which}")
                full = torch.ones_like(getattr(linear, which), dtype=torch.bool)
                torch_prune.custom_from_mask(linear, which, full if mask is None else mask)
    return plain.state_dict()


def _grid_png(units: torch.Tensor, shape: tuple[int, int, int], path: Path) -> None:
    """Each unit's first-layer mask as an image (channels summed), in a square grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels, height, width = shape
    images = units.view(-1, channels, height, width).float().sum(1)  # (units, H, W)
    n = images.shape[0]
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = torch.full((rows * (height + 1) + 1, columns * (width + 1) + 1), float("nan"))
    for k in range(n):
        top, left = 1 + (k // columns) * (height + 1), 1 + (k % columns) * (width + 1)
        grid[top : top + height, left : left + width] = images[k]
    zoom = max(1, 800 // grid.shape[1])  # whole pixels, about 800 wide: readable as is
    grid = grid.repeat_interleave(zoom, 0).repeat_interleave(zoom, 1)
    plt.imsave(path, grid.numpy(), cmap="viridis", vmin=0, vmax=max(1, channels))


def _latex(rows: list[tuple[str, Any]]) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")

    body = "\n".join(f"{escape(str(k))} & {escape(str(v))} \\\\" for k, v in rows)
    return (
        "\\begin{tabular}{lr}\n\\hline\nkey & value \\\\\n\\hline\n"
        + body
        + ("\n\\hline\n\\end{tabular}\n")
    )


def export_round(
    run_dir: str | Path, which: str = "study", out: str | Path | None = None
) -> list[Path]:
    """Export round ``which`` ('study', 'best', 'last' or a number) of the run folder
    ``run_dir`` into ``out`` (default RUN/export/round_NNN); returns the files written."""
    run = RunResults(run_dir)
    rounds = resolve_rounds(run.folder, which, run.metrics)
    if len(rounds) != 1:
        raise RunFolderError(f"--round {which}: export takes one round. Got {len(rounds)}.")
    index = rounds[0]
    target = Path(out) if out is not None else run.folder.root / "export" / f"round_{index:03d}"
    confine(target)
    (target / "masks").mkdir(parents=True, exist_ok=True)
    masks = run.masks(index)
    written = []
    for name, mask in masks.items():
        path = target / "masks" / f"{name}.npy"
        np.save(path, mask.numpy())
        written.append(path)
    png = target / "first_layer_masks.png"
    _grid_png(run.first_layer_image(index), run.shape, png)
    written.append(png)
    section = run.config.model
    model = fcn_of(run.folder.round_state(index, "final"), section.bn_momentum, section.bn_eps)
    dims = [model.layers[0].in_features, *(layer.out_features for layer in model.layers)]
    record = {"dims": dims, "bn_momentum": section.bn_momentum, "bn_eps": section.bn_eps}
    (target / "model.json").write_text(json.dumps(record, indent=2) + "\n")
    written.append(target / "model.json")
    for path, state in (
        (target / "fcn_state_dict.pt", model.state_dict()),
        (target / "sequential_state_dict.pt", _sequential_state(model, masks)),
    ):
        torch.save(state, path)
        written.append(path)
    metrics = run.metrics[run.rounds.index(index)]
    rows = [(key, value) for key, value in metrics.items() if not isinstance(value, list)]
    rows += [
        (f"{k}_l{i}", v)
        for k, vs in metrics.items()
        if isinstance(vs, list)
        for i, v in enumerate(vs)
    ]
    with open(target / "round.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "value"])
        writer.writerows(rows)
    (target / "round.tex").write_text(_latex(rows))
    written += [target / "round.csv", target / "round.tex"]
    return written
