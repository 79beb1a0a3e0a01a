#!/usr/bin/env bash
# The GPU checks, for a machine with CUDA (at most about 5 minutes):
# - every public analysis on CUDA against the CPU (tests/core/test_cuda.py, fp32 within
#   1e-4 relative), the device discipline test and the precision tests;
# - the real-size benchmarks on CUDA, in fp32 then bf16: Score-CAM and the faithfulness
#   table on resnet50 (benchmarks/real_size.py), feature visualisation beside lucent
#   (benchmarks/visualize_speed.py), the explorer on resnet50 at 224 px
#   (benchmarks/serve_latency.py).
# Figures go to benchmarks/results/gpu/ (or $RESULTS).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${RESULTS:-benchmarks/results/gpu}"
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
python -m pytest -q -p no:cacheprovider tests/core/test_cuda.py tests/core/test_device.py \
  tests/core/test_precision.py
for precision in fp32 bf16; do
  python benchmarks/real_size.py --device cuda --precision "$precision" --no-reference \
    --only scorecam faithfulness --json "$out/real_size_$precision.json"
  python benchmarks/visualize_speed.py --device cuda --precision "$precision" \
    --json "$out/visualize_speed_$precision.json"
  python benchmarks/serve_latency.py --model torchvision:resnet50 --weights none --images 20 \
    --device cuda --precision "$precision" --json "$out/serve_latency_resnet50_$precision.json"
done
