#!/usr/bin/env bash
# GPU checks (issue 14), in under 8 minutes on one GPU:
#   1. the CUDA tests (skipped without a GPU elsewhere): fp16 training with a GradScaler,
#      the properties suite on the CUDA device, autocast keeping the likelihood in fp32;
#   2. the training-step grid of `python -m benchmarks steps` on CUDA: every library x
#      fp32 / bf16 autocast x Adam / fused Adam, batch 512 and 4096, D = 63 and 784.
# Writes benchmarks/results/gpu/<device>/ (device.txt, tests.txt, steps.json, steps.md,
# steps.log). Usage: scripts/gpu_check.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg

device=$("$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))')
slug=$(printf '%s' "$device" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-//; s/-$//' | tr 'A-Z' 'a-z')
out="benchmarks/results/gpu/${slug:-cuda}"
mkdir -p "$out"
{
  echo "device: $device"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} | tee "$out/device.txt"

start=$(date +%s)
# 1. correctness on CUDA (about 2 minutes at most)
status=0
timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider \
  tests/test_precision.py tests/transforms/test_properties.py "$@" 2>&1 | tee "$out/tests.txt" \
  || status=$?

# 2. the step grid (about 4 minutes: 8 groups x 16 cells, 5 blocks of 0.1 s each)
timeout 330 "$PYTHON" -m benchmarks steps --device cuda --kinds maf coupling --dims 63 784 \
  --batches 512 4096 --precisions fp32 bf16 --optimizers adam fused --repeats 5 \
  --target-seconds 0.1 --out "$out" 2>&1 | tee "$out/steps.log" || status=$?

echo "gpu_check: ${SECONDS}s in all ($(($(date +%s) - start))s for tests and grid); wrote $out; status $status"
exit "$status"
