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


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request) -> int:
    """Tests that take this fixture must pass for any seed."""
    return request.param


# Small tensors: thread start-up costs more than it saves. One thread for the whole
# session also keeps float summation order, and so bitwise results, the same in
# every test (module-scoped runs are compared with later ones).
torch.set_num_threads(1)
