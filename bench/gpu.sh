#!/bin/bash
# The one command for a machine with a GPU (synthetic CIFAR-100-shaped data, nothing downloaded):
#   bash bench/gpu.sh          # check the CUDA branch (every method, eager and compiled), then time it
#   bash bench/gpu.sh --dry    # the same script on the CPU with the CUDA settings forced on, tiny sizes
# Compilation dominates the GPU run (minutes); give it a 10-minute limit. JSON lines go to stdout
# and to ${OUT:-.}/gpu_check.jsonl; record the figures in bench/RESULTS.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="${OUT:-.}/gpu_check.jsonl"
: > "$log"
py=${PYTHON:-python3}
if [ "${1:-}" = "--dry" ]; then
  "$py" "$here/gpu_check.py" --dry --compile-modes "" | tee -a "$log"
  "$py" "$here/bench_train.py" --device cpu --teacher resnet8 --student resnet8 --images 160 --batch-size 16 \
    --bank-negatives 32 --methods lwsupcrd_bank --variants cuda --workers 0 | tee -a "$log"
  exit 0
fi
"$py" "$here/gpu_check.py" | tee -a "$log"
common=(--teacher resnet50 --student resnet18 --device cuda --images 50000)
"$py" "$here/bench_train.py" "${common[@]}" --methods lwsupcrd_bank --batch-size 128 | tee -a "$log"
"$py" "$here/bench_train.py" "${common[@]}" --methods lwsupcrd_bank --batch-size 512 --variants cuda \
  --no-reference | tee -a "$log"
"$py" "$here/bench_train.py" "${common[@]}" --methods teacher --batch-size 128 --variants cuda --no-reference \
  | tee -a "$log"
