#!/usr/bin/env bash
# Builds and tests moin with CUDA on an offline GPU host from .deb files made by scripts/bundle-deps.sh.
# Usage: scripts/build-cuda.sh --deps DIR [BUILD_DIR] [cmake args...]     (BUILD_DIR: build-cuda)
#
# Nothing is installed system-wide: every .deb in DIR is unpacked (dpkg -x) into BUILD_DIR/deps, which
# CMake uses as MOIN_DEPS_PREFIX. LibTorch is the one of the host's PyTorch (system python3, no venv);
# nvcc from PATH, $CUDACXX or /usr/local/cuda. Env: MOIN_JOBS (build jobs, default nproc), PYTHON (the
# python whose torch to use, default python3), MOIN_SKIP_TESTS=1 (build only), MOIN_TARGETS="a b" (build only
# these targets), MOIN_CONFIGURE_ONLY=1 (stop
# after cmake's configure step, e.g. to check which packages it found: grep _DIR BUILD_DIR/CMakeCache.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

DEPS=""
if [ "${1:-}" = "--deps" ]; then DEPS=${2:?--deps needs a folder}; shift 2; fi
[ -n "$DEPS" ] || { echo "usage: scripts/build-cuda.sh --deps DIR [BUILD_DIR] [cmake args...]" >&2; exit 2; }
BUILD=${1:-build-cuda}; shift || true
PY=${PYTHON:-python3}
JOBS=${MOIN_JOBS:-$(nproc)}

ls "$DEPS"/*.deb > /dev/null 2>&1 || { echo "build-cuda: no .deb files in $DEPS (make them with scripts/bundle-deps.sh)" >&2; exit 2; }
if [ -f "$DEPS/SHA256SUMS" ]; then
  (cd "$DEPS" && sha256sum --quiet -c SHA256SUMS) || { echo "build-cuda: $DEPS/SHA256SUMS does not match" >&2; exit 2; }
fi

# Unpack into a private prefix (never into /). Re-done when the set of .debs changes.
mkdir -p "$BUILD"
PREFIX=$(cd "$BUILD" && pwd)/deps
stamp=$(cd "$DEPS" && ls *.deb | sha256sum | cut -c1-16)
if [ "$(cat "$PREFIX/.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  for deb in "$DEPS"/*.deb; do dpkg-deb -x "$deb" "$PREFIX"; done
  echo "$stamp" > "$PREFIX/.stamp"
  echo "build-cuda: unpacked $(ls "$DEPS"/*.deb | wc -l) packages into $PREFIX"
fi

TORCH_PREFIX=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)') || {
  echo "build-cuda: $PY cannot import torch (install the CUDA PyTorch wheel for the host's python)" >&2; exit 2; }
"$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' ||
  echo "build-cuda: warning: $PY's torch is a CPU build; MOIN_CUDA=ON will fail" >&2

cuda_args=()
if ! command -v nvcc > /dev/null && [ -z "${CUDACXX:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
# The Python reference tests run when the host's python has what they need; otherwise only C++ tests.
py_args=()
if "$PY" -c 'import pytest, safetensors, numpy' 2> /dev/null; then py_args+=(-DMOIN_PYTHON="$(command -v "$PY")"); fi

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DMOIN_DEPS_PREFIX="$PREFIX" -DMOIN_CUDA=ON "${cuda_args[@]}" "${py_args[@]}" "$@"
if [ "${MOIN_CONFIGURE_ONLY:-0}" = 1 ]; then echo "build-cuda: configured $BUILD"; exit 0; fi
targets=()
[ -n "${MOIN_TARGETS:-}" ] && targets=(--target ${MOIN_TARGETS})
cmake --build "$BUILD" -j "$JOBS" "${targets[@]}"
if [ "${MOIN_SKIP_TESTS:-0}" != 1 ]; then
  (cd "$BUILD" && ctest --output-on-failure -j "$JOBS")
fi
echo "build-cuda: ok: $BUILD/bin/moin"
