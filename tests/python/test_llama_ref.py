"""moin's Llama against Hugging Face transformers, in both directions, and llama2.c import against a
llama2.c-style forward pass written here (interleaved RoPE, as run.c computes it)."""
import json
import os
import struct
import subprocess
import tempfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

MOIN = os.environ.get("MOIN_BIN", "build/bin/moin")
TOKENS = [1, 7, 99, 3, 127, 64, 0, 12, 12, 5, 77]


def moin(*args, check=True):
    r = subprocess.run([MOIN, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"moin {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def moin_logits(model_dir, tokens=TOKENS, hidden_layer=None, dtype="float32"):
    out = os.path.join(tempfile.mkdtemp(), "logits.safetensors")
    args = ["logits", "--model", model_dir, "--tokens", " ".join(map(str, tokens)), "--output", out, "--dtype", dtype]
    if hidden_layer is not None:
        args += ["--hidden-layer", hidden_layer]
    moin(*args)
    return load_file(out)


def random_hf_model(tied, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5,
               rope_theta=5000.0, tie_word_embeddings=tied, initializer_range=0.15)
    cfg.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model


def hf_forward(model, tokens=TOKENS):
    with torch.no_grad():
        out = model(torch.tensor([tokens]), output_hidden_states=True)
    return out.logits.float(), [h.float() for h in out.hidden_states]


@pytest.mark.parametrize("tied", [False, True])
def test_hf_checkpoint_loads_in_moin_with_same_logits(tmp_path, tied):
    model = random_hf_model(tied)
    model.save_pretrained(tmp_path)
    ref, hidden = hf_forward(model)
    ours = moin_logits(str(tmp_path), hidden_layer=1)
    assert ours["logits"].shape == ref.shape
    assert torch.allclose(ours["logits"], ref, atol=1e-4, rtol=0), (ours["logits"] - ref).abs().max()
    assert torch.allclose(ours["hidden_states"], hidden[1], atol=1e-4, rtol=0)
    last = moin_logits(str(tmp_path), hidden_layer=-1)["hidden_states"]
    assert torch.allclose(last, hidden[-1], atol=1e-4, rtol=0)


def test_sharded_hf_checkpoint_loads(tmp_path):
    model = random_hf_model(False, seed=1)
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ref, _ = hf_forward(model)
    assert torch.allclose(moin_logits(str(tmp_path))["logits"], ref, atol=1e-4, rtol=0)


def test_bf16_checkpoint_in_bf16(tmp_path):
    model = random_hf_model(False, seed=2).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    ref, _ = hf_forward(model)
    ours = moin_logits(str(tmp_path), dtype="bfloat16")["logits"]
    # Both in bfloat16 with different kernel orders: close, not equal.
    assert (ours - ref).abs().max() < 0.05 * ref.abs().max()


def test_moin_init_model_loads_in_transformers(tmp_path):
    out = tmp_path / "m"
    moin("init-model", "--output", out, "--seed", 3,
         "--set", "model.vocab_size=128", "--set", "model.hidden_size=64", "--set", "model.intermediate_size=80",
         "--set", "model.num_hidden_layers=2", "--set", "model.num_attention_heads=8",
         "--set", "model.num_key_value_heads=2", "--set", "model.tie_word_embeddings=false",
         "--set", "model.rope_theta=20000", "--set", "init_std=0.2")
    model = LlamaForCausalLM.from_pretrained(out).eval()
    assert model.config.rope_parameters["rope_theta"] == 20000
    assert model.config.num_key_value_heads == 2
    assert not model.config.tie_word_embeddings
    ref, _ = hf_forward(model)
    ours = moin_logits(str(out))["logits"]
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()
    assert ref.std() > 0.1  # a model whose logits carry signal, so the comparison means something


def test_missing_and_misshapen_tensors_are_user_errors(tmp_path):
    model = random_hf_model(False, seed=4)
    model.save_pretrained(tmp_path)
    from safetensors.torch import save_file
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    r = moin("logits", "--model", tmp_path, "--tokens", "1 2", "--output", tmp_path / "x.safetensors", check=False)
    assert r.returncode == 2 and "model.layers.1.mlp.up_proj.weight" in r.stderr, r.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = moin("logits", "--model", tmp_path, "--tokens", "1 2", "--output", tmp_path / "x.safetensors", check=False)
    assert r.returncode == 2 and "shape" in r.stderr, r.stderr


# ---- llama2.c import ----

def llama2c_forward(w, p, tokens):
    """run.c's forward(), token by token: RoPE rotates interleaved pairs (2i, 2i+1)."""
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = p
    hd = dim // n_heads
    kv_mul = n_heads // n_kv

    def rmsnorm(x, g):
        return x / torch.sqrt((x * x).mean() + 1e-5) * g

    def rope(v, pos):
        v = v.clone()
        for i in range(0, v.numel(), 2):
            freq = 1.0 / 10000.0 ** ((i % hd) / hd)
            c, s = np.cos(pos * freq), np.sin(pos * freq)
            v0, v1 = v[i].item(), v[i + 1].item()
            v[i], v[i + 1] = v0 * c - v1 * s, v0 * s + v1 * c
        return v

    kc = [[] for _ in range(n_layers)]
    vc = [[] for _ in range(n_layers)]
    out = []
    for pos, tok in enumerate(tokens):
        x = w["emb"][tok].double()
        for l in range(n_layers):
            xb = rmsnorm(x, w["rms_att"][l])
            q = rope(w["wq"][l] @ xb, pos)
            k = rope(w["wk"][l] @ xb, pos)
            v = w["wv"][l] @ xb
            kc[l].append(k)
            vc[l].append(v)
            att = torch.zeros(dim, dtype=torch.float64)
            for h in range(n_heads):
                kh = h // kv_mul
                qh = q[h * hd:(h + 1) * hd]
                scores = torch.stack([qh @ kc[l][t][kh * hd:(kh + 1) * hd] for t in range(pos + 1)]) / np.sqrt(hd)
                a = torch.softmax(scores, 0)
                att[h * hd:(h + 1) * hd] = sum(a[t] * vc[l][t][kh * hd:(kh + 1) * hd] for t in range(pos + 1))
            x = x + w["wo"][l] @ att
            xb = rmsnorm(x, w["rms_ffn"][l])
            g = w["w1"][l] @ xb
            x = x + w["w2"][l] @ (g * torch.sigmoid(g) * (w["w3"][l] @ xb))
        x = rmsnorm(x, w["rms_final"])
        out.append(w["wcls"] @ x)
    return torch.stack(out)


def synthetic_llama2c(path, version, shared, seed=0):
    g = torch.Generator().manual_seed(seed)
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = 48, 72, 2, 6, 2, 100, 64
    kv_dim = dim // n_heads * n_kv

    def r(*shape, scale=0.2):
        return (torch.randn(*shape, generator=g) * scale).double()

    w = dict(emb=r(vocab, dim, scale=1.0), rms_att=[1 + r(dim) for _ in range(n_layers)],
             wq=[r(dim, dim) for _ in range(n_layers)], wk=[r(kv_dim, dim) for _ in range(n_layers)],
             wv=[r(kv_dim, dim) for _ in range(n_layers)], wo=[r(dim, dim) for _ in range(n_layers)],
             rms_ffn=[1 + r(dim) for _ in range(n_layers)], w1=[r(hidden, dim) for _ in range(n_layers)],
             w2=[r(dim, hidden) for _ in range(n_layers)], w3=[r(hidden, dim) for _ in range(n_layers)],
             rms_final=1 + r(dim))
    w["wcls"] = w["emb"] if shared else r(vocab, dim)
    p = (dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len)

    def f32(ts):
        return b"".join(t.float().numpy().tobytes() for t in (ts if isinstance(ts, list) else [ts]))

    with open(path, "wb") as f:
        if version == 0:
            f.write(struct.pack("7i", dim, hidden, n_layers, n_heads, n_kv, vocab if shared else -vocab, seq_len))
            for key in ["emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final"]:
                f.write(f32(w[key]))
            f.write(b"\0" * (4 * seq_len * (dim // n_heads)))  # freq_cis_real + freq_cis_imag
        else:
            f.write(struct.pack("I", 0x616B3432) + struct.pack("i", 1))
            f.write(struct.pack("7i", *p) + struct.pack("B", int(shared)))
            f.write(b"\0" * (256 - f.tell()))
            for key in ["rms_att", "rms_ffn", "rms_final", "emb", "wq", "wk", "wv", "wo", "w1", "w2", "w3"]:
                f.write(f32(w[key]))
        if not shared:
            f.write(f32(w["wcls"]))
    w = {k: ([t.float().double() for t in v] if isinstance(v, list) else v.float().double()) for k, v in w.items()}
    return w, p


@pytest.mark.parametrize("version,shared", [(0, True), (0, False), (1, True), (1, False)])
def test_llama2c_import_matches_llama2c_forward_in_transformers(tmp_path, version, shared):
    w, p = synthetic_llama2c(tmp_path / "m.bin", version, shared)
    moin("convert", "llama2c", "--input", tmp_path / "m.bin", "--output", tmp_path / "hf")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert model.config.tie_word_embeddings == shared
    tokens = [1, 5, 99, 42, 0, 17]
    ref = llama2c_forward(w, p, tokens)
    hf, _ = hf_forward(model, tokens)
    assert torch.allclose(hf[0].double(), ref, atol=1e-4, rtol=0), (hf[0].double() - ref).abs().max()
    ours = moin_logits(str(tmp_path / "hf"), tokens)["logits"]
    assert torch.allclose(ours[0].double(), ref, atol=1e-4, rtol=0)


def test_truncated_llama2c_is_a_user_error(tmp_path):
    synthetic_llama2c(tmp_path / "m.bin", 0, True)
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[:-10])
    r = moin("convert", "llama2c", "--input", tmp_path / "t.bin", "--output", tmp_path / "hf", check=False)
    assert r.returncode == 2 and "t.bin" in r.stderr, r.stderr
