#!/usr/bin/env bash
# The README's demo: set up, then run the default experiment on built-in NLGP data.
# Extra arguments go to `imprint run` (e.g. --device cuda, --set train.steps=500).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/imprint run configs/default.toml --out runs/default "$@"
