"""Shared fixtures of the Slurm tests: a one-node cluster on this machine (scripts/slurm-local.sh, started
with MaxArraySize 2 unless one runs already), a tiny 3-cluster partition with a base and a train config, and
helpers to write, submit and wait for `moin launch --slurm` scripts. Slurm that cannot be started here (not
root, no apt-get, a daemon that does not come up) skips the tests with the reason; MOIN_REQUIRE_SLURM=1 turns
that skip into a failure."""
import json
import os
import random
import re
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tiny_world import BASE_MODEL, MOIN, ROOT, TOPICS  # noqa: E402

SLURM_LOCAL = os.path.join(ROOT, "scripts", "slurm-local.sh")
CLUSTERS = 3


def moin(*args, timeout=300):
    r = subprocess.run([MOIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"moin {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr[-3000:]}"
    return r


def skip_or_fail(reason):
    if os.environ.get("MOIN_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm():
    """Starts the project's one-node cluster (installing Slurm and munge when missing) unless it runs already;
    stops it afterwards when this fixture started it. Yields the environment that reaches it."""
    running = subprocess.run([SLURM_LOCAL, "status"], capture_output=True, text=True).returncode == 0
    if not running:
        try:
            # MaxArraySize 2 (ids 0 and 1 only): the test's arrays must be split to be accepted at all.
            r = subprocess.run([SLURM_LOCAL, "start"], capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, MOIN_SLURM_MAX_ARRAY_SIZE="2"))
        except subprocess.TimeoutExpired:
            skip_or_fail("Slurm could not be started here: scripts/slurm-local.sh start timed out")
        if r.returncode != 0:
            skip_or_fail("Slurm could not be started here: " + (r.stderr.strip().splitlines() or ["?"])[-1])
    conf = subprocess.run([SLURM_LOCAL, "env"], capture_output=True, text=True, check=True).stdout.split("=", 1)[1]
    env = dict(os.environ, SLURM_CONF=conf.strip())
    yield env
    if not running:
        subprocess.run([SLURM_LOCAL, "stop"], capture_output=True)


def write_corpus(path, n_per_topic, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n_per_topic):
            for topic, words in TOPICS.items():
                text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
                f.write(json.dumps({"text": text, "label": topic}) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("slurm")
    os.makedirs(w / "corpus")
    write_corpus(w / "corpus" / "train.jsonl", 90, 1)
    moin("tokenizer", "train", "--input", w / "corpus" / "train.jsonl", "--output", w / "tok" / "tok",
         "--vocab-size", BASE_MODEL["vocab_size"], "-q")
    moin("partition", "--input", w / "corpus" / "train.jsonl", "--text-field", "text", "--label-field", "label",
         "--tokenizer", w / "tok" / "tok.model", "--clusters", CLUSTERS, "--output", w / "part",
         "--valid-fraction", 0.1, "--set", "embedder.dim=16", "--set", "threads=2", "-q")
    with open(w / "init.json", "w") as f:
        json.dump({"model": BASE_MODEL}, f)
    moin("init-model", "--config", w / "init.json", "--output", w / "base", "--seed", 3, "-q")
    # Slow steps (fault_sleep_s) so that a task is still running, with a checkpoint, when it is cancelled.
    cfg = {"mode": "expert", "base": str(w / "base"), "seq_len": 32, "micro_batch": 4, "max_steps": 24,
           "lr": 3e-3, "warmup_steps": 2, "lora": {"r": 4, "alpha": 8}, "eval_every": 0, "eval_tokens": 256,
           "checkpoint_every": 2, "keep_checkpoints": 2, "log_every": 4, "num_threads": 1, "device": "cpu",
           "fault_sleep_s": 0.4}
    with open(w / "train.json", "w") as f:
        json.dump(cfg, f)
    return w


def write_scripts(w, *more, name="experts"):
    """moin launch --slurm into w/NAME: CPU-only tasks of one core, at most 2 tasks per array."""
    moin("launch", "--partition", w / "part", "--config", w / "train.json", "--output", w / name,
         "--slurm", w / f"{name}.sbatch", "--set", "slurm_options.gpus_per_task=0",
         "--set", "slurm_options.cpus_per_task=1", "--set", "slurm_options.time=00:15:00",
         "--set", "slurm_options.max_array_size=2", "--set", "retries=0", *more)
    return w / f"{name}.sbatch", w / f"{name}.submit.sh"


def submit(submit_script, env):
    r = subprocess.run(["bash", str(submit_script)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = re.findall(r"tasks (\S+) \(\d+\): job (\d+)", r.stdout)
    assert jobs, r.stdout
    return jobs  # [(task range, array job id)]


def queued(job_ids, env):
    r = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True,
                       env=env)
    return [line for line in r.stdout.splitlines() if line.strip()]


def wait_until_done(job_ids, env, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not queued(job_ids, env):
            return
        time.sleep(1)
    subprocess.run(["scancel", *job_ids], env=env)
    raise AssertionError(f"Slurm jobs {job_ids} still queued after {timeout} s: {queued(job_ids, env)}")


def logs(w, name="experts"):
    """The Slurm logs' last lines, for a failure message."""
    d = w / name / "logs"
    return "\n".join(f"== {f}\n" + (d / f).read_text()[-1500:] for f in sorted(os.listdir(d)) if f.startswith("slurm"))


def summary(w, k, name="experts"):
    return w / name / str(k) / "summary.json"


