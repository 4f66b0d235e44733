"""`moin route` and `moin eval routing` on a real partition made by `moin partition`.

The router must reproduce the partition's own assignment when it reads a training document's full text
(>= 99.9%), keep one output line per input line in order, and report prefix agreement for eval routing.
The corpus is the demo corpus (Debian text); skipped when its packages are absent.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MOIN = os.environ.get("MOIN_BIN", os.path.join(ROOT, "build", "bin", "moin"))


def moin(*args, stdin=None):
    r = subprocess.run([MOIN, *args], input=stdin, capture_output=True, text=True)
    assert r.returncode == 0, f"moin {' '.join(args)} failed:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def partition(tmp_path_factory):
    if not os.path.isdir("/usr/share/games/fortunes") or not os.path.exists("/usr/share/dictd/foldoc.index"):
        pytest.skip("fortunes / dict-foldoc are not installed (scripts/setup.sh installs them)")
    d = tmp_path_factory.mktemp("route")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_demo_corpus.py"), "--out", str(d / "corpus"),
                    "--max-per-source", "250", "--max-chars", "1500"], check=True, capture_output=True)
    moin("tokenizer", "train", "--input", str(d / "corpus" / "train.jsonl"), "--output", str(d / "tok"),
         "--vocab-size", "800", "-q")
    moin("partition", "--input", str(d / "corpus" / "train.jsonl"), "--tokenizer", str(d / "tok.model"),
         "--clusters", "6", "--label-field", "meta.pile_set_name", "--output", str(d / "part"),
         "--set", "embedder.dim=32", "-q")
    return d


def test_full_text_routing_reproduces_the_partition(partition):
    d = partition
    train = open(d / "corpus" / "train.jsonl").read()
    lines = train.splitlines()
    out = moin("route", "--partition", str(d / "part"), stdin=train).splitlines()
    assert len(out) == len(lines)
    assigned = {}
    for line in open(d / "part" / "assignments.jsonl"):
        a = json.loads(line)
        if a.get("part", 0) == 0:
            assigned[a["ordinal"]] = a["cluster"]
    routed = [json.loads(o) for o in out]
    same = sum(routed[i]["expert"] == c for i, c in assigned.items())
    assert len(assigned) > 0.95 * len(lines)
    assert same / len(assigned) >= 0.999, f"{same} of {len(assigned)}"
    for r in routed:
        assert 0 <= r["expert"] < 6 and isinstance(r["distance"], float)


def test_prefix_top_k_and_bad_lines(partition):
    d = partition
    queries = "\n".join([json.dumps({"q": {"body": "def main():\n    import os\n    print(os.getcwd())"}}),
                         "this is not json",
                         json.dumps({"other": 1}),
                         json.dumps({"q": {"body": "A hacker is a person who enjoys exploring systems"}})]) + "\n"
    out = [json.loads(l) for l in moin("route", "--partition", str(d / "part"), "--text-field", "q.body",
                                         "--prefix-tokens", "8", "--top-k", "3", stdin=queries).splitlines()]
    assert len(out) == 4
    assert out[1]["expert"] == -1 and "not JSON" in out[1]["error"]
    assert out[2]["expert"] == -1 and "no text" in out[2]["error"]
    for r in (out[0], out[3]):
        assert len(r["experts"]) == 3 and len(set(r["experts"])) == 3
        assert r["experts"][0] == r["expert"]
        assert r["distances"] == sorted(r["distances"])


def test_eval_routing_report(partition):
    d = partition
    text = moin("eval", "routing", "--data", str(d / "corpus" / "valid.jsonl"), "--partition", str(d / "part"),
                "--prefix-tokens", "8", "32", "128", "--json", str(d / "rep" / "routing.json"),
                "--markdown", str(d / "rep" / "routing.md"))
    assert "agreement with full-document routing" in text
    rep = json.load(open(d / "rep" / "routing.json"))
    agree = [x["agreement"] for x in rep["prefix_agreement"]]
    assert [x["prefix_tokens"] for x in rep["prefix_agreement"]] == [8, 32, 128]
    assert all(0.0 <= a <= 1.0 for a in agree)
    assert agree[-1] >= agree[0] - 0.05  # longer prefixes agree more (allowing noise)
    assert 0.0 < rep["label_purity"] <= 1.0
    assert sum(rep["cluster_sizes"]) == rep["docs"]
    assert rep["throughput_queries_per_s"] > 0
