#!/usr/bin/env bash
# MoIN at scale on the shared corpus, on the CPU: K clusters (MoIN used ~5,000), every expert trained on a
# tiny fixed budget, packed PER_JOB experts per process, then held-out perplexity and routing. Measures
# what each stage costs per expert, not quality (the budget is far too small to help the base).
#   base       stories260K (llama2.c, 260K parameters) converted to the Hugging Face layout
#   partition  the corpus's train.jsonl in K clusters (tf-idf + k-means), tokenised with tok512
#   experts    moin launch --experts-per-job PER_JOB, JOBS processes at a time; clusters under
#              min_train_tokens (one training sequence) get no expert and route to the base
#   eval       moin eval ppl (base, MoIN, random; no oracle) and moin eval routing on EVAL_DOCS held-out docs
# Prints each stage's seconds and writes WORK/scale.json.
#
#   scripts/scale-experts.sh [WORK_DIR]
#   env: MOIN (build/bin/moin), MOIN_SHARED_DATA (../shared/data), K (1000), PER_JOB (50), JOBS (2),
#        STEPS (4), MICRO (4), SEQ (64), R (4), EVAL_DOCS (500)
# Re-running skips finished stages (each is resumable).
set -euo pipefail
cd "$(dirname "$0")/.."
K=${K:-1000}
WORK=${1:-scale-k$K}
PER_JOB=${PER_JOB:-50}
JOBS=${JOBS:-2}
EVAL_DOCS=${EVAL_DOCS:-500}
source scripts/shared-corpus.sh
mkdir -p "$WORK"
now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 1))"; }

shared_base "$WORK/base"

t=$(now)
shared_partition "$K" "$WORK/part"
T_PART=$(secs "$t" "$(now)")
echo "partition: $T_PART s"

expert_budget_config "$WORK/base" "$WORK/train.json"
t=$(now)
"$MOIN" launch --partition "$WORK/part" --config "$WORK/train.json" --output "$WORK/experts" --jobs "$JOBS" \
  --gpus none --experts-per-job "$PER_JOB" -q > "$WORK/launch.txt" || true
T_LAUNCH=$(secs "$t" "$(now)")
echo "experts: $T_LAUNCH s"

t=$(now)
[ -f "$WORK/ppl.json" ] || "$MOIN" eval ppl --data "$DATA/corpus/valid.jsonl" --base "$WORK/base" \
  --partition "$WORK/part" --experts "$WORK/experts" --prefix-tokens 32 --max-tokens 256 \
  --max-docs "$EVAL_DOCS" --json "$WORK/ppl.json" --markdown "$WORK/ppl.md" --set plots=false -q > /dev/null
T_PPL=$(secs "$t" "$(now)")
echo "eval ppl: $T_PPL s"
t=$(now)
[ -f "$WORK/routing.json" ] || "$MOIN" eval routing --data "$DATA/corpus/valid.jsonl" --partition "$WORK/part" \
  --max-docs "$EVAL_DOCS" --ppl-json "$WORK/ppl.json" --json "$WORK/routing.json" --markdown "$WORK/routing.md" \
  --set plots=false -q > /dev/null
T_ROUTE=$(secs "$t" "$(now)")
echo "eval routing: $T_ROUTE s"

python3 - "$WORK" "$K" "$PER_JOB" "$JOBS" "$T_PART" "$T_LAUNCH" "$T_PPL" "$T_ROUTE" <<'PY'
import json, os, sys
work, k, per_job, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t_part, t_launch, t_ppl, t_route = map(float, sys.argv[5:9])
status = {}
for c in range(k):
    s = os.path.join(work, "experts", str(c), "summary.json")
    st = json.load(open(s)).get("status", "done") if os.path.exists(s) else "missing"
    status[st] = status.get(st, 0) + 1
man = json.load(open(os.path.join(work, "part", "manifest.json")))
ppl = json.load(open(os.path.join(work, "ppl.json")))
systems = {s["name"]: round(s["ppl"], 3) for s in ppl["systems"]}
trained = status.get("done", 0)
out = {"k": k, "experts_per_job": per_job, "jobs": jobs, "expert_status": status,
       "seconds": {"partition": t_part, "launch": t_launch, "eval_ppl": t_ppl, "eval_routing": t_route},
       "launch_seconds_per_expert": round(t_launch / max(trained, 1), 4),
       "eval": {"docs": ppl["docs"], "routed_without_expert": ppl["routed_without_expert"],
                "throughput": ppl.get("throughput"), "ppl": systems}}
json.dump(out, open(os.path.join(work, "scale.json"), "w"), indent=1)
print(json.dumps(out, indent=1))
PY
