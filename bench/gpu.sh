#!/bin/bash
# The GPU figures for bench/RESULTS.md in one run (synthetic CIFAR-100-shaped data, nothing is
# downloaded): ResNet-50 -> ResNet-18 LW-SupCRD + bank at batch 128 (eager, compiled, CUDA graphs,
# and the plain reference loop) and at batch 512 (eager), and the teacher's cross-entropy epoch.
# Compilation dominates its run time (minutes); give it a 10-minute limit. JSON lines go to
# stdout and to ${OUT:-.}/gpu_bench.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-.}/gpu_bench.jsonl"
common=(--teacher resnet50 --student resnet18 --device cuda --images 50000)
python bench/bench_train.py "${common[@]}" --methods lwsupcrd_bank --batch-size 128 | tee -a "$log"
python bench/bench_train.py "${common[@]}" --methods lwsupcrd_bank --batch-size 512 --variants cuda \
  --no-reference | tee -a "$log"
python bench/bench_train.py "${common[@]}" --methods teacher --batch-size 128 --variants cuda --no-reference \
  | tee -a "$log"
