#!/usr/bin/env bash
# The experts-vs-baselines experiment on a tiny CPU setup (about 21 minutes on 2 idle cores):
#   part     the shared multi-domain corpus partitioned into K clusters (tf-idf + k-means), tokenised with
#            stories260K's 512-token SentencePiece model
#   base     a small Llama (hidden 64, 4 layers, 0.2M parameters) pre-trained from scratch by
#            `moin train --mode full` on every cluster (the whole corpus, about one epoch), then frozen.
#            It must be near convergence: an under-trained base lets the dense LoRA win by finishing
#            general pre-training with its K times more steps (docs/train.md).
#   experts  one LoRA expert per cluster (moin launch, JOBS CPU jobs at a time)
#   dense    one LoRA of the same rank on every cluster's data, the experts' total token budget
#   cpt      continued full pre-training of the base on the same total budget
#   mixture  a learned token-level mixture of the experts (BTX: a top-2 router per layer) on a quarter of
#            the experts' tokens, and PEER blocks with the experts' parameters on all of them, once per seed
#            of SEEDS (docs/compare.md)
#   eval     held-out perplexity on valid.jsonl of every system (moin eval ppl, routed on 32-token prefixes)
# and prints, per cluster, the validation loss of the base, of the dense LoRA and of the cluster's expert
# (and of cpt), then the perplexity table.
#
#   scripts/experiment-experts.sh [WORK_DIR]
#   env: MOIN (build/bin/moin), MOIN_SHARED_DATA, K (4), BUDGET (tokens per expert), PRETRAIN_STEPS,
#        JOBS (2), EVAL_TOKENS, LORA_LR, LORA_R (8), MICRO_BATCH (16), CPT_LR, SEEDS ("0"; "0 1 2" for the
#        spread of the trained comparison methods), MIXTURE_LR (0.01),
#        PART (a finished partition folder to use), BASE (a base model folder to use instead of pre-training)
# Re-running skips finished steps (every step is resumable). Exit 1 when an expert does not beat both.
set -euo pipefail
cd "$(dirname "$0")/.."
MOIN=${MOIN:-build/bin/moin}
DATA=${MOIN_SHARED_DATA:-../shared/data}
WORK=${1:-experiment-experts}
K=${K:-4}
BUDGET=${BUDGET:-1048576}              # training tokens per expert; the dense LoRA gets K times as many
PRETRAIN_STEPS=${PRETRAIN_STEPS:-6000} # base pre-training steps of 16 x 256 tokens (6000: 24.6M tokens)
JOBS=${JOBS:-2}
LORA_LR=${LORA_LR:-0.003}               # peak learning rate of the experts and the dense LoRA
EVAL_TOKENS=${EVAL_TOKENS:-65536}       # validation tokens per cluster (a fixed set of sequences)
LORA_R=${LORA_R:-8}
MICRO_BATCH=${MICRO_BATCH:-16}
CPT_LR=${CPT_LR:-0.0006}               # continued pre-training: the lr the base's schedule ended at
SEEDS=${SEEDS:-0}                      # seeds of the trained comparison methods (mixture, PEER)
MIXTURE_LR=${MIXTURE_LR:-0.01}
MODELS=$DATA/models/stories260K
[ -f "$MODELS/tok512.model" ] || { echo "no $MODELS/tok512.model (set MOIN_SHARED_DATA)" >&2; exit 2; }
mkdir -p "$WORK"
T0=$(date +%s)

# 1. The partition: K clusters of the corpus, tokenised with tok512.
if [ -n "${PART:-}" ] && [ ! -e "$WORK/part" ]; then ln -s "$(realpath "$PART")" "$WORK/part"; fi
if [ ! -f "$WORK/part/manifest.json" ]; then
  "$MOIN" partition --input "$DATA/corpus/train.jsonl" --text-field text --label-field meta.pile_set_name \
    --tokenizer "$MODELS/tok512.model" --clusters "$K" --embedder tfidf --valid-fraction 0.05 \
    --output "$WORK/part"
fi
echo "partition: $(( $(date +%s) - T0 )) s"

