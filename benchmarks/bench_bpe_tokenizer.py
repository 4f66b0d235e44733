#!/usr/bin/env python3
"""The peer of bench_bpe_tokenizer.cpp: Hugging Face tokenizers (Rust) encoding every document of a JSONL
corpus with THREADS threads (encode_batch, as a user of tokenizers would), in tokens/s and MB/s.

  python benchmarks/bench_bpe_tokenizer.py --make FILE.json [--kind llama3|gpt2|qwen2] [--vocab 32000]
      trains a byte-level BPE tokenizer.json on the corpus (scripts/train_bpe_tokenizer.py), the file both
      benchmarks read
  python benchmarks/bench_bpe_tokenizer.py --tokenizer FILE.json [--input JSONL] [--threads N] [--repeats 3]
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer")
    ap.add_argument("--make")
    ap.add_argument("--kind", default="llama3", choices=["llama3", "gpt2", "qwen2"])
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--input", default=os.path.join(ROOT, "..", "shared", "data", "corpus", "train.jsonl"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--docs", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    # The thread count must be set before tokenizers starts its rayon pool.
    os.environ["RAYON_NUM_THREADS"] = os.environ["RAYON_RS_NUM_CPUS"] = str(a.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if a.threads > 1 else "false"
    from tokenizers import Tokenizer

    docs = []
    with open(a.input, encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
            if a.docs and len(docs) >= a.docs:
                break
    if a.make:
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
        from train_bpe_tokenizer import train
        tok = train(docs, a.kind, a.vocab)
        tok.save(a.make)
        print(f"wrote {a.make}: {a.kind}, vocabulary {tok.get_vocab_size()}")
        return
    if not a.tokenizer:
        sys.exit("give --tokenizer FILE.json (or --make FILE.json)")
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(a.tokenizer)
    print(f"tokenizer {a.tokenizer}: vocabulary {tok.get_vocab_size()}, loaded in {time.perf_counter() - t0:.2f}s")
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"corpus {a.input}: {len(docs)} documents, {mb:.1f} MB; {a.threads} threads")
    for r in range(a.repeats):
        start = time.perf_counter()
        enc = tok.encode_batch(docs, add_special_tokens=False)
        s = time.perf_counter() - start
        n = sum(len(e.ids) for e in enc)
        print(f"pass {r + 1}: {n} tokens in {s:.2f}s: {n / s:.0f} tokens/s, {mb / s:.1f} MB/s"
              + (" (cold cache)" if r == 0 else ""))


if __name__ == "__main__":
    main()
