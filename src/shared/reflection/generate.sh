#!/bin/sh
# Regenerates ./gen from the gRPC reflection protos that Debian's grpc-proto package installs
# (they are not ours, so they stay out of proto/ and its STANDARD lint). Run from the repo root:
#   sh src/shared/reflection/generate.sh [OUT]
set -eu
protos=${GRPC_PROTO_DIR:-/usr/share/grpc-proto}
out=${1:-src/shared/reflection/gen}  # a folder to write to instead (the freshness check in test/run.sh)
rm -rf "$out"
npx buf generate "$protos" --path "$protos/grpc/reflection" --template \
  "{\"version\":\"v2\",\"plugins\":[{\"local\":\"protoc-gen-es\",\"out\":\"$out\",\"opt\":[\"target=ts\",\"import_extension=js\"]}]}"
