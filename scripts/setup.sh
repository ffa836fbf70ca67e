#!/usr/bin/env bash
# Create .venv and install imprint into it. The pinned CPU build of PyTorch goes in
# first, so that the package's torch range is already satisfied and nothing pulls the
# multi-GB CUDA build. Set IMPRINT_TORCH to install another build (e.g. "torch==2.13.0"
# from a CUDA index on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH="${IMPRINT_TORCH:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.imprint-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "$TORCH"
    .venv/bin/python -m pip install --quiet -e ".[test]"
    touch "$stamp"
fi
