#!/usr/bin/env bash
# Issue 38's speed goals on this machine's CPU, each in fp32 then bf16, one after the
# other in one run (the goals were set for 2 cores with AMX; on a CPU without bf16 units
# the bf16 steps are refused, as the commands refuse them, and only fp32 runs):
# - Score-CAM, resnet50 `layer4`, top-5 classes, one image (benchmarks/real_size.py);
# - feature visualisation of 16 resnet18 units at 128 px beside torch-lucent
#   (benchmarks/visualize_speed.py; lucent runs in fp32 both times, it has no bf16);
# - the explorer on resnet50 at 224 px, one client (benchmarks/serve_latency.py);
# - `convlens report` for one image on the Places365 networks, official-format
#   checkpoints (benchmarks/report_speed.py);
# - the faithfulness table of the seven CAM methods (benchmarks/real_size.py): 100
#   images in bf16, the goal; in fp32 on $FP32_FAITH_IMAGES images (default 20: the time
#   grows in proportion, 100 would take about half an hour here).
# A failed step does not stop the others; the script exits non-zero when any failed.
# Figures go to benchmarks/results/cpu/$NAME (default: the CPU's kind, e.g. amd-bf16-avx512).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".:benchmarks${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-.venv/bin/python}
kind=$($py -c "from convlens.core.device import cpu_name; from convlens.core.precision import \
cpu_has_fast_bf16 as f; import torch; print(cpu_name().split()[0].lower().replace('(r)', '') \
+ '-' + ('bf16' if f() else 'nobf16') + '-' + torch.backends.cpu.get_cpu_capability().lower())")
out="benchmarks/results/cpu/${NAME:-$kind}"
mkdir -p "$out"
precisions="fp32 bf16"
[[ $kind == *-bf16-* ]] || { echo "no bf16 units on this CPU: fp32 only"; precisions=fp32; }
failed=()

step() {  # step NAME COMMAND...: run COMMAND, note a failure
  local name=$1
  shift
  echo "== $name"
  local start=$SECONDS
  "$@" || { failed+=("$name"); echo "!! $name failed"; }
  echo "== $name: $((SECONDS - start)) s"
}

both() {  # both NAME COMMAND...: the step in each precision, {p} in COMMAND replaced by it
  local name=$1 p
  shift
  for p in $precisions; do
    step "$name $p" "${@//\{p\}/$p}"
  done
}

$py -c "from convlens.core.device import machine_info; print(machine_info())"
both scorecam $py benchmarks/real_size.py --only scorecam --no-reference --precision {p} \
  --json "$out/real_size_{p}.json"
both visualize_speed $py benchmarks/visualize_speed.py --precision {p} \
  --json "$out/visualize_speed_{p}.json"
both serve_latency $py benchmarks/serve_latency.py --model torchvision:resnet50 --weights none \
  --images 20 --precision {p} --json "$out/serve_latency_resnet50_{p}.json"
both report_speed $py benchmarks/report_speed.py --precision {p} --json "$out/report_speed_{p}.json"
for p in $precisions; do
  images=100
  [ "$p" = fp32 ] && images=${FP32_FAITH_IMAGES:-20}
  step "faithfulness $p" $py benchmarks/real_size.py --only faithfulness --precision "$p" \
    --faith-images "$images" --json "$out/real_size_$p.json"
done
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
echo "every step ran; figures in $out"
