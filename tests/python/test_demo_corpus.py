"""The demo corpus script: Pile layout, labelled sources, deterministic split, no overlap."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "make_demo_corpus.py")


def build(out):
    subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--max-per-source", "60", "--max-chars", "1500"],
                   check=True, capture_output=True)
    return {s: open(os.path.join(out, f"{s}.jsonl"), "rb").read() for s in ("train", "valid")}


def test_layout_labels_and_determinism(tmp_path):
    if not os.path.isdir("/usr/share/games/fortunes") and not os.path.exists("/usr/share/dictd/foldoc.index"):
        pytest.skip("fortunes / dict-foldoc are not installed (scripts/setup.sh installs them)")
    a = build(tmp_path / "a")
    b = build(tmp_path / "b")
    assert a == b, "the corpus must be byte-identical across runs"
    docs = {s: [json.loads(l) for l in a[s].decode().splitlines()] for s in a}
    assert len(docs["train"]) > 100 and len(docs["valid"]) > 0
    sources = {d["meta"]["pile_set_name"] for d in docs["train"]}
    assert len(sources) >= 3, sources
    for d in docs["train"] + docs["valid"]:
        assert isinstance(d["text"], str) and d["text"].strip()
        assert len(d["text"]) <= 1500
    # Caps are per source (60), and no document is in both splits.
    for s in sources:
        n = sum(d["meta"]["pile_set_name"] == s for d in docs["train"] + docs["valid"])
        assert n <= 60
    stats = json.load(open(tmp_path / "a" / "stats.json"))
    assert stats["train"] == len(docs["train"]) and stats["valid"] == len(docs["valid"])
