"""`moin run configs/tiny.json`: every stage end to end on a small demo corpus (the comparison methods too),
the report, and resumption
(a second run skips every finished stage; a removed marker reruns only that stage)."""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MOIN = os.environ.get("MOIN_BIN", os.path.join(ROOT, "build", "bin", "moin"))


def test_tiny_pipeline_runs_and_resumes(tmp_path):
    if not os.path.isdir("/usr/share/games/fortunes") or not os.path.exists("/usr/share/dictd/foldoc.index"):
        pytest.skip("fortunes / dict-foldoc are not installed (scripts/setup.sh installs them)")
    helptext = subprocess.run([MOIN, "--help"], capture_output=True, text=True).stdout
    if " train " not in helptext or " launch " not in helptext:
        pytest.skip("this build has no `moin train` / `moin launch` (the trainer stage is not merged)")
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_demo_corpus.py"), "--out", str(corpus),
                    "--max-per-source", "120", "--max-chars", "1200"], check=True, capture_output=True)
    run = tmp_path / "run"
    args = [MOIN, "run", os.path.join(ROOT, "configs", "tiny.json"), "--output", str(run),
            "--set", f"train_data={corpus / 'train.jsonl'}", "--set", f"valid_data={corpus / 'valid.jsonl'}"]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "| MoIN (routed) |" in r.stdout
    # Stage logs go to stderr (and RUN/logs/), stdout carries the report only.
    stage_lines = [l for l in open(run / "logs" / "partition.log").read().splitlines() if l.strip()]
    assert stage_lines and stage_lines[-1] in r.stderr, r.stderr[-2000:]
    assert not re.search(r"^\[\d\d:\d\d:\d\d [A-Z]\]", r.stdout, re.M), r.stdout[:2000]  # no log line
    for stage in ("tokenizer", "partition", "base", "experts", "dense", "cpt", "mixture", "peer", "eval_ppl",
                  "eval_routing"):
        assert (run / "stages" / f"{stage}.done").exists(), stage
    rep = json.load(open(run / "report" / "report.json"))
    # The report names the corpus it was computed on: the demo's corpus depends on the host's packages.
    import hashlib
    for split in ("train", "valid"):
        f = corpus / f"{split}.jsonl"
        assert rep["corpus"][split]["sha256"] == hashlib.sha256(open(f, "rb").read()).hexdigest()
        assert rep["corpus"][split]["bytes"] == os.path.getsize(f)
    md = open(run / "report" / "report.md").read()
    assert rep["corpus"]["train"]["sha256"] in md and "perplexity_change.png" in md
    keys = [s["key"] for s in rep["perplexity"]["systems"]]
    assert keys == ["base", "cpt", "dense", "moin", "random", "oracle", "cbtm", "arrow", "mixture", "peer"]
    names = [s["name"] for s in rep["perplexity"]["systems"]]
    assert names[:6] == ["base", "continued pre-training", "dense LoRA", "MoIN (routed)", "random expert", "oracle expert"]
    ppl = {s["name"]: s["ppl"] for s in rep["perplexity"]["systems"]}
    assert ppl["oracle expert"] <= ppl["MoIN (routed)"] + 1e-9
    assert all(v > 1.0 for v in ppl.values())
    for k in range(3):
        assert (run / "experts" / str(k) / "adapter_config.json").exists()
    # The baselines name no budget in tiny.json: each trains on as many tokens as all experts together.
    expert_tokens = sum(json.load(open(run / "experts" / str(k) / "summary.json"))["tokens_seen"] for k in range(3))
    assert expert_tokens > 0
    for baseline in ("dense", "cpt", "mixture", "peer"):
        assert json.load(open(run / baseline / "summary.json"))["tokens_seen"] == expert_tokens, baseline
    # The mixture mixes the three experts; PEER has at most their parameters.
    assert json.load(open(run / "mixture" / "mixture.json"))["clusters"] == [0, 1, 2]
    expert_params = sum(json.load(open(run / "experts" / str(k) / "summary.json"))["trainable_parameters"]
                        for k in range(3))
    peer_params = json.load(open(run / "peer" / "summary.json"))["trainable_parameters"]
    assert expert_params / 2 < peer_params <= expert_params

    # Second run: nothing is redone.
    r2 = subprocess.run(args, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr[-4000:]
    rep2 = json.load(open(run / "report" / "report.json"))
    assert all(s.get("skipped") for s in rep2["stages"])
    assert rep2["perplexity"] == rep["perplexity"]

    # A removed marker reruns that stage only (and gives the same figures: evaluation is deterministic).
    os.remove(run / "stages" / "eval_ppl.done")
    r3 = subprocess.run(args, capture_output=True, text=True)
    assert r3.returncode == 0, r3.stderr[-4000:]
    rep3 = json.load(open(run / "report" / "report.json"))
    ran = [s["stage"] for s in rep3["stages"] if not s.get("skipped")]
    assert ran == ["eval_ppl"]
    for a, b in zip(rep3["perplexity"]["systems"], rep["perplexity"]["systems"]):
        assert abs(a["ppl"] - b["ppl"]) < 1e-6 * b["ppl"]
