#!/usr/bin/env bash
# Seconds per expert, each in a process of its own against N packed in one process (`moin train --clusters`),
# at the same options: the shared corpus in K clusters, stories260K as the base, clusters 0..N-1, STEPS steps
# of MICRO x SEQ tokens, rank R, one thread. Also checks that every packed expert ends where it ends alone.
#
#   scripts/pack-vs-alone.sh [WORK_DIR]
#   env: MOIN (build/bin/moin), MOIN_SHARED_DATA (../shared/data), K (200), N (50), STEPS (4), MICRO (4),
#        SEQ (64), R (4)
# Re-running reuses WORK/base and WORK/part and re-times both ways. Timings move with the machine's load:
# run it on an idle machine and more than once. The pack runs between the two halves of the alone runs, so a
# machine whose speed drifts during the minute this takes moves both figures alike.
set -euo pipefail
cd "$(dirname "$0")/.."
K=${K:-200}
N=${N:-50}
WORK=${1:-pack-k$K}
source scripts/shared-corpus.sh
mkdir -p "$WORK"
shared_base "$WORK/base"
shared_partition "$K" "$WORK/part" > /dev/null
expert_budget_config "$WORK/base" "$WORK/train.json"
rm -rf "$WORK/alone" "$WORK/packed"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
alone() {
  for k in $(seq "$1" "$2"); do
    "$MOIN" train --config "$WORK/train.json" --set partition="$WORK/part" --cluster "$k" --output "$WORK/alone/$k" -q > /dev/null
  done
}
t0=$(date +%s.%N)
alone 0 $((N / 2 - 1))
t1=$(date +%s.%N)
"$MOIN" train --config "$WORK/train.json" --set partition="$WORK/part" --clusters "$(seq -s, 0 $((N - 1)))" --output "$WORK/packed" -q > /dev/null
t2=$(date +%s.%N)
alone $((N / 2)) $((N - 1))
t3=$(date +%s.%N)
python3 - "$WORK" "$N" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
t0, t1, t2, t3 = map(float, sys.argv[3:7])
alone, packed = (t1 - t0 + t3 - t2) / n, (t2 - t1) / n
diff = 0.0
for k in range(n):
    a = json.load(open(f"{work}/alone/{k}/summary.json"))
    p = json.load(open(f"{work}/packed/{k}/summary.json"))
    for key in ("initial_valid_loss", "final_valid_loss"):
        if a.get(key) is not None:
            diff = max(diff, abs(a[key] - p[key]))
print(f"alone {alone:.3f} s/expert, packed {n} per process {packed:.3f} s/expert: {alone / packed:.2f}x fewer")
print(f"max |validation loss alone - packed| over the {n} experts: {diff:.2e}")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
