#!/usr/bin/env bash
# The GPU checks, for a machine with CUDA: every public analysis on CUDA against the CPU
# (tests/core/test_cuda.py, fp32 within 1e-4 relative) and the device discipline test.
# The real-size benchmarks do not take --device yet (issue 38), so they are not run here.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
python -m pytest -q -p no:cacheprovider tests/core/test_cuda.py tests/core/test_device.py
