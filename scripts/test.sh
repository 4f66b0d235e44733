#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (C++ and the Python reference checks).
# Usage: scripts/test.sh [ctest args...], e.g. scripts/test.sh -R Config
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD=${MOIN_BUILD_DIR:-build}
scripts/build.sh "$BUILD"
cd "$BUILD"
ctest --output-on-failure -j "${MOIN_TEST_JOBS:-2}" "$@"
