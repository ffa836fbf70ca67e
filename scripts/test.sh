#!/usr/bin/env bash
# The README's test command: set up (venv, package, and the headless browser the
# report tests use), then run the test suite. Slow checks are excluded; pass -m slow
# to run them. Screenshots of the report pages land in test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing Debian's chromium and chromium-driver for the report tests..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            chromium chromium-driver >/dev/null
    else
        echo "chromium/chromedriver missing and not root: the browser test will be skipped."
    fi
fi
.venv/bin/python -m pytest -q "$@"
