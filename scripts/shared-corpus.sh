# Sourced by the scripts that measure experts on the shared corpus (scale-experts.sh, pack-vs-alone.sh):
# the data, stories260K as the frozen base, the corpus's partition and the tiny per-expert budget they share.
#   env: MOIN (build/bin/moin), MOIN_SHARED_DATA (../shared/data), STEPS (4), MICRO (4), SEQ (64), R (4)
MOIN=${MOIN:-$PWD/build/bin/moin}
DATA=${MOIN_SHARED_DATA:-../shared/data}
STEPS=${STEPS:-4}
MICRO=${MICRO:-4}
SEQ=${SEQ:-64}
R=${R:-4}
MODELS=$DATA/models/stories260K
[ -f "$MODELS/stories260K.bin" ] || { echo "no $MODELS/stories260K.bin (set MOIN_SHARED_DATA)" >&2; exit 2; }

# stories260K (llama2.c) in the Hugging Face layout, in DIR; skipped when there.
shared_base() {
  [ -f "$1/config.json" ] || "$MOIN" convert llama2c --input "$MODELS/stories260K.bin" \
    --tokenizer "$MODELS/tok512.model" --output "$1" -q
}

# The corpus's train.jsonl in K clusters (tf-idf + k-means), tokenised with tok512, in DIR; skipped when there.
shared_partition() {
  [ -f "$2/manifest.json" ] || "$MOIN" partition --input "$DATA/corpus/train.jsonl" --text-field text \
    --label-field meta.pile_set_name --tokenizer "$MODELS/tok512.model" --clusters "$1" --embedder tfidf \
    --valid-fraction 0.05 --output "$2" -q
}

# The per-expert training options (STEPS steps of MICRO x SEQ tokens, rank R, one thread) over base DIR, to FILE.
expert_budget_config() {
  cat > "$2" <<JSON
{"base": "$1", "seq_len": $SEQ, "micro_batch": $MICRO, "max_steps": $STEPS, "lr": 0.003,
 "lora": {"r": $R, "alpha": $((2 * R))}, "eval_every": 0, "eval_tokens": $((SEQ * 4)), "checkpoint_every": 0,
 "log_every": 1000, "num_threads": 1, "device": "cpu"}
JSON
}
