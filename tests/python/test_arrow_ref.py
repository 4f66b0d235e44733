"""Arrow routing (moin's model/arrow.h, `moin logits --arrow`) against peft's Arrow (peft.tuners.lora.arrow,
create_arrow_model): the same library of LoRA adapters on the same base gives equal logits.

peft finds each prototype with 15 steps of power iteration from a random start; moin takes the exact top
right singular vector. The reference runs peft's own power iteration to convergence (2,000 steps), so
both compute the same vector and everything after it is peft's code."""
import os

import pytest
import torch
from peft import ArrowConfig, LoraConfig, get_peft_model
from peft.tuners.lora.arrow import ArrowLoraLinearLayer, create_arrow_model

from test_peft_ref import TOKENS, hf_logits, moin, random_hf_model


def make_library(tmp_path, n, seed=11):
    base = tmp_path / "base"
    random_hf_model(seed=seed).save_pretrained(base)
    dirs = []
    for i in range(n):
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                         task_type="CAUSAL_LM")
        model = get_peft_model(random_hf_model(seed=seed), cfg)
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.3)
        d = tmp_path / f"expert{i}"
        model.save_pretrained(d)
        dirs.append(str(d))
    return base, dirs


@pytest.mark.parametrize("top_k,temperature", [(2, 1.0), (3, 0.25), (5, 4.0)])
def test_arrow_logits_match_peft(tmp_path, monkeypatch, top_k, temperature):
    base, dirs = make_library(tmp_path, 5)
    power = ArrowLoraLinearLayer.top_right_singular_vec_from_BA
    monkeypatch.setattr(ArrowLoraLinearLayer, "top_right_singular_vec_from_BA",
                        lambda self, A, B, iters=15, eps=1e-8: power(self, A, B, iters=2000, eps=eps))
    model = create_arrow_model(random_hf_model(seed=11), dirs,
                               ArrowConfig(top_k=top_k, router_temperature=temperature, rng_seed=0)).eval()
    ref = hf_logits(model)

    out = tmp_path / "arrow.safetensors"
    moin("logits", "--model", base, "--arrow", *dirs, "--set", f"arrow_top_k={top_k}",
         "--set", f"arrow_temperature={temperature}", "--tokens", " ".join(map(str, TOKENS)), "--output", out)
    from safetensors.torch import load_file
    ours = load_file(out)["logits"]
    assert ours.shape == ref.shape
    # float32 on both sides; a low temperature scales the similarities' rounding up in the softmax (2e-4 at
    # T = 0.25), while a wrong choice of experts moves logits by > 1e-2.
    assert torch.allclose(ours, ref, atol=5e-4, rtol=0), (ours - ref).abs().max()
    # Routing matters: the mixture is neither the base nor any one expert.
    assert (ref - hf_logits(random_hf_model(seed=11))).abs().max() > 1e-2
    single = tmp_path / "single.safetensors"
    for d in dirs[:2]:
        moin("logits", "--model", base, "--adapter", d, "--tokens", " ".join(map(str, TOKENS)), "--output", single)
        assert (load_file(single)["logits"] - ref).abs().max() > 1e-3
