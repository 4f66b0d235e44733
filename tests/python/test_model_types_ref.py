"""The Llama family's variants against Hugging Face transformers, whichever side writes the checkpoint:
Llama with rope scaling (llama3, linear), Qwen2 (q/k/v biases), Mistral (a sliding window shorter than the
sequence, head_dim != hidden / heads), Qwen3 (q/k RMSNorm); a LoRA expert trained by moin on Qwen2 loads
in PEFT with the same logits; unsupported configs are refused in one line (exit 2)."""
import json
import os
import subprocess
import tempfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config)

MOIN = os.environ.get("MOIN_BIN", "build/bin/moin")
# 40 tokens: longer than the sliding window (7) and than llama3's original context (32), so both act.
TOKENS = [int(t) for t in np.random.default_rng(0).integers(0, 128, 40)]
SIZES = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5, initializer_range=0.15)

# name -> (config class, keys beyond SIZES)
VARIANTS = {
    "llama-rope-llama3": (LlamaConfig, dict(tie_word_embeddings=True, rope_parameters=dict(
        rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=32))),  # kept, blended and divided bands
    "llama-rope-linear-bias": (LlamaConfig, dict(tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
                                                 rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=3.0))),
    "qwen2": (Qwen2Config, dict(tie_word_embeddings=False, rope_parameters=dict(rope_type="default",
                                                                               rope_theta=1000000.0))),
    "qwen2-tied": (Qwen2Config, dict(tie_word_embeddings=True)),
    "mistral-window": (MistralConfig, dict(tie_word_embeddings=False, sliding_window=7, head_dim=24)),
    "qwen3": (Qwen3Config, dict(tie_word_embeddings=True, head_dim=24, attention_bias=True)),
}


def moin(*args, check=True):
    r = subprocess.run([MOIN, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"moin {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def moin_logits(model_dir, adapter=None, tokens=TOKENS):
    out = os.path.join(tempfile.mkdtemp(), "logits.safetensors")
    args = ["logits", "--model", model_dir, "--tokens", " ".join(map(str, tokens)), "--output", out]
    if adapter is not None:
        args += ["--adapter", adapter]
    moin(*args)
    return load_file(out)["logits"]


def random_hf_model(variant, seed=0):
    cls, extra = VARIANTS[variant]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cls(**SIZES, **extra)).eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so a mix-up shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))
    return model


def hf_logits(model, tokens=TOKENS):
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits.float()


def close(ours, ref, what):
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = (ours - ref).abs().max().item()
    print(f"{what}: max |logit diff| {diff:.3g}")
    assert diff < 1e-4, f"{what}: {diff}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_checkpoint_loads_in_moin(tmp_path, variant):
    model = random_hf_model(variant)
    model.save_pretrained(tmp_path)
    ref = hf_logits(model)
    close(moin_logits(str(tmp_path)), ref, f"{variant} transformers -> moin")
    if variant == "mistral-window":
        # The window acts: transformers without it gives other logits from position 7 on, not before.
        plain = hf_logits(AutoModelForCausalLM.from_pretrained(tmp_path, sliding_window=None).eval())
        assert (plain[0, :7] - ref[0, :7]).abs().max() < 1e-5
        assert (plain[0, 7:] - ref[0, 7:]).abs().max() > 1e-3
    if variant == "llama-rope-llama3":
        config = json.loads((tmp_path / "config.json").read_text())
        config["rope_parameters"] = dict(rope_type="default", rope_theta=10000.0)
        (tmp_path / "config.json").write_text(json.dumps(config))
        assert (moin_logits(str(tmp_path)) - ref).abs().max() > 1e-3, "the rope scaling should matter"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_moin_init_model_loads_in_transformers(tmp_path, variant):
    cls, extra = VARIANTS[variant]
    cfg = cls(**SIZES, **extra)
    # init-model reads a Hugging Face config.json for the architecture, as for a real base.
    cfg.save_pretrained(tmp_path / "arch")
    out = tmp_path / "m"
    moin("init-model", "--output", out, "--seed", 3, "--model-config", tmp_path / "arch" / "config.json",
         "--set", "init_std=0.2", "--max-shard-size", "30KB")
    assert (out / "model.safetensors.index.json").exists()  # sharded as transformers does
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(model).__name__ == type(AutoModelForCausalLM.from_config(cfg)).__name__
    for key in ["sliding_window", "head_dim", "tie_word_embeddings", "attention_bias", "rope_parameters"]:
        if getattr(cfg, key, None) is not None:
            assert getattr(model.config, key) == getattr(cfg, key), key
    ref = hf_logits(model)
    assert ref.std() > 0.1  # logits that carry signal, so the comparison means something
    close(moin_logits(str(out)), ref, f"{variant} moin -> transformers")


def test_init_model_makes_a_qwen2_base_from_flags(tmp_path):
    out = tmp_path / "m"
    moin("init-model", "--output", out, "--seed", 1, "--set", "model.model_type=qwen2", "--set", "model.vocab_size=128",
         "--set", "model.hidden_size=32", "--set", "model.intermediate_size=48", "--set", "model.num_hidden_layers=1",
         "--set", "model.num_attention_heads=2", "--set", "model.num_key_value_heads=1", "--set", "init_std=0.3")
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    close(moin_logits(str(out)), hf_logits(model), "qwen2 from flags")


