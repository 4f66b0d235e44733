#!/usr/bin/env bash
# The demo: on a fresh Debian 12 machine with no data and no model, installs what is missing
# (scripts/setup.sh), builds (scripts/build.sh), assembles the demo corpus from text Debian ships, and runs
# the whole MoIN pipeline (tokenizer, partition into 8 clusters, a tiny pre-trained base, 8 LoRA experts,
# the dense-LoRA and continued pre-training baselines, the comparison methods, evaluation, report) with
# configs/demo.json, then prints the results.
# A second run skips setup, the build and every finished stage. Extra arguments go to `moin run`
# (e.g. --set jobs=2, --output runs/demo2).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
start=$(date +%s)

scripts/setup.sh
if [ ! -x "$BUILD_DIR/bin/moin" ] || [ -n "$(find src include tools CMakeLists.txt -newer "$BUILD_DIR/bin/moin" -print -quit)" ]; then
  # Only the CLI (and the tokenizer helpers it depends on): the test targets would double the build.
  MOIN_JOBS=${MOIN_JOBS:-$(nproc)} MOIN_BUILD_TARGETS=moin scripts/build.sh "$BUILD_DIR"
else
  echo "demo: $BUILD_DIR/bin/moin is up to date, build skipped"
fi
setup_done=$(date +%s)

scripts/make-demo-corpus.sh data/demo
"$BUILD_DIR/bin/moin" run configs/demo.json "$@"
end=$(date +%s)
echo
echo "demo: setup + build $((setup_done - start)) s, corpus + pipeline $((end - setup_done)) s (report: runs/demo/report/report.md)"
