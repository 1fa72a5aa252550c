#!/bin/sh
# The agent benchmark on the GPU machine (through the device tool), in one call; bench/device-prelude.sh
# says what to carry (entry bench/agent/load-tiers.ts → .device/agent-bench.mjs, addon in
# bench/out/agent-gpu). Run with carry [".device", "bench/out/agent-gpu"]:
#   sh bench/agent/gpu-run.sh [load-tiers.ts options]
set -u
ADDON_DIR=bench/out/agent-gpu
. "$(dirname "$0")/../device-prelude.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, grpc, google.protobuf as p; print('torch', torch.__version__, 'grpcio', grpc.__version__, 'protobuf', p.__version__)"
timeout 560 /tmp/package/bin/node .device/agent-bench.mjs --engines cuda:0 --python python3 --out "$data/thaw-agent-bench" "$@" 2>&1 \
  | grep -v " INFO " | tee "$OUT/agent-bench.log"
cp "$data/thaw-agent-bench/results.json" "$OUT/" 2>/dev/null
