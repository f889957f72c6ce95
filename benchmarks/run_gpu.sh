#!/usr/bin/env bash
# The GPU check in one prepared run (for the lent device machine, whose torch/transformers are preinstalled and which
# has no network): install this checkout without dependencies, then measure. Results land in $OUT (or
# benchmarks/results/): copy them into benchmarks/results/ and commit them with the card's name.
#   bash benchmarks/run_gpu.sh            # about 5-8 minutes on one H100/H200
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_info.csv"
PYTHONUNBUFFERED=1 timeout 540 python benchmarks/gpu_throughput.py --out "$out" 2>&1 | tee "$out/gpu_throughput.log"
