#!/usr/bin/env bash
# The GPU checks, for a machine with CUDA (about 5 minutes on one H200):
# - every public analysis on CUDA against the CPU (tests/core/test_cuda.py, fp32 within
#   1e-4 relative), the device discipline test and the precision tests;
# - the real-size benchmarks on CUDA, in fp32 then bf16: Score-CAM and the faithfulness
#   table on resnet50 (benchmarks/real_size.py), feature visualisation beside lucent
#   (benchmarks/visualize_speed.py), the explorer on resnet50 at 224 px
#   (benchmarks/serve_latency.py), `convlens report` on the Places365 networks
#   (benchmarks/report_speed.py);
# - which analyses survive bf16 on the GPU's own bf16 units, resnet50 at 224 px
#   (benchmarks/precision_agreement.py --device cuda).
# Each step runs under its own time limit and a failed step does not stop the others; the
# script exits non-zero when any failed. Figures go to benchmarks/results/gpu/ (or $RESULTS).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${RESULTS:-benchmarks/results/gpu}"
mkdir -p "$out"
failed=()

step() {  # step NAME SECONDS COMMAND...: run COMMAND under a time limit, note a failure
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  local start=$SECONDS
  if ! timeout "$limit" "$@"; then
    failed+=("$name")
    echo "!! $name failed"
  fi
  echo "== $name: $((SECONDS - start)) s"
}

python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
step tests 150 python -m pytest -q -p no:cacheprovider -x --durations=5 \
  tests/core/test_cuda.py tests/core/test_device.py tests/core/test_precision.py
for precision in fp32 bf16; do
  step "real_size $precision" 90 python benchmarks/real_size.py --device cuda \
    --precision "$precision" --no-reference --only scorecam faithfulness \
    --json "$out/real_size_$precision.json"
  step "visualize_speed $precision" 60 python benchmarks/visualize_speed.py --device cuda \
    --precision "$precision" --json "$out/visualize_speed_$precision.json"
  step "serve_latency $precision" 60 python benchmarks/serve_latency.py \
    --model torchvision:resnet50 --weights none --images 20 --device cuda \
    --precision "$precision" --json "$out/serve_latency_resnet50_$precision.json"
  step "report_speed $precision" 90 python benchmarks/report_speed.py --device cuda \
    --precision "$precision" --json "$out/report_speed_$precision.json"
done
step precision_agreement "${AGREEMENT_LIMIT:-120}" python benchmarks/precision_agreement.py \
  --device cuda --models resnet50 --size 224 --only maps faithfulness dissect fewest_units \
  --json "$out/agreement_cuda.json"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
echo "every GPU check passed"
