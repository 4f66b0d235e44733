#!/usr/bin/env python3
"""Forward-only throughput of moin against its peer, transformers, in one run: the same Llama shape
(init-model's 11.0M-parameter default: vocab 4096, hidden 384, 6 layers, 6 heads, 2 key/value heads, MLP
1024, tied embeddings), float32 on the CPU, the same threads and batch x sequence shapes, each under its
inference mode (torch.inference_mode / c10::InferenceMode), a warm-up pass then the mean of ITERS passes.
Each of ROUNDS rounds runs moin then transformers; a shape's ratio is the median of the rounds' ratios (a
shared machine's speed drifts by 10-20% within a minute, so one round's ratio is noise-bound). moin runs with
the allocator settings its CLI uses (core/process.h reuse_freed_memory), transformers as Python runs it.

  python benchmarks/peer_forward.py [--bin build/bin] [--threads 1] [--iters 5] [--rounds 3]

Prints each round, one line per shape, and RESULT {...} with moin / transformers tokens/s (medians) and the
median ratio.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHAPES = [(1, 128), (8, 128), (4, 512), (16, 256)]


def transformers_tps(threads, iters):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.set_num_threads(threads)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    out = {}
    for b, t in SHAPES:
        ids = torch.randint(0, cfg.vocab_size, (b, t))
        with torch.inference_mode():
            model(ids, use_cache=False)  # warm-up
            t0 = time.perf_counter()
            for _ in range(iters):
                model(ids, use_cache=False)
            out[(b, t)] = b * t * iters / (time.perf_counter() - t0)
    return out


def moin_tps(bin_dir, threads, iters):
    exe = os.path.join(bin_dir, "bench_model_forward")
    r = subprocess.run([exe, "--threads", str(threads), "--iters", str(iters), "--forward-only", "1"],
                       capture_output=True, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"forward\s+(\d+)\s+(\d+)\s+([\d.]+)", line)
        if m:
            out[(int(m.group(1)), int(m.group(2)))] = float(m.group(3))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    rounds = []
    for r in range(a.rounds):
        ours = moin_tps(a.bin, a.threads, a.iters)
        peer = transformers_tps(a.threads, a.iters)
        rounds.append((ours, peer))
        print(f"round {r + 1}: " + ", ".join(f"{b}x{t} {ours[(b, t)] / peer[(b, t)]:.2f}"
                                             for b, t in SHAPES if (b, t) in ours and (b, t) in peer), flush=True)
    print(f"forward tokens/s, float32, {a.threads} thread(s), mean of {a.iters} after a warm-up, "
          f"median over {a.rounds} rounds")
    print(f"{'batch x seq':>12} {'moin':>10} {'transformers':>13} {'ratio':>6}")
    rows = []
    for shape in SHAPES:
        if any(shape not in o or shape not in p for o, p in rounds):
            continue
        m = statistics.median(o[shape] for o, _ in rounds)
        p = statistics.median(p[shape] for _, p in rounds)
        ratio = statistics.median(o[shape] / p[shape] for o, p in rounds)
        print(f"{shape[0]:>5} x {shape[1]:<5} {m:>10.0f} {p:>13.0f} {ratio:>6.2f}")
        rows.append({"batch": shape[0], "seq": shape[1], "moin": m, "transformers": p, "ratio": ratio})
    print("RESULT " + json.dumps({"threads": a.threads, "iters": a.iters, "rounds": a.rounds, "shapes": rows}))


if __name__ == "__main__":
    sys.exit(main())
