#!/bin/bash
# The GPU figures for bench/RESULTS.md in one run (synthetic CIFAR-100-shaped data, nothing is
# downloaded): ResNet-50 -> ResNet-18 LW-SupCRD + bank at batch 128 and 512 for each CUDA variant,
# the teacher's own cross-entropy epoch, and the plain reference loop once. JSON lines go to
# stdout and to ${OUT:-.}/gpu_bench.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-.}/gpu_bench.jsonl"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
common=(--teacher resnet50 --student resnet18 --device cuda --images 50000)
python bench/bench_train.py "${common[@]}" --methods lwsupcrd_bank --batch-size 128 | tee -a "$log"
python bench/bench_train.py "${common[@]}" --methods lwsupcrd_bank --batch-size 512 --no-reference | tee -a "$log"
python bench/bench_train.py "${common[@]}" --methods teacher --batch-size 128 --variants cuda,cuda_compile \
  --no-reference | tee -a "$log"
