#!/usr/bin/env bash
# The whole GPU check in one command, sized for one 15-minute GPU window (docs/benchmarks.md):
#   build the CUDA binaries it needs from carried .deb files, then correctness against transformers + peft on
#   the same GPU and speed side by side (scripts/gpu_check.py), every figure into OUT/gpu-check.{json,md}.
#
# Usage:
#   scripts/gpu-check.sh --deps DEBS [OUT]      on a GPU host: DEBS from scripts/bundle-deps.sh; OUT defaults
#                                               to $OUT, else gpu-check-out
#   scripts/gpu-check.sh --dry-run [--bin DIR] [OUT]
#                                               the same checks on the CPU with tiny shapes, against an
#                                               existing CPU build (DIR default build/bin; built when absent)
# Env: MOIN_BUILD_DIR (default build-cuda), MOIN_JOBS (default nproc), PYTHON (the host python with CUDA torch,
# transformers and peft; default python3, or .venv/bin/python for a dry run), GPU_CHECK_ONLY (check names).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0; DEPS=""; BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --deps) DEPS=${2:?--deps needs a folder}; shift 2 ;;
    --bin) BIN=${2:?--bin needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
OUTDIR=${1:-${OUT:-gpu-check-out}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
only=()
[ -n "${GPU_CHECK_ONLY:-}" ] && only=(--only ${GPU_CHECK_ONLY})

if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-.venv/bin/python}
  if [ -z "$BIN" ]; then
    BIN=build/bin
    [ -x "$BIN/moin" ] && [ -x "$BIN/bench_train" ] || { scripts/setup.sh && scripts/build.sh build; }
  fi
  exec "$PY" scripts/gpu_check.py --dry-run --bin "$BIN" --out "$OUTDIR" "${only[@]}"
fi

[ -n "$DEPS" ] || { echo "gpu-check: --deps DEBS is required on a GPU host (or --dry-run)" >&2; exit 2; }
PY=${PYTHON:-python3}
BUILD=${MOIN_BUILD_DIR:-build-cuda}
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUTDIR/gpu.txt" || true

# Only what the checks run: the CLI (and the sentencepiece shim it loads) and two benchmarks; no tests.
t0=$(date +%s)
if MOIN_SKIP_TESTS=1 MOIN_TARGETS="moin bench_train bench_lora_load" PYTHON="$PY" \
   scripts/build-cuda.sh --deps "$DEPS" "$BUILD" -DMOIN_BUILD_TESTS=OFF -DMOIN_ASAN_TESTS=OFF \
   -DMOIN_CUDA_ARCHITECTURES="${MOIN_CUDA_ARCHITECTURES:-90}" > "$OUTDIR/build.log" 2>&1; then
  echo "gpu-check: build took $(( $(date +%s) - t0 )) s" | tee -a "$OUTDIR/build.log"
else
  echo "gpu-check: the build failed after $(( $(date +%s) - t0 )) s; last lines of $OUTDIR/build.log:" >&2
  tail -40 "$OUTDIR/build.log" >&2
  exit 1
fi
echo "{\"build_seconds\": $(( $(date +%s) - t0 ))}" > "$OUTDIR/build.json"
exec "$PY" scripts/gpu_check.py --bin "$BUILD/bin" --out "$OUTDIR" "${only[@]}"