# 2. The base: pre-trained from scratch on every cluster (full mode), then frozen for the experts.
cat > "$WORK/base-config.json" <<JSON
{"vocab_size": 512, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 4,
 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
 "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2}
JSON
if [ -n "${BASE:-}" ]; then
  [ -e "$WORK/base" ] || ln -s "$(realpath "$BASE")" "$WORK/base"
else
"$MOIN" train --mode full --partition "$WORK/part" --output "$WORK/base" --resume --quiet \
  --set model_config="$WORK/base-config.json" --set max_steps="$PRETRAIN_STEPS" --set seq_len=256 \
  --set micro_batch=16 --set lr=0.006 --set warmup_steps=20 --set weight_decay=0.01 --set eval_every=0 \
  --set eval_tokens="$EVAL_TOKENS" --set checkpoint_every=100 --set log_every=50 --set device=cpu > /dev/null
fi
echo "base: $(( $(date +%s) - T0 )) s"

# 3. One train config for the experts and the dense baseline (same rank, same schedule).
cat > "$WORK/train.json" <<JSON
{
  "base": "$WORK/base",
  "seq_len": 256,
  "micro_batch": $MICRO_BATCH,
  "token_budget": $BUDGET,
  "lr": $LORA_LR,
  "warmup_steps": 10,
  "min_lr_ratio": 0.1,
  "lora": {"r": $LORA_R, "alpha": $((2 * LORA_R))},
  "eval_every": 0,
  "eval_tokens": $EVAL_TOKENS,
  "checkpoint_every": 50,
  "log_every": 25,
  "device": "cpu"
}
JSON

# 4. The experts, JOBS CPU jobs at a time.
"$MOIN" launch --partition "$WORK/part" --config "$WORK/train.json" --output "$WORK/experts" \
  --jobs "$JOBS" --gpus none
echo "experts: $(( $(date +%s) - T0 )) s"

# 5. The dense-LoRA baseline: every cluster, K x the budget.
"$MOIN" train --mode dense-lora --partition "$WORK/part" --config "$WORK/train.json" \
  --output "$WORK/dense" --resume --quiet > /dev/null
echo "dense: $(( $(date +%s) - T0 )) s"

# 6. Continued pre-training (reported, not part of the pass test): every weight of the base trained
#    further on the same K x BUDGET tokens, at the learning rate pre-training ended with.
"$MOIN" train --mode full --partition "$WORK/part" --config "$WORK/train.json" --output "$WORK/cpt" \
  --resume --quiet --set lr="$CPT_LR" > /dev/null
echo "cpt: $(( $(date +%s) - T0 )) s"

# 7. The trained comparison methods, once per seed: the learned mixture (routers only) and PEER.
for seed in $SEEDS; do
  "$MOIN" train --mode mixture --partition "$WORK/part" --config "$WORK/train.json" --experts "$WORK/experts" \
    --output "$WORK/mixture-s$seed" --resume --quiet --set seed="$seed" --set lr="$MIXTURE_LR" \
    --set token_budget=$((BUDGET / 4)) > /dev/null
  "$MOIN" train --mode peer --partition "$WORK/part" --config "$WORK/train.json" --experts "$WORK/experts" \
    --output "$WORK/peer-s$seed" --resume --quiet --set seed="$seed" > /dev/null
done
echo "mixture, peer: $(( $(date +%s) - T0 )) s"
FIRST=${SEEDS%% *}

# 8. Held-out perplexity on the corpus's valid.jsonl (documents no run trained on), routed on 32-token
#    prefixes: base, continued pre-training, dense LoRA, MoIN, random expert, oracle, and the comparison
#    methods over the same experts, c-BTM, Arrow, the mixture and PEER of the first seed (docs/compare.md);
#    the other seeds' mixture and PEER in ppl-s<seed>.json.
[ -f "$WORK/ppl.json" ] || "$MOIN" eval ppl --data "$DATA/corpus/valid.jsonl" --base "$WORK/base" \
  --partition "$WORK/part" --experts "$WORK/experts" --dense "$WORK/dense" --cpt "$WORK/cpt" \
  --prefix-tokens 32 --max-tokens 256 --json "$WORK/ppl.json" --markdown "$WORK/ppl.md" \
  --set plots=false --set oracle=true --set cbtm=true --set arrow=true \
  --set mixture="$WORK/mixture-s$FIRST" --set peer="$WORK/peer-s$FIRST" --quiet > /dev/null
for seed in $SEEDS; do
  [ "$seed" = "$FIRST" ] || [ -f "$WORK/ppl-s$seed.json" ] || "$MOIN" eval ppl --data "$DATA/corpus/valid.jsonl" \
    --base "$WORK/base" --partition "$WORK/part" --experts "$WORK/experts" --prefix-tokens 32 --max-tokens 256 \
    --json "$WORK/ppl-s$seed.json" --set plots=false --set random=false \
    --set mixture="$WORK/mixture-s$seed" --set peer="$WORK/peer-s$seed" --quiet > /dev/null
done
echo "eval: $(( $(date +%s) - T0 )) s"
echo "total time: $(( $(date +%s) - T0 )) s"

# 9. The tables: validation loss per cluster (the pass test), then held-out perplexity, then the spread of
#    the trained comparison methods over the seeds.
python3 - "$WORK" "$K" $SEEDS <<'PY'
import json, statistics, sys
work, k, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
dense = json.load(open(f"{work}/dense/summary.json"))
cpt = json.load(open(f"{work}/cpt/summary.json"))
print(f"{'cluster':>7} {'base':>8} {'dense-LoRA':>11} {'expert':>8}  expert best  {'cpt':>8}")
ok = True
for c in range(k):
    e = json.load(open(f"{work}/experts/{c}/summary.json"))
    base, expert = e["initial_valid_loss"], e["final_valid_loss"]
    d = dense["valid_loss_per_cluster"][str(c)]["final"]
    f = cpt["valid_loss_per_cluster"][str(c)]["final"]
    good = expert < d and expert < base
    ok &= good
    print(f"{c:>7} {base:8.4f} {d:11.4f} {expert:8.4f}  {'yes' if good else 'NO':>11}  {f:8.4f}")
e_tok = sum(json.load(open(f"{work}/experts/{c}/summary.json"))["tokens_seen"] for c in range(k))
print(f"training tokens: experts {e_tok} in total, dense LoRA {dense['tokens_seen']}, cpt {cpt['tokens_seen']}")
print()
print(open(f"{work}/ppl.md").read().split("\n\nPerplexity per cluster")[0])
if len(seeds) > 1:
    for key in ("mixture", "peer"):
        ppl = []
        for i, seed in enumerate(seeds):
            rep = json.load(open(f"{work}/ppl.json" if i == 0 else f"{work}/ppl-s{seed}.json"))
            ppl += [s["ppl"] for s in rep["systems"] if s["key"] == key]
        print(f"{key} over seeds {' '.join(seeds)}: " + ", ".join(f"{p:.2f}" for p in ppl) +
              f"; mean {statistics.mean(ppl):.2f}, standard deviation {statistics.stdev(ppl):.3f}")
sys.exit(0 if ok else 1)
PY
