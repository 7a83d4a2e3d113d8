#!/bin/bash
# Every experiment for a few steps in 16-mixed and bf16-mixed, on one GPU and with DDP on every
# visible GPU; prints a table (experiment, precision, devices, steps/s, peak GPU memory, result)
# and writes it to logs/gpu_check/<time>/gpu_check.txt. Under 8 minutes on one GPU; no downloads
# (tiny IDX files stand in for MNIST/Fashion-MNIST, the embedded churn table for user tables).
#
#   scripts/gpu_check.sh                           # everything
#   scripts/gpu_check.sh --experiments churn_mlp digits_gan --precisions bf16-mixed
#   scripts/gpu_check.sh --help                    # options (time budget, per-run timeout, steps)
#
# Runs continue past failures; each has its own timeout, and rows past the time budget are
# listed as skipped. Exit code 0 only when every run that ran passed.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${ROOT}/.venv/bin/python"
if [ ! -x "$PYTHON" ]; then
  echo "error: ${PYTHON} not found: run 'make install' first" >&2
  exit 2
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
exec "$PYTHON" "${ROOT}/scripts/gpu_check.py" "$@"
