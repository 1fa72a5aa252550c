#!/bin/sh
# Installs what thaw needs outside node_modules (run by `npm ci` as postinstall; idempotent):
#   - Debian packages: protoc and the gRPC Python plugin (code generation), PyTorch 1.13 on CPU with
#     OpenBLAS (the engine worker in CI), grpcio/protobuf/numpy/pytest for the worker and its tests;
#   - .venv: a virtual environment over the system site packages, for PyPI-only test tools.
# Set THAW_SKIP_SYSTEM_SETUP=1 to skip (e.g. in images that already have them).
set -eu
[ "${THAW_SKIP_SYSTEM_SETUP:-0}" = "1" ] && exit 0
cd "$(dirname "$0")/.."

packages="protobuf-compiler protobuf-compiler-grpc grpc-proto python3-torch libopenblas0-pthread
  python3-grpcio python3-protobuf python3-numpy python3-pytest python3-venv"
missing=""
for p in $packages; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "thaw: missing Debian packages:$missing (run as root, or install them)" >&2
    exit 1
  fi
  echo "thaw: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

# PyPI packages pinned for tests (the worker itself needs only the Debian stack).
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r python/requirements-test.txt
