#!/bin/bash
# Everything the engine worker needs a GPU for, in one device call (logs and results under $OUT):
#   1. environment (GPU, torch, transformers, protobuf; python/gen imports with this protobuf);
#   2. Hugging Face reference fixtures for the tiny models (python/tests/make_fixtures.py);
#   3. the pytest suite on this machine, CUDA tests included (bf16 agreement -> bf16-agreement.jsonl);
#   4. the 8B benchmark (bench/engine/bench.py -> bench.json, worker.log);
#   5. where a decode step's time goes (bench/engine/step_profile.py -> step_profile.json);
#   6. many models in one worker (bench/engine/multimodel.py -> multimodel.json);
#   7. every family at its real size, bf16 and FP8 (bench/engine/families.py -> families.json).
# Tiny models and their checkpoints travel in .device-engine/{tiny,ckpt}/<arch>, made here (the GPU
# machine has no Node.js) and named in the device call's `carry` (the folder is in .git/info/exclude):
#   for a in llama mistral qwen2 mistral-sliding qwen2-sliding qwen3 qwen3-moe mixtral gemma2 gemma3 phi3 qwen3-fp8 llama-fp8; do node src/cli/thaw.js make-tiny-model .device-engine/tiny/$a --arch $a
#     node src/cli/thaw.js convert .device-engine/tiny/$a --store .device-engine/store-$a
#     mv .device-engine/store-$a/*@main .device-engine/ckpt/$a; done
# Usage: bash bench/engine/gpu_run.sh [stages...]   (stages: env fixtures pytest bench profile multimodel families; default all)
set -u
OUT=${OUT:-/tmp/thaw-gpu-out}
mkdir -p "$OUT"
D=$PWD/.device-engine
export PYTHONPATH=$PWD/python:$PWD/python/gen PYTHONUNBUFFERED=1
stages=${*:-env fixtures pytest bench profile multimodel families}
stage() { echo; echo "=== $1 ($(date +%T))"; }
for s in $stages; do
  case $s in
  env)
    stage env
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import sys, torch, transformers, google.protobuf, grpc; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'protobuf', google.protobuf.__version__, 'grpcio', grpc.__version__)"
    python3 -c "from thaw.engine.v1 import engine_service_pb2, engine_service_pb2_grpc; from thaw.checkpoint.v1 import checkpoint_pb2; print('python/gen imports OK')"
    ;;
  fixtures)
    stage fixtures
    timeout 240 python3 python/tests/make_fixtures.py --models "$D/tiny" --out "$OUT"
    ;;
  pytest)
    stage pytest
    fx=$PWD/python/tests/fixtures
    [ -f "$OUT/hf-llama.json" ] && fx=$OUT  # fixtures made in this run
    (cd python && THAW_TINY_MODELS="$D/tiny" THAW_TINY_CHECKPOINTS="$D/ckpt" THAW_FIXTURES_DIR="$fx" THAW_REPORT_DIR="$OUT" \
      timeout 300 python3 -m pytest -q -p no:cacheprovider -rs --durations=8 tests)
    cat "$OUT/bf16-agreement.jsonl" 2>/dev/null
    ;;
  bench)
    stage bench
    timeout 420 python3 bench/engine/bench.py --out "$OUT/bench.json" --worker-log "$OUT/worker.log" ${BENCH_ARGS:-}
    ;;
  profile)
    stage profile
    timeout 240 python3 bench/engine/step_profile.py --out "$OUT/step_profile.json"
    ;;
  multimodel)
    stage multimodel
    timeout 360 python3 bench/engine/multimodel.py --out "$OUT/multimodel.json" ${MULTIMODEL_ARGS:-}
    ;;
  families)
    stage families
    timeout 580 python3 bench/engine/families.py --out "$OUT/families.json" ${FAMILIES_ARGS:-}
    ;;
  esac
done
stage done
