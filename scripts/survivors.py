"""Which first-layer connections survive IMP without having trained: the diagnosis of the
border-pixel pile-up in docs/findings-fashion-mnist.md.

For each seed of a group (or one run) and each round asked for, among the surviving
first-layer connections:

- on quiet pixels: the share on pixels whose training-set standard deviation is below
  ``--quiet`` grey levels (near-constant borders and corners in Fashion-MNIST);
- moved: the median relative change |w_final - w_start| / |w_start| over the round, on
  quiet pixels and on the others (a weight that does not train keeps its magnitude, so
  magnitude pruning never reaches it);
- unmoved: the share that moved less than 10%;
- on cut-off units: the share on first-layer units whose outgoing connections are all
  pruned (no gradient reaches them), and how many such units still have inputs.

Usage: python scripts/survivors.py RUN_OR_GROUP --rounds 12,16,18 [--quiet 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from imprint.config import ConfigError
from imprint.data import DataError, load_dataset
from imprint.runs import RunFolder, group_members, is_group
from imprint.safeio import RunFolderError


def survivors(folder: RunFolder, index: int, pixel_sd: torch.Tensor, quiet: float) -> dict:
    """The readings above for one run's round ``index``."""
    masks = folder.round_masks(index)
    start = folder.round_state(index, "start")["layers.0.weight"]
    final = folder.round_state(index, "final")["layers.0.weight"]
    alive = masks["layers.0.weight"]  # (units, inputs)
    units, inputs = alive.nonzero(as_tuple=True)
    moved = (final[units, inputs] - start[units, inputs]).abs() / start[units, inputs].abs()
    on_quiet = pixel_sd[inputs] < quiet
    cut_off = ~masks["layers.1.weight"].any(dim=0)  # layer-0 units nothing reads
    return {
        "on quiet pixels": on_quiet.double().mean().item(),
        "moved (quiet)": moved[on_quiet].median().item() if on_quiet.any() else float("nan"),
        "moved (others)": moved[~on_quiet].median().item(),
        "unmoved (<10%)": (moved < 0.1).double().mean().item(),
        "on cut-off units": cut_off[units].double().mean().item(),
        "cut-off units with inputs": int((cut_off & alive.any(dim=1)).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder or a group folder")
    parser.add_argument("--rounds", required=True, help="comma-separated rounds, e.g. 12,16")
    parser.add_argument("--quiet", type=float, default=5.0, help="grey levels (default 5)")
    args = parser.parse_args(argv)
    try:
        folders = (
            [RunFolder(path) for _, path in group_members(args.run)]
            if is_group(args.run)
            else [RunFolder(args.run)]
        )
        data = load_dataset(folders[0].read_config().data)
        pixel_sd = data.x_train.double().std(dim=0)  # grey levels, per input
        print(f"{(pixel_sd < args.quiet).sum()} of {pixel_sd.numel()} pixels are quiet.")
        for index in (int(r) for r in args.rounds.split(",")):
            rows = [survivors(f, index, pixel_sd, args.quiet) for f in folders]
            cells = []
            for key in rows[0]:
                values = [row[key] for row in rows]
                sd = statistics.stdev(values) if len(values) > 1 else float("nan")
                cells.append(f"{key} {statistics.mean(values):.3g} ± {sd:.2g}")
            print(f"round {index} ({len(rows)} runs, mean ± sd): " + "; ".join(cells))
    except (ConfigError, DataError, RunFolderError, ValueError) as error:
        print(f"survivors: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
