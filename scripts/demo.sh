#!/usr/bin/env bash
# The README's demo: set up, run the default experiment on built-in NLGP data, then
# analyse it and write its report. Extra arguments go to `imprint run`
# (e.g. --device cuda, --set train.steps=500).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/imprint run configs/default.toml --out runs/default "$@"
# The study round (the default): the sparsest round keeping >= 97% of the dense top-1;
# the report's over-round figures show every round, the best and study rounds marked.
.venv/bin/imprint report runs/default
