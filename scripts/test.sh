#!/usr/bin/env bash
# The README's test command: set up (venv, package, test tools, the headless browser the
# report tests use and the Fashion-MNIST files), then run the test suite. Slow checks are excluded; pass -m slow
# to run them. Screenshots of the report pages land in test-artifacts/. Then the
# numerics tests run again under the generic (and, on AVX-512 CPUs, the AVX2) ATen kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Debian packages the tests use: the headless browser of the report tests and the real
# Fashion-MNIST files (tests that need them are skipped, with the reason, without them).
packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
if [ "${#packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing Debian's ${packages[*]} for the tests..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            "${packages[@]}" >/dev/null
    else
        echo "Missing ${packages[*]} and not root: the tests that need them will be skipped."
    fi
fi
# Static checks first: the lint rules and the types of the package (pyproject.toml).
echo "Static checks: ruff check, mypy"
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy
# The documentation site, strictly: a broken link, a missing page or a docstring the API
# reference cannot render fails the test command (built into a temporary folder).
echo "Docs: mkdocs build --strict"
site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site"  # not --quiet: it hides the warnings strict counts
rm -rf "$site"
.venv/bin/python -m pytest -q "$@"

# The numerics tests again under other ATen CPU kernels (docs/reliability.md, "Across
# machines"): the generic ones, and AVX2's where this CPU has more (AVX-512), so that a
# result that holds only on one instruction set fails here and not on another machine.
capability="$(.venv/bin/python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')"
capabilities=(default)
case "$capability" in
    AVX512*) capabilities+=(avx2) ;;
esac
for name in "${capabilities[@]}"; do
    echo "Numerics tests under ATEN_CPU_CAPABILITY=$name (this CPU: $capability)"
    ATEN_CPU_CAPABILITY="$name" .venv/bin/python -m pytest -q -m "numerics and not slow"
done
