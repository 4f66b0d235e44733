"""moin's tokenizer.json byte-level BPE (C++, `moin tokenizer encode|decode --model X.json`) gives the same ids
and texts as Hugging Face `tokenizers` (Rust). The tokenizer files are trained here with `tokenizers`:
GPT-2 style (ByteLevel with its regex), Llama-3 style (Split regex + ByteLevel(use_regex=False),
ignore_merges, added tokens, a template that adds BOS), Qwen2 style (NFC, one digit per piece) and SmolLM
style (Digits, then ByteLevel with its regex).
Trained and checked on real corpus documents when ../shared/data is there, and always on text Python
ships (its standard library's sources) plus hard cases."""
import glob
import json
import os
import re
import subprocess
import sys
import unicodedata

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from train_bpe_tokenizer import split_then_bytes  # noqa: E402  (the pre-tokenizer the project's script uses)
MOIN = os.environ.get("MOIN_BIN", os.path.join(ROOT, "build", "bin", "moin"))
DATA = os.environ.get("MOIN_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

HARD = [
    "", " ", "  ", "\n", "\n\n\n", "\r\n\r\n", "x ", " x", "hello   world\n\n  \n x  ",
    "It's we'LL they'RE I'M you'Ve she'D 's ''s '' 'S it'ſt", "don't won't y'all rock'n'roll",
    "12345678901234567890 3.14159 1,000,000 0x1F 2024-06-01 ١٢٣ ½ ²",
    "emoji 🙂👍🏽👨‍👩‍👧 ok 🇩🇪", "東京は日本の首都です。中文测试，标点！", "한국어 텍스트 가각",
    "def f(x):\n\treturn x**2  # comment\n\n\n    if a<=b: pass\n",
    "<|endoftext|>inside<|endoftext|> text <|begin_of_text|>x<|extra|>y <mask> z",
    "tabs\t\t\tand \r\n crlf \r\n\r\n  \t\n", "café naïve e\u0301 \uF900 Å \u212B \u1100\u1161\u11A8 a\u0302\u0323",
    " " * 300 + "x", "a" * 3000, "=" * 500, "\u00a0nbsp\u3000ideo\u2028ls\u0085nel\u200bzw",
    "ÀÉÎÕÜ àéîõü ß ſ Ǆ ǅ ǆ ﬁ", "Ελληνικά кириллица עברית العربية हिन्दी",
    "mixed123abc 123abc abc123 a1b2c3", "!!! ??? ... --- *** ### ```code``` ''' \"\"\"",
]


def moin(args, stdin):
    r = subprocess.run([MOIN, "tokenizer", *args, "-q"], input=stdin, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.split("\n")[:-1]]  # not splitlines: texts hold U+2028


def moin_encode(path, texts, special):
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    return moin(["encode", "--jsonl", "--model", path] + (["--bos"] if special else []), stdin)


def moin_decode(path, ids, skip_special=False):
    stdin = "".join(json.dumps(i) + "\n" for i in ids)
    return moin(["decode", "--jsonl", "--model", path] + (["--skip-special"] if skip_special else []), stdin)


def train(kind, texts, path):
    tok = Tokenizer(models.BPE(ignore_merges=kind in ("llama3", "qwen2")))
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif kind == "smollm":  # one digit per piece, then GPT-2's split
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False)])
    else:
        tok.pre_tokenizer = split_then_bytes(LLAMA3 if kind == "llama3" else QWEN2)
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=3000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if kind == "llama3":
        bos = "<|begin_of_text|>"
        tok.add_tokens(["<|extra|>"])  # a normalized, non-special added token
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if kind == "gpt2":  # RoBERTa's mask token swallows the spaces around it
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True)])
    tok.save(path)
    return tok


def check(kind, train_texts, test_texts, tmp_path):
    path = str(tmp_path / f"{kind}.json")
    ref = train(kind, train_texts, path)
    texts = test_texts + HARD
    ours = moin_encode(path, texts, special=True)
    want = [e.ids for e in ref.encode_batch(texts, add_special_tokens=True)]
    bad = [i for i, (a, b) in enumerate(zip(ours, want)) if a != b]
    assert len(ours) == len(texts) and not bad, \
        f"{kind}: {len(bad)} of {len(texts)} differ, first {texts[bad[0]][:80]!r}" if bad else f"{kind}: count"
    # decode(encode(x)) == x (NFC for the NFC tokenizer, no spaces around <mask>), == tokenizers' decode
    plain = moin_encode(path, texts, special=False)
    back = moin_decode(path, plain)
    norm = {"qwen2": lambda t: unicodedata.normalize("NFC", t),
            "gpt2": lambda t: re.sub(r"\s*<mask>\s*", "<mask>", t)}.get(kind, lambda t: t)  # lstrip/rstrip
    for t, ids, b in zip(texts, plain, back):
        assert b == norm(t), f"{kind}: round trip of {t[:80]!r}"
        assert b == ref.decode(ids, skip_special_tokens=False), f"{kind}: decode of {t[:80]!r}"
    skipped = moin_decode(path, want, skip_special=True)
    for ids, b in zip(want, skipped):
        assert b == ref.decode(ids, skip_special_tokens=True), kind
    return len(test_texts), len(HARD)


def corpus_docs():
    train_path = os.path.join(DATA, "corpus", "train.jsonl")
    if not os.path.exists(train_path):
        pytest.skip("../shared/data is absent (a user's clone has none): skipped")
    train_docs, test_docs = [], []
    with open(train_path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 61 == 0:  # the file is grouped by source: a stride covers every source
                (train_docs if len(train_docs) <= len(test_docs) else test_docs).append(json.loads(line)["text"])
    return train_docs[:400], test_docs[:320]


def stdlib_texts():
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
    texts = []
    for f in files[:120]:
        with open(f, encoding="utf-8", errors="replace") as h:
            texts.append(h.read()[:20000])
    return texts


@pytest.mark.parametrize("kind", ["gpt2", "llama3", "qwen2", "smollm"])
def test_ids_equal_tokenizers_on_real_corpus(kind, tmp_path):
    train_docs, test_docs = corpus_docs()
    n_docs, n_hard = check(kind, train_docs, test_docs, tmp_path)
    assert n_docs >= 300
    print(f"{kind}: ids equal on {n_docs} corpus documents and {n_hard} hard cases", file=sys.stderr)


@pytest.mark.parametrize("kind", ["gpt2", "llama3", "qwen2", "smollm"])
def test_ids_equal_tokenizers_on_builtin_text(kind, tmp_path):
    texts = stdlib_texts()
    check(kind, texts[::2], texts[1::2], tmp_path)


def test_unsupported_tokenizer_json_is_refused_in_one_line(tmp_path):
    tok = Tokenizer(models.WordPiece(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    path = str(tmp_path / "wp.json")
    tok.save(path)
    r = subprocess.run([MOIN, "tokenizer", "encode", "--model", path, "--text", "a"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "model type WordPiece is not supported" in r.stderr, r.stderr
