"""Shared fixtures of the fault tests: a small synthetic corpus (3 topics), a tokenizer, a 2-cluster
partition, a tiny random base model and fresh (zero-B) expert adapters, all made with the `moin` CLI,
plus helpers to run moin, kill it and look for orphans and temporary files."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tiny_world import BASE_MODEL, MOIN, ROOT, TOPICS  # noqa: E402


def moin(*args, cwd=None, timeout=300, check=False):
    r = subprocess.run([MOIN, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if check:
        assert r.returncode == 0, f"moin {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr[-3000:]}"
    return r


def start(*args, log=None):
    """moin ARGS in the background (its own session, so that a test's kill reaches only what it names)."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([MOIN, *map(str, args)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(cond, timeout=60.0, proc=None, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return cond()
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def alive(pid):
    """Running (a zombie, which only waits to be reaped, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def processes_mentioning(text):
    """Live processes whose command line mentions `text` (a test's own temporary folder)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and alive(int(d)):
            found.append((int(d), cmd))
    return found


def assert_no_orphans(folder, timeout=5.0):
    deadline = time.time() + timeout
    while processes_mentioning(str(folder)) and time.time() < deadline:
        time.sleep(0.05)
    left = processes_mentioning(str(folder))
    assert not left, f"processes still running after the kill: {left}"


def temp_files(folder):
    """Temporary files of the atomic writers (".NAME.tmp.PID.N.R") anywhere under folder."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        out += [os.path.join(dirpath, f) for f in filenames if ".tmp." in f]
    return out


def write_corpus(path, n_per_topic, seed, bad_lines=()):
    rng = random.Random(seed)
    lines = []
    for i in range(n_per_topic):
        for topic, words in TOPICS.items():
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
            lines.append(json.dumps({"text": text, "label": topic}).encode())
    rng.shuffle(lines)
    with open(path, "wb") as f:
        for line in lines:
            f.write(line + b"\n")
        for b in bad_lines:
            f.write(b)


def train_config(path, partition, base, **over):
    cfg = {"mode": "expert", "partition": str(partition), "cluster": 0, "base": str(base), "seq_len": 32,
           "micro_batch": 4, "max_steps": 8, "lr": 3e-3, "warmup_steps": 2, "lora": {"r": 4, "alpha": 8},
           "eval_every": 0, "eval_tokens": 256, "checkpoint_every": 2, "keep_checkpoints": 2, "log_every": 1,
           "num_threads": 1, "device": "cpu", "keep_final_checkpoint": True}
    cfg.update(over)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return str(path)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """corpus/{train,valid}.jsonl, tok/tok.model, part/ (2 clusters), base/ (random), experts/<k> (fresh)."""
    w = tmp_path_factory.mktemp("world")
    os.makedirs(w / "corpus")
    write_corpus(w / "corpus" / "train.jsonl", 120, 1)
    write_corpus(w / "corpus" / "valid.jsonl", 12, 2)
    moin("tokenizer", "train", "--input", w / "corpus" / "train.jsonl", "--output", w / "tok" / "tok",
         "--vocab-size", BASE_MODEL["vocab_size"], "-q", check=True)
    moin("partition", "--input", w / "corpus" / "train.jsonl", "--text-field", "text", "--label-field", "label",
         "--tokenizer", w / "tok" / "tok.model", "--clusters", 2, "--output", w / "part", "--valid-fraction", 0.1,
         "--set", "embedder.dim=16", "--set", "threads=2", "-q", check=True)
    with open(w / "init.json", "w") as f:
        json.dump({"model": BASE_MODEL}, f)
    moin("init-model", "--config", w / "init.json", "--output", w / "base", "--seed", 3, "-q", check=True)
    for k in range(2):
        moin("lora", "init", "--model", w / "base", "--output", w / "experts" / str(k), "-r", 4, "--seed", k,
             "-q", check=True)
    return w


def ppl_args(world, **over):
    a = {"--data": world / "corpus" / "valid.jsonl", "--base": world / "base", "--partition": world / "part",
         "--experts": world / "experts", "--prefix-tokens": 4, "--max-tokens": 40, "--device": "cpu"}
    a.update(over)
    out = ["eval", "ppl"]
    for k, v in a.items():
        if v is not None:
            out += [k, v]
    return out
