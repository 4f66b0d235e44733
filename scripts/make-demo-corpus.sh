#!/usr/bin/env bash
# Assembles the demo corpus (train.jsonl, valid.jsonl) from text Debian ships: fortunes, the FOLDOC and
# Jargon dictionaries, Python's standard library, manual pages and licence texts.
# Usage: scripts/make-demo-corpus.sh OUT_DIR [--max-per-source N] [--max-chars N] [--valid-percent P]
# Skips the work when OUT_DIR already holds the corpus (delete it to rebuild).
set -euo pipefail
out=${1:?usage: scripts/make-demo-corpus.sh OUT_DIR [options]}
shift
if [ -s "$out/train.jsonl" ] && [ -s "$out/valid.jsonl" ] && [ -s "$out/stats.json" ]; then
  echo "make-demo-corpus: $out already holds the corpus"
  exit 0
fi
exec python3 "$(dirname "$0")/make_demo_corpus.py" --out "$out" "$@"
