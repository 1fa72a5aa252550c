#!/bin/sh
# One command for the load benchmark: makes the model if it is not there, then runs bench.ts.
#   sh bench/load/run.sh [--layers N] [--dir DIR] [--gpu] [other bench.ts options]
# Defaults (CPU machine): 4 layers (3.9 GB), /tmp/thaw-bench-model, .venv/bin/python.
# On the GPU machine (no Node.js there): NODE=path/to/node BENCH_JS=bundle.mjs sh bench/load/run.sh --layers 32 --gpu
set -eu
cd "$(dirname "$0")/../.."
layers=4
dir=/tmp/thaw-bench-model
rest=""
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) rest="$rest $1"; shift ;;
  esac
done
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
dir="$dir-$layers"
if [ ! -f "$dir/layout.json" ]; then
  echo "[bench] making a $layers-layer Llama-3-8B-shaped model in $dir"
  "$py" bench/load/make_model.py --out "$dir" --layers "$layers"
fi
if [ -n "${BENCH_JS:-}" ]; then
  exec "${NODE:-node}" "$BENCH_JS" --model "$dir" --python "$py" $rest
fi
exec npx tsx bench/load/bench.ts --model "$dir" --python "$py" $rest
