#!/usr/bin/env bash
# Every GPU check of the project in one command (needs a CUDA GPU; about 4 minutes on an H200):
# the CUDA tests (equality of the graphed and bf16/fp16 paths with eager, no host syncs over a
# stream), the step benchmark with bf16 beside eager and graphed float32, and the step profile
# (host against GPU time, memory graphed or not, weights cast once or per call, top kernels).
#
#   bash benchmarks/cuda_suite.sh [OUTPUT_DIR]      # default benchmarks/results/cuda
#
# Each part runs even when an earlier one fails; the exit status is that of the tests.
set -u
out=${1:-benchmarks/results/cuda}
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" || exit 2
python -m pytest -q -rA --tb=short tests/test_optimize.py tests/test_memory_state.py \
    tests/test_cameras.py tests/test_training.py -k "cuda or graphed or gpus" \
    2>&1 | tee "$out/pytest.txt"
tests=${PIPESTATUS[0]}
python benchmarks/bench_step.py --device cuda --bf16 --frames 1000 --no-page \
    --json "$out/bench_step_cuda.json" 2>&1 | tee "$out/bench.txt"
python benchmarks/profile_cuda_step.py 2>&1 | tee "$out/profile.txt"
exit "$tests"
