"""The learned token-level mixture (moin's model/mixture.h, `moin logits --mixture`) against the same mixture
written here in PyTorch on transformers' LlamaForCausalLM: each decoder layer's router reads the normed
input of the MLP (and, with attention, of the attention), takes the top-k softmax (or the full softmax)
of its logits, and every projection of that part adds its experts' LoRA terms weighted by the gates.

The mixture folder is written here from its documented layout (mixture.json, router.safetensors) over
adapters that peft saves; the adapters' tensors are read from their files, and the base model is
transformers' own, so nothing of moin's is on the reference side."""
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from test_peft_ref import TOKENS, hf_logits, moin, random_hf_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_experts(tmp_path, n, seed=11):
    dirs, adapters = [], []
    for i in range(n):
        cfg = LoraConfig(r=4, lora_alpha=6 + 2 * i, target_modules=TARGETS, task_type="CAUSAL_LM")
        model = get_peft_model(random_hf_model(seed=seed), cfg)
        torch.manual_seed(200 + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.3)
        d = tmp_path / f"expert{i}"
        model.save_pretrained(d)
        dirs.append(str(d))
        adapters.append((load_file(d / "adapter_model.safetensors"), cfg.lora_alpha / cfg.r))
    return dirs, adapters


def gates_of(x, w, top_k):
    logits = x.float() @ w.t()
    if top_k == 0 or top_k == w.shape[0]:
        return torch.softmax(logits, -1)
    top, idx = logits.topk(top_k, -1)
    return torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, -1))


class Mixed(torch.nn.Module):
    """A projection plus its experts' LoRA terms, weighted per token by the gates its part set."""

    def __init__(self, lin, name, adapters, part):
        super().__init__()
        self.lin, self.name, self.adapters, self.part = lin, name, adapters, part

    def forward(self, x):
        y = self.lin(x)
        for e, (t, scaling) in enumerate(self.adapters):
            A = t[f"base_model.model.{self.name}.lora_A.weight"]
            B = t[f"base_model.model.{self.name}.lora_B.weight"]
            y = y + self.part["gates"][..., e:e + 1] * scaling * (x @ A.t() @ B.t())
        return y


def mixture_reference(adapters, routers, top_k, attention):
    model = random_hf_model(seed=11)
    for i, layer in enumerate(model.model.layers):
        parts = {"mlp": (layer.mlp, ["gate_proj", "up_proj", "down_proj"])}
        if attention:
            parts["self_attn"] = (layer.self_attn, ["q_proj", "k_proj", "v_proj", "o_proj"])
        for part_name, (module, projections) in parts.items():
            state = {}
            w = routers[f"model.layers.{i}.{part_name}.router.weight"]

            def hook(mod, args, kwargs, state=state, w=w):
                x = args[0] if args else kwargs["hidden_states"]
                state["gates"] = gates_of(x, w, top_k)

            module.register_forward_pre_hook(hook, with_kwargs=True)
            for p in projections:
                setattr(module, p, Mixed(getattr(module, p), f"model.layers.{i}.{part_name}.{p}", adapters, state))
    return model.eval()


@pytest.mark.parametrize("top_k,attention", [(2, False), (0, True), (1, True), (3, False)])
def test_mixture_logits_match_the_reference(tmp_path, top_k, attention):
    base = tmp_path / "base"
    random_hf_model(seed=11).save_pretrained(base)
    dirs, adapters = make_experts(tmp_path, 4)
    torch.manual_seed(7)
    routers = {}
    for i in range(2):
        for part in ["mlp"] + (["self_attn"] if attention else []):
            routers[f"model.layers.{i}.{part}.router.weight"] = torch.randn(4, 64) * 0.5
    mix = tmp_path / "mixture"
    mix.mkdir()
    save_file(routers, mix / "router.safetensors")
    (mix / "mixture.json").write_text(json.dumps({
        "format": "moin-mixture", "schema_version": 1,
        "options": {"top_k": top_k, "attention": attention, "balance_coef": 0.01, "train_experts": False,
                    "init_std": 0.02},
        "experts": dirs, "clusters": [0, 1, 2, 3], "hidden_size": 64, "num_hidden_layers": 2,
        "trained_experts": False}))
    ref = hf_logits(mixture_reference(adapters, routers, top_k, attention))

    out = tmp_path / "mixture.safetensors"
    moin("logits", "--model", base, "--mixture", mix, "--tokens", " ".join(map(str, TOKENS)), "--output", out)
    ours = load_file(out)["logits"]
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=2e-4, rtol=0), (ours - ref).abs().max()
    # The gates matter: the mixture is neither the base nor the equal-weight average of the experts.
    assert (ref - hf_logits(random_hf_model(seed=11))).abs().max() > 1e-2
    if top_k != 0:
        soft = hf_logits(mixture_reference(adapters, routers, 0, attention))
        assert (ref - soft).abs().max() > 1e-3


def test_a_mixture_for_another_model_is_refused(tmp_path):
    base = tmp_path / "base"
    random_hf_model(seed=11).save_pretrained(base)
    dirs, _ = make_experts(tmp_path, 2)
    mix = tmp_path / "mixture"
    mix.mkdir()
    save_file({f"model.layers.{i}.mlp.router.weight": torch.zeros(2, 32) for i in range(2)}, mix / "router.safetensors")
    (mix / "mixture.json").write_text(json.dumps({
        "format": "moin-mixture", "schema_version": 1, "options": {"top_k": 1}, "experts": dirs,
        "clusters": [0, 1], "hidden_size": 32, "num_hidden_layers": 2, "trained_experts": False}))
    r = moin("logits", "--model", base, "--mixture", mix, "--tokens", "1 2 3", "--output", tmp_path / "x.safetensors",
             check=False)
    assert r.returncode != 0 and "hidden_size 32" in r.stderr, r.stderr
