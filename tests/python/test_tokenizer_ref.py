"""Our SentencePiece tokenizer (moin tokenizer encode, through libmoin_spm) gives the same ids as
sentencepiece's Python package, on a sample of the real corpus and on a model trained by moin."""
import json
import os
import subprocess

import pytest
import sentencepiece as spm

ROOT = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MOIN = os.environ.get("MOIN_BIN", os.path.join(ROOT, "build", "bin", "moin"))
DATA = os.environ.get("MOIN_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))


def moin_ids(model, lines):
    # One document per line: newlines inside documents become spaces on both sides.
    r = subprocess.run([MOIN, "tokenizer", "encode", "-q", "--model", model], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, check=True)
    out = r.stdout.split("\n")[: len(lines)]
    return [[int(t) for t in row.split()] for row in out]


def sample_docs(n=300):
    path = os.path.join(DATA, "corpus", "valid.jsonl")
    if not os.path.exists(path):
        pytest.skip("../shared/data is absent (a user's clone has none): skipped")
    docs = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 7 == 0:  # the file is grouped by source: take every 7th to cover them all
                docs.append(json.loads(line)["text"].replace("\n", " ").replace("\r", " ")[:4000])
    return docs[:n]


def test_tok512_ids_equal_sentencepiece_python():
    model = os.path.join(DATA, "models", "stories260K", "tok512.model")
    docs = sample_docs()
    docs += ["", "  leading and trailing  ", "ünïcödé ✓ 東京 🙂", "x" * 5000]
    ref = spm.SentencePieceProcessor(model_file=model)
    ours = moin_ids(model, docs)
    for doc, got in zip(docs, ours):
        assert got == ref.encode(doc), doc[:80]


def test_trained_model_ids_equal_sentencepiece_python(tmp_path):
    docs = sample_docs(200)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
    subprocess.run([MOIN, "tokenizer", "train", "-q", "--input", str(corpus), "--output", str(tmp_path / "t"),
                    "--vocab-size", "800"], check=True)
    model = str(tmp_path / "t.model")
    ref = spm.SentencePieceProcessor(model_file=model)
    for doc, got in zip(docs, moin_ids(model, docs)):
        assert got == ref.encode(doc), doc[:80]
