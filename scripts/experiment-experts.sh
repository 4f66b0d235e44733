#!/usr/bin/env bash
# The experts-vs-baselines experiment on a tiny CPU setup (about 10 minutes on 2 cores):
#   base     stories260K (llama2.c's TinyStories model, 260K parameters) converted to the HF layout
#   part     the shared multi-domain corpus partitioned into K clusters (tf-idf + k-means), tok512 tokens
#   experts  one LoRA expert per cluster (moin launch, 2 CPU jobs at a time)
#   dense    one LoRA of the same rank on every cluster's data, the experts' total token budget
# and prints, per cluster, the validation loss of the base, of the dense LoRA and of the cluster's expert.
#
#   scripts/experiment-experts.sh [WORK_DIR]      (env: MOIN, MOIN_SHARED_DATA, K, BUDGET, JOBS)
# Re-running skips finished steps (every step is resumable).
set -euo pipefail
cd "$(dirname "$0")/.."
MOIN=${MOIN:-build/bin/moin}
DATA=${MOIN_SHARED_DATA:-../shared/data}
WORK=${1:-experiment-experts}
K=${K:-4}
BUDGET=${BUDGET:-262144}   # training tokens per expert; the dense LoRA gets K times as many
JOBS=${JOBS:-2}
MODELS=$DATA/models/stories260K
[ -f "$MODELS/stories260K.bin" ] || { echo "no $MODELS/stories260K.bin (set MOIN_SHARED_DATA)" >&2; exit 2; }
mkdir -p "$WORK"
T0=$(date +%s)

# 1. The base model.
if [ ! -f "$WORK/base/config.json" ]; then
  "$MOIN" convert llama2c --input "$MODELS/stories260K.bin" --tokenizer "$MODELS/tok512.model" --output "$WORK/base"
fi

# 2. The partition: K clusters of the corpus, tokenised with the base model's tokenizer.
if [ ! -f "$WORK/part/manifest.json" ]; then
  "$MOIN" partition --input "$DATA/corpus/train.jsonl" --text-field text --label-field meta.pile_set_name \
    --tokenizer "$MODELS/tok512.model" --clusters "$K" --embedder tfidf --valid-fraction 0.05 \
    --output "$WORK/part"
fi

# 3. One train config for the experts and the dense baseline (same rank, same schedule).
cat > "$WORK/train.json" <<EOF
{
  "base": "$WORK/base",
  "seq_len": 256,
  "micro_batch": 8,
  "token_budget": $BUDGET,
  "lr": 0.003,
  "warmup_steps": 10,
  "min_lr_ratio": 0.1,
  "lora": {"r": 8, "alpha": 16},
  "eval_every": 0,
  "eval_tokens": 16384,
  "checkpoint_every": 50,
  "log_every": 25,
  "device": "cpu"
}
EOF

# 4. The experts, two CPU jobs at a time.
"$MOIN" launch --partition "$WORK/part" --config "$WORK/train.json" --output "$WORK/experts" \
  --jobs "$JOBS" --gpus none

# 5. The dense-LoRA baseline: every cluster, K x the budget.
"$MOIN" train --mode dense-lora --partition "$WORK/part" --config "$WORK/train.json" \
  --output "$WORK/dense" --resume --quiet > /dev/null

# 6. The table.
python3 - "$WORK" "$K" <<'EOF'
import json, sys
work, k = sys.argv[1], int(sys.argv[2])
dense = json.load(open(f"{work}/dense/summary.json"))
print(f"{'cluster':>7} {'base':>8} {'dense-LoRA':>11} {'expert':>8}  expert < dense < base")
ok = True
for c in range(k):
    e = json.load(open(f"{work}/experts/{c}/summary.json"))
    base, expert = e["initial_valid_loss"], e["final_valid_loss"]
    d = dense["valid_loss_per_cluster"][str(c)]["final"]
    good = expert < d < base
    ok &= expert < d and expert < base
    print(f"{c:>7} {base:8.4f} {d:11.4f} {expert:8.4f}  {'yes' if good else 'NO'}")
e_tok = sum(json.load(open(f"{work}/experts/{c}/summary.json"))["tokens_seen"] for c in range(k))
print(f"tokens: experts {e_tok} in total, dense LoRA {dense['tokens_seen']}")
sys.exit(0 if ok else 1)
EOF
echo "total time: $(( $(date +%s) - T0 )) s"
