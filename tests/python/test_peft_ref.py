"""moin's LoRA adapters against Hugging Face peft, in both directions: an adapter moin writes loads with
PeftModel.from_pretrained on the matching transformers LlamaForCausalLM and gives the same logits as moin
with it attached; an adapter peft writes loads in moin with the same logits; merging agrees with peft's
merge_and_unload."""
import json
import os
import subprocess
import tempfile

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

MOIN = os.environ.get("MOIN_BIN", "build/bin/moin")
TOKENS = [1, 7, 99, 3, 127, 64, 0, 12, 12, 5, 77]


def moin(*args, check=True):
    r = subprocess.run([MOIN, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"moin {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def moin_logits(model_dir, adapter=None):
    out = os.path.join(tempfile.mkdtemp(), "logits.safetensors")
    args = ["logits", "--model", model_dir, "--tokens", " ".join(map(str, TOKENS)), "--output", out]
    if adapter is not None:
        args += ["--adapter", adapter]
    moin(*args)
    return load_file(out)["logits"]


def random_hf_model(seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.15)
    return LlamaForCausalLM(cfg).eval()


def hf_logits(model):
    with torch.no_grad():
        return model(torch.tensor([TOKENS])).logits.float()


@pytest.mark.parametrize("variant", [
    dict(args=["--rank", 4, "--alpha", 8], rslora=False, targets=None),
    dict(args=["--rank", 8, "--alpha", 4, "--set", "use_rslora=true", "--targets", "q_proj", "v_proj", "down_proj"],
         rslora=True, targets=["down_proj", "q_proj", "v_proj"]),
])
def test_moin_adapter_loads_in_peft(tmp_path, variant):
    model = random_hf_model(seed=3)
    base, ad = tmp_path / "base", tmp_path / "adapter"
    model.save_pretrained(base)
    moin("lora", "init", "--model", base, "--output", ad, "--seed", 5, "--random-b", *variant["args"])

    cfg = json.loads((ad / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["bias"] == "none"
    assert cfg["use_rslora"] == variant["rslora"]
    if variant["targets"]:
        assert sorted(cfg["target_modules"]) == variant["targets"]
    tensors = load_file(ad / "adapter_model.safetensors")
    r = cfg["r"]
    assert tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"].shape == (r, 64)
    assert tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"].shape == (32, r)

    base_ref = hf_logits(model)
    peft_model = PeftModel.from_pretrained(model, str(ad)).eval()
    ref = hf_logits(peft_model)
    assert (ref - base_ref).abs().max() > 1e-2, "the adapter should change the logits (B is random)"
    ours = moin_logits(str(base), str(ad))
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


def peft_made_adapter(tmp_path, seed=4):
    model = random_hf_model(seed=seed)
    base, ad = tmp_path / "base", tmp_path / "peft-adapter"
    model.save_pretrained(base)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "o_proj", "up_proj"],
                     use_rslora=True, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(ad)
    return peft_model.eval(), base, ad


def test_peft_adapter_loads_in_moin(tmp_path):
    peft_model, base, ad = peft_made_adapter(tmp_path)
    ref = hf_logits(peft_model)
    ours = moin_logits(str(base), str(ad))
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


def test_merge_matches_peft_merge_and_unload(tmp_path):
    peft_model, base, ad = peft_made_adapter(tmp_path, seed=6)
    merged = tmp_path / "merged"
    moin("lora", "merge", "--model", base, "--adapter", ad, "--output", merged)
    ref = hf_logits(peft_model.merge_and_unload())
    ours_hf = hf_logits(LlamaForCausalLM.from_pretrained(merged).eval())  # our merged model, run by transformers
    assert torch.allclose(ours_hf, ref, atol=1e-4, rtol=0), (ours_hf - ref).abs().max()
    assert torch.allclose(moin_logits(str(merged)), ref, atol=1e-4, rtol=0)


def test_adapter_for_another_model_is_rejected(tmp_path):
    _, _, ad = peft_made_adapter(tmp_path)
    other = random_hf_model(seed=1)
    other.config.num_hidden_layers = 3
    bigger = LlamaForCausalLM(other.config)
    bigger.save_pretrained(tmp_path / "bigger")
    r = moin("logits", "--model", tmp_path / "bigger", "--adapter", ad, "--tokens", "1 2 3",
             "--output", tmp_path / "x.safetensors", check=False)
    assert r.returncode == 2, r.stderr
    assert str(ad) in r.stderr and "layers.2" in r.stderr, r.stderr


@pytest.mark.parametrize("autocast", [False, True])
def test_adapter_gradients_match_peft(tmp_path, autocast):
    """One training step's gradients of every A and B (`moin logits --set adapter_grads=true`) equal peft's,
    in float32 and under bf16 autocast (what training does on a GPU; here on the CPU)."""
    peft_model, base, ad = peft_made_adapter(tmp_path, seed=7)
    ids = torch.tensor([TOKENS])

    def peft_grads(dtype, autocast):
        model = PeftModel.from_pretrained(random_hf_model(seed=7), str(ad), is_trainable=True).to(dtype)
        model.train()
        for m in model.modules():  # the adapter was saved with dropout 0.05: compare without it
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(ids).logits
        loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
        loss.backward()
        return {n.replace(".default", ""): p.grad.double() for n, p in model.named_parameters() if p.requires_grad}, loss

    ref, loss = peft_grads(torch.float32, autocast)
    # Two bf16 computations round differently: under autocast both are judged against float64.
    exact, _ = peft_grads(torch.float64, False) if autocast else (ref, None)

    out = tmp_path / "grads.safetensors"
    args = ["logits", "--model", base, "--adapter", ad, "--tokens", " ".join(map(str, TOKENS)), "--output", out,
            "--set", "adapter_grads=true"]
    if autocast:
        args += ["--set", "autocast_bf16=true"]
    moin(*args)
    ours = load_file(out)
    assert abs(float(ours["loss"][0]) - float(loss)) < (2e-2 if autocast else 1e-5)
    assert len(ref) == 2 * 4 * 2  # A and B of 4 projections in 2 layers
    for name, g in exact.items():
        err = float((ours["grad." + name].double() - g).norm() / g.norm())
        if autocast:  # no worse than peft's own bf16 error (and far from a wrong gradient's ~1)
            peft_err = float((ref[name] - g).norm() / g.norm())
            assert err <= max(2 * peft_err, 1e-2), (name, err, peft_err)
        else:
            assert err < 1e-5, (name, err)
    # Without an adapter there is nothing to differentiate: a user error, not a crash.
    r = moin("logits", "--model", base, "--tokens", "1 2 3", "--output", out, "--set", "adapter_grads=true",
             check=False)
    assert r.returncode == 2 and "adapter" in r.stderr, r.stderr
