"""`moin run configs/tiny-bpe.json`: the whole pipeline on a base whose tokenizer is a Hugging Face tokenizer.json
(Qwen2-style byte-level BPE: NFC, no BOS, <|endoftext|> as EOS), trained here with `tokenizers`."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MOIN = os.environ.get("MOIN_BIN", os.path.join(ROOT, "build", "bin", "moin"))


def test_tiny_pipeline_on_a_tokenizer_json(tmp_path):
    if not os.path.isdir("/usr/share/games/fortunes") or not os.path.exists("/usr/share/dictd/foldoc.index"):
        pytest.skip("fortunes / dict-foldoc are not installed (scripts/setup.sh installs them)")
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_demo_corpus.py"), "--out", str(corpus),
                    "--max-per-source", "120", "--max-chars", "1200"], check=True, capture_output=True)
    tok = tmp_path / "bpe" / "tokenizer.json"
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train_bpe_tokenizer.py"), "--input",
                    str(corpus / "train.jsonl"), "--output", str(tok), "--kind", "qwen2", "--vocab", "600"],
                   check=True, capture_output=True)
    run = tmp_path / "run"
    r = subprocess.run([MOIN, "run", os.path.join(ROOT, "configs", "tiny-bpe.json"), "--output", str(run),
                        "--set", f"train_data={corpus / 'train.jsonl'}", "--set", f"valid_data={corpus / 'valid.jsonl'}",
                        "--set", f"tokenizer={tok}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "| MoIN (routed) |" in r.stdout
    assert not (run / "tokenizer").exists()  # nothing trained: the given tokenizer.json is used
    manifest = json.load(open(run / "partition" / "manifest.json"))
    assert manifest["tokenizer"]["kind"] == "tokenizer.json"
    assert manifest["tokenizer"]["vocab_size"] == 600
    config = json.load(open(run / "configs" / "base-model" / "config.json"))
    vocab = json.load(open(tok))
    eos = next(t["id"] for t in vocab["added_tokens"] if t["content"] == "<|endoftext|>")
    assert config["bos_token_id"] is None and config["eos_token_id"] == eos
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    rep = json.load(open(run / "report" / "report.json"))
    ppl = {s["name"]: s["ppl"] for s in rep["perplexity"]["systems"]}
    assert all(v > 1.0 for v in ppl.values()) and ppl["oracle expert"] <= ppl["MoIN (routed)"] + 1e-9
