#!/usr/bin/env bash
# Create .venv and install imprint into it: only what running imprint needs. The
# pinned CPU build of PyTorch goes in first, so that the package's torch range is
# already satisfied and nothing pulls the multi-GB CUDA build. Set IMPRINT_TORCH to
# install another build (e.g. "torch==2.13.0" from a CUDA index on a GPU machine).
# `bash scripts/setup.sh test` adds the test tools (pytest, hypothesis, ruff, selenium,
# pandas, pyarrow, ray, nbclient, tensorboard, mlflow-skinny, mkdocs); scripts/test.sh does that.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH="${IMPRINT_TORCH:-torch==2.13.0}"
EXTRAS="${1:-}"
say() { echo "setup: $*"; }
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.imprint-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "upgrading pip"
    .venv/bin/python -m pip install --quiet --quiet --upgrade pip
    say "installing $TORCH (CPU build unless IMPRINT_TORCH says otherwise; ~1 minute)"
    .venv/bin/python -m pip install --quiet --quiet "$TORCH"
    say "installing imprint and its dependencies"
    .venv/bin/python -m pip install --quiet --quiet -e .
    touch "$stamp"
fi
if [ "$EXTRAS" = "test" ]; then
    test_stamp=.venv/.imprint-test-installed
    if [ ! -f "$test_stamp" ] || [ pyproject.toml -nt "$test_stamp" ]; then
        say "installing the test tools (pytest, hypothesis, ruff, mypy, selenium, pyarrow, ray, nbclient, tensorboard, mlflow-skinny, mkdocs)"
        .venv/bin/python -m pip install --quiet --quiet -e ".[test]"
        touch "$test_stamp"
    fi
fi
say "ready: $(.venv/bin/imprint --version) in .venv ($(du -sh .venv 2>/dev/null | cut -f1))"
