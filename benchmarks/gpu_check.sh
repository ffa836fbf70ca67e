#!/usr/bin/env bash
# The GPU check, one script: the CUDA tests, the training benchmark (dense and sparse
# engines), and two rounds of the paper's FCN on full-size ImageNet32-shaped data with
# the extrapolated time of a full paper run. Under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh                      # on a CUDA device
#   bash benchmarks/gpu_check.sh --device cpu --quick # the same steps, small (tested)
#
# Run from the repository root with imprint importable (the README's set-up, or
# PYTHONPATH=src). Figures go to standard output; docs/benchmarks.md records them.
set -euo pipefail

device=cuda
quick=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --quick) quick=(--quick); shift ;;
        *) echo "gpu_check.sh: unknown option $1 (use --device cpu|cuda, --quick)" >&2; exit 2 ;;
    esac
done
case "$device" in cpu|cuda) ;; *) echo "gpu_check.sh: --device must be cpu or cuda" >&2; exit 2 ;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
python="${PYTHON:-python3}"
export PYTHONPATH="$root/src:$root${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

section() { echo; echo "=== $1 ($(( $(date +%s) - start )) s)"; }

section "CUDA tests"
if [ "$device" = cuda ]; then
    "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cli.py -k cuda
else
    echo "device cpu: the CUDA tests are skipped"
fi

section "training benchmark, dense engine (benchmarks/training.py)"
"$python" benchmarks/training.py --device "$device" --no-compile "${quick[@]}"

section "sparse against dense step (benchmarks/sparse.py)"
"$python" benchmarks/sparse.py --device "$device" "${quick[@]}"

for mode in off on; do
    section "two paper rounds, train.sparse = $mode (benchmarks/paper_run.py)"
    "$python" benchmarks/paper_run.py --device "$device" --sparse "$mode" "${quick[@]}"
done

section "done"
