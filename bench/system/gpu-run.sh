#!/bin/sh
# The whole-system cold start benchmark on the GPU machine (through the device tool), in one call;
# bench/device-prelude.sh says what to carry (entry bench/system/cold-start.ts →
# .device/system-bench.mjs, addon in bench/out/system-gpu). Run with carry [".device",
# "bench/out/system-gpu"]:  sh bench/system/gpu-run.sh [cold-start.ts options]
# The Python helpers (make_model.py, hf_baseline.py) and the engine worker come with the working tree.
set -u
ADDON_DIR=bench/out/system-gpu
. "$(dirname "$0")/../device-prelude.sh"
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2; df -h "$data" | tail -1
  python3 -c "import torch, transformers, grpc; print('torch', torch.__version__, 'transformers', transformers.__version__, 'grpcio', grpc.__version__)"
} 2>&1 | tee "$OUT/env.log"
timeout 560 /tmp/package/bin/node .device/system-bench.mjs --engines auto --python python3 --dram-bytes 20G --hf --out "$data/thaw-system-bench" "$@" 2>&1 \
  | grep -v " INFO " | tee "$OUT/cold-start.log"
cp "$data/thaw-system-bench/results.json" "$OUT/" 2>/dev/null
