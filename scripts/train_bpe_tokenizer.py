#!/usr/bin/env python3
"""Trains a byte-level BPE tokenizer.json with Hugging Face `tokenizers` (in the project venv), for runs and
benchmarks that need one when no real model's tokenizer.json is at hand. moin itself reads tokenizer.json
in C++; this script is only a preparation step, like making the corpus.

  .venv/bin/python scripts/train_bpe_tokenizer.py --input data/demo/train.jsonl \\
      --output data/demo/bpe/tokenizer.json [--kind qwen2|llama3|gpt2] [--vocab 1024] [--docs 20000]

Kinds, as the real models ship them: gpt2 (ByteLevel with its regex), llama3 (Split with Llama-3's regex,
ignore_merges, <|begin_of_text|> added by the template), qwen2 (NFC, Qwen2's regex, no BOS). Every kind
has <|endoftext|>, the EOS moin finds without a tokenizer_config.json.
"""
import argparse
import json
import os

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


def split_then_bytes(pattern):
    """Llama 3's and Qwen2's pre-tokenizer: split by the regex (matches kept), then bytes to GPT-2's alphabet."""
    from tokenizers import Regex, pre_tokenizers
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train(texts, kind="qwen2", vocab=1024):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(ignore_merges=kind == "llama3"))
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = split_then_bytes(LLAMA3 if kind == "llama3" else QWEN2)
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<|begin_of_text|>"] if kind == "llama3" else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if kind == "llama3":
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, help="JSONL corpus")
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--output", required=True, help="tokenizer.json to write")
    ap.add_argument("--kind", default="qwen2", choices=["qwen2", "llama3", "gpt2"])
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--docs", type=int, default=20000, help="first N documents (0 = all)")
    a = ap.parse_args()
    texts = []
    with open(a.input, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)[a.text_field])
            if a.docs and len(texts) >= a.docs:
                break
    tok = train(texts, a.kind, a.vocab)
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    tok.save(a.output)
    print(f"wrote {a.output}: {a.kind}, vocabulary {tok.get_vocab_size()}")


if __name__ == "__main__":
    main()