def write_partition(root, vocab, docs):
    """A one-cluster partition as `moin partition` writes it (token shards: .bin uint16, .idx, .json)."""
    for split, rows in [("train", docs), ("valid", docs[:4])]:
        d = root / "clusters" / "0"
        d.mkdir(parents=True, exist_ok=True)
        flat = np.concatenate(rows).astype("<u2")
        offsets = np.cumsum([0] + [len(r) for r in rows]).astype("<u8")
        (d / f"{split}.bin").write_bytes(flat.tobytes())
        (d / f"{split}.idx").write_bytes(offsets.tobytes())
        (d / f"{split}.json").write_text(json.dumps(dict(
            format="moin-token-shard", version=1, dtype="uint16", vocab_size=vocab, n_docs=len(rows),
            n_tokens=int(flat.size), tokenizer="", tokenizer_sha256="")))
    (root / "manifest.json").write_text(json.dumps({"format": "moin-partition", "schema_version": 1, "k": 1}))


def test_expert_trained_by_moin_on_qwen2_loads_in_peft(tmp_path):
    from peft import PeftModel
    model = random_hf_model("qwen2", seed=5)
    base = tmp_path / "base"
    model.save_pretrained(base)
    rng = np.random.default_rng(1)
    write_partition(tmp_path / "part", 128, [rng.integers(3, 128, 40) for _ in range(16)])
    train = dict(mode="expert", partition=str(tmp_path / "part"), cluster=0, base=str(base),
                 output=str(tmp_path / "expert"), lora=dict(r=4, alpha=8), seq_len=16, micro_batch=2, max_steps=6,
                 lr=0.05, warmup_steps=1, eval_every=0, eval_tokens=32, checkpoint_every=0, log_every=1,
                 device="cpu", seed=2)
    (tmp_path / "train.json").write_text(json.dumps(train))
    moin("train", "--config", tmp_path / "train.json")
    ad = tmp_path / "expert"
    cfg = json.loads((ad / "adapter_config.json").read_text())
    assert cfg["bias"] == "none"
    tensors = load_file(ad / "adapter_model.safetensors")
    assert not any("bias" in k for k in tensors), "biases stay in the base, untouched"
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].abs().max() > 0, "trained"

    base_ref = hf_logits(model)
    peft_model = PeftModel.from_pretrained(model, str(ad)).eval()
    ref = hf_logits(peft_model)
    assert (ref - base_ref).abs().max() > 1e-3, "the trained adapter should change the logits"
    close(moin_logits(str(base), str(ad)), ref, "qwen2 expert moin -> peft")

    # moin writes the merged model (biases included) and transformers reads it: peft's merge, same logits.
    moin("lora", "merge", "--model", base, "--adapter", ad, "--output", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    close(hf_logits(merged), ref, "qwen2 merged by moin -> transformers")


@pytest.mark.parametrize("change,needle", [
    (dict(model_type="gemma"), '"gemma" is not supported (llama, mistral, qwen2, qwen3)'),
    (dict(rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0)), '"yarn"'),
    (dict(rope_scaling=dict(type="dynamic", factor=2.0)), '"dynamic"'),
    (dict(quantization_config=dict(quant_method="gptq")), '"quantization_config"'),
    (dict(use_sliding_window=True), "use_sliding_window"),
])
def test_unsupported_configs_are_refused_in_one_line(tmp_path, change, needle):
    model = random_hf_model("qwen2", seed=6)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = moin("logits", "--model", tmp_path, "--tokens", "1 2", "--output", tmp_path / "x.safetensors", check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("moin: error:") and needle in lines[0], r.stderr


def test_eval_ppl_refuses_a_tokenizer_larger_than_the_model_up_front(tmp_path):
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta eps zeta eta theta iota kappa lambda mu".split()
    texts = [" ".join(rng.choice(words, 30)) for _ in range(200)]
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    moin("tokenizer", "train", "--input", tmp_path / "c.txt", "--output", tmp_path / "tok", "--vocab-size", 300, "-q")
    moin("partition", "--input", tmp_path / "c.jsonl", "--text-field", "text", "--tokenizer", tmp_path / "tok.model",
         "--clusters", 2, "--embedder", "tfidf", "--output", tmp_path / "part", "--set", "embedder.dim=8", "-q")
    moin("init-model", "--output", tmp_path / "m", "--set", "model.vocab_size=280", "--set", "model.hidden_size=32",
         "--set", "model.intermediate_size=32", "--set", "model.num_hidden_layers=1", "--set",
         "model.num_attention_heads=2", "--set", "model.num_key_value_heads=1", "-q")
    (tmp_path / "experts").mkdir()
    r = moin("eval", "ppl", "--data", tmp_path / "c.jsonl", "--base", tmp_path / "m", "--partition", tmp_path / "part",
             "--experts", tmp_path / "experts", check=False)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "300" in lines[0] and "280" in lines[0] and lines[0].startswith("moin: error:"), r.stderr
