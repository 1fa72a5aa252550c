#!/bin/sh
# The many-models-per-GPU benchmark on the GPU machine (through the device tool), in one call;
# bench/device-prelude.sh says what to carry (entry bench/multimodel/run.ts →
# .device/multimodel-bench.mjs, addon and the Azure trace CSVs (../shared/traces/*.csv) in
# bench/out/system-gpu). Run with carry [".device", "bench/out/system-gpu"]:
#   sh bench/multimodel/gpu-run.sh [run.ts options]
# make_model.py and the engine worker come with the working tree.
set -u
ADDON_DIR=bench/out/system-gpu
. "$(dirname "$0")/../device-prelude.sh"
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2; df -h "$data" /dev/shm | tail -2
} 2>&1 | tee "$OUT/env.log"
timeout 570 /tmp/package/bin/node .device/multimodel-bench.mjs --engines cuda:0 --python python3 --out "$data/thaw-multimodel-bench" --traces bench/out/system-gpu "$@" 2>&1 \
  | grep -v " INFO " | tee "$OUT/multimodel.log"
cp "$data/thaw-multimodel-bench/results.json" "$OUT/" 2>/dev/null
