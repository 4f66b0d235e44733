"""moin's "model" embedder against Hugging Face transformers: for each document, LlamaModel's
output_hidden_states[layer] on [BOS] + its SentencePiece ids (cut to max_length), averaged over the
document's tokens (BOS excluded), L2-normalised; centred by the mean pooled vector of the fit sample when
it comes from a partition. Documents of very different lengths share moin's batches, so padding leaking
into a document's vector would show."""
import json
import os
import random
import subprocess

import numpy as np
import pytest
import sentencepiece as spm
import torch
from transformers import LlamaConfig, LlamaForCausalLM

MOIN = os.environ.get("MOIN_BIN", "build/bin/moin")
MAX_LENGTH = 24
WORDS = ("rocket orbit planet moon launch flour oven butter sugar bake goal match team league coach "
         "the a of and to in is was it for on with as by at from").split()


def moin(*args, stdin=None, check=True):
    r = subprocess.run([MOIN, *map(str, args)], input=stdin, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"moin {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def documents(n, seed=0):
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        length = [1, 2, 5, 40, 9, 17, 3, 60][i % 8] + rng.randrange(3)  # some longer than MAX_LENGTH tokens
        docs.append(" ".join(rng.choice(WORDS) for _ in range(length)))
    return docs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("model_embedder")
    docs = documents(24)
    (d / "train.txt").write_text("\n".join(documents(300, seed=1)) + "\n")
    spm.SentencePieceTrainer.train(input=str(d / "train.txt"), model_prefix=str(d / "tok"), vocab_size=90,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=3,
                                   minloglevel=2)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.15,
                      bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    model.save_pretrained(d / "model")
    return d, docs, model, spm.SentencePieceProcessor(model_file=str(d / "tok.model"))


def reference(model, sp, docs, layer):
    rows = []
    for doc in docs:
        ids = [sp.bos_id()] + sp.encode(doc)[: MAX_LENGTH - 1]
        with torch.no_grad():
            hs = model.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        h = hs[layer][0].double()
        rows.append((h[1:] if len(ids) > 1 else h).mean(0))
    return torch.stack(rows)


def normalise(x):
    return x / x.norm(dim=1, keepdim=True)


def parse(stdout):
    return torch.tensor([[float(v) for v in line.split()] for line in stdout.strip().split("\n")], dtype=torch.float64)


@pytest.mark.parametrize("layer", [0, 2, -1])
def test_raw_embeddings_equal_transformers(setup, layer):
    d, docs, model, sp = setup
    lengths = [len(sp.encode(x)) + 1 for x in docs]
    assert min(lengths) <= 3 and max(lengths) > MAX_LENGTH  # short and cut documents share batches
    r = moin("embed", "--embedder", "model", "--model", d / "model", "--tokenizer", d / "tok.model",
             "--layer", layer, "--max-length", MAX_LENGTH, "--batch-size", 5, "--device", "cpu",
             stdin="\n".join(docs) + "\n")
    ours = parse(r.stdout)
    ref = normalise(reference(model, sp, docs, layer))
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err < 1e-4, f"layer {layer}: max abs difference {err}"
    # The layers really differ (the comparison above could not pass with the wrong one).
    other = normalise(reference(model, sp, docs, 1))
    assert (ours - other).abs().max().item() > 1e-2


def test_partition_embedder_is_centred_by_the_sample_mean(setup, tmp_path):
    d, docs, model, sp = setup
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": x}) + "\n" for x in docs))
    part = tmp_path / "part"
    moin("partition", "--input", corpus, "--tokenizer", d / "tok.model", "--embedder", "model",
         "--model", d / "model", "--clusters", 2, "--output", part,
         "--set", "embedder.layer=2", "--set", f"embedder.max_length={MAX_LENGTH}", "--set", "embedder.batch_size=4",
         "--set", "embedder.device=cpu")
    state = json.loads((part / "embedder" / "embedder.json").read_text())
    assert state["type"] == "model" and state["center"] and state["layer"] == 2
    assert state["tokenizer"] == str((d / "tok.model").resolve())
    raw = reference(model, sp, docs, 2)
    mean = np.load(part / "embedder" / "model_mean.npy")
    assert np.abs(mean - raw.mean(0).numpy()).max() < 1e-4
    r = moin("embed", "--from", part / "embedder", stdin="\n".join(docs) + "\n")
    ref = normalise(raw - raw.mean(0))
    err = (parse(r.stdout) - ref).abs().max().item()
    assert err < 1e-4, err


def test_changed_model_is_refused(setup, tmp_path):
    d, docs, model, sp = setup
    import shutil
    shutil.copytree(d / "model", tmp_path / "model")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": x}) + "\n" for x in docs))
    part = tmp_path / "part"
    moin("partition", "--input", corpus, "--tokenizer", d / "tok.model", "--embedder", "model",
         "--model", tmp_path / "model", "--clusters", 2, "--output", part, "--set", "embedder.device=cpu")
    other = LlamaForCausalLM(model.config).eval()
    other.save_pretrained(tmp_path / "model")
    r = moin("embed", "--from", part / "embedder", stdin="a b c\n", check=False)
    assert r.returncode == 2 and "changed" in r.stderr, r.stderr


def test_run_without_base_is_refused(setup, tmp_path):
    # `moin run` pre-trains its base on the partition, so it cannot embed the partition with it.
    d, docs, model, sp = setup
    root = os.environ.get("MOIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": x}) + "\n" for x in docs))
    r = moin("run", os.path.join(root, "configs", "tiny.json"), "--output", tmp_path / "run",
             "--set", f"train_data={corpus}", "--set", f"valid_data={corpus}", "--set", f"tokenizer={d / 'tok.model'}",
             "--set", "partition.embedder.type=model", check=False)
    assert r.returncode == 2 and "needs a base model" in r.stderr, r.stderr[-2000:]
