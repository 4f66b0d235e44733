#!/usr/bin/env bash
# Configures and builds moin against the venv's LibTorch. Usage: scripts/build.sh [BUILD_DIR] [cmake args...]
# MOIN_BUILD_TARGETS: build only these targets (the demo needs only `moin`; default: everything, tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}; shift || true
VENV=${MOIN_VENV:-.venv}
PY="$(cd "$VENV" && pwd)/bin/python"
TORCH_PREFIX=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')
JOBS=${MOIN_JOBS:-$(nproc)}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DMOIN_PYTHON="$PY" "$@"
fi
cmake --build "$BUILD" -j "$JOBS" ${MOIN_BUILD_TARGETS:+--target $MOIN_BUILD_TARGETS}
