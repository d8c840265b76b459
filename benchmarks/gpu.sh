#!/usr/bin/env bash
# The training grid of benchmarks/training.py on a GPU machine, in under 8 minutes:
# batch size {128, 1024, 4096} x loader {default, pinned + workers, data on the device}, SCVI at
# 27,000 x 3,000 (5 epochs) and 500,000 x 3,000 (2 epochs). Writes the tables, with the GPU and
# the software versions, to $OUT/training-gpu.md (or benchmarks/training-gpu.md without $OUT).
#
# Needs a Python with this project installed and a CUDA build of torch (the scvi env of
# envs/scvi.yaml, or `pip install -e .` from PyPI on Linux). Run from the repository root:
#   bash benchmarks/gpu.sh                      # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUTFILE=${OUT:-benchmarks}/training-gpu.md
WORKERS=${WORKERS:-4}
export PYTHONPATH=workflow/scripts${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch " + torch.__version__)'
started=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  echo "# Training grid on a GPU ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/GPU: /'
  echo "Load before: $(uptime)"
  echo
} > "$tmp/table.md"

# Each size gets a time budget (cells past it are listed as skipped) and a hard limit; the
# table is rewritten after every cell, so a size stopped at its limit keeps what it measured.
run_size() {  # limit budget size epochs out
  timeout "$1" "$PYTHON" benchmarks/training.py --device gpu --sizes "$3" --epochs "$4" \
    --workers "$WORKERS" --budget-seconds "$2" --out "$5" \
    || echo "(stopped at the ${1} s limit or failed: exit $?)" >> "$5"
}
run_size 140 100 27000x3000 5 "$tmp/small.md"
run_size 320 260 500000x3000 2 "$tmp/large.md"

{
  cat "$tmp/small.md" 2>/dev/null || echo "27000x3000: no table"
  echo
  cat "$tmp/large.md" 2>/dev/null || echo "500000x3000: no table"
  echo
  echo "Whole script: $(( $(date +%s) - started )) s."
} >> "$tmp/table.md"
mkdir -p "$(dirname "$OUTFILE")"
mv "$tmp/table.md" "$OUTFILE"
echo "wrote $OUTFILE"
