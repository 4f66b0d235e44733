"""Issue 16, case by case, with real processes: full disks, two writers on one folder, children of a killed
launcher, resuming against other inputs, hostile bytes, mismatched models, resource limits, non-finite
weights, bad --set keys and the smaller defects. See docs/reliability.md."""
import json
import os
import shutil
import subprocess
import zipfile

import pytest

from conftest import (MOIN, alive, assert_no_orphans, kill9, moin, ppl_args, start, temp_files, train_config,
                      wait_for, write_corpus)


def is_root():
    return os.geteuid() == 0


class Tmpfs:
    """A small tmpfs mounted at path (root only; the test skips with a message otherwise)."""

    def __init__(self, path, size, ro=False):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        if not is_root():
            pytest.skip("not root: cannot mount a small tmpfs to fill (run the tests as root to check full disks)")
        opts = f"size={size}" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", self.path], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the full-disk case is not checked")

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", self.path], capture_output=True)


def latest(ckpt_dir):
    with open(os.path.join(ckpt_dir, "latest.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------- 1. full disk

def test_full_disk_during_a_checkpoint_fails_cleanly_and_keeps_the_previous_one(world, tmp_path):
    # Full training writes checkpoints of ~3x the model; the disk holds about two and a half of them.
    cfg = train_config(tmp_path / "full.json", world / "part", world / "base", mode="full", cluster=-1,
                       max_steps=6, checkpoint_every=1, keep_checkpoints=2)
    moin("train", "--config", cfg, "--output", tmp_path / "probe", "--set", "max_steps=1", "-q", check=True)
    ckpt = os.path.getsize(tmp_path / "probe" / "checkpoints" / latest(tmp_path / "probe" / "checkpoints")["file"])
    with Tmpfs(tmp_path / "disk", f"{int(2.5 * ckpt) // 1024}k") as disk:
        r = moin("train", "--config", cfg, "--output", os.path.join(disk, "tr"))
        assert r.returncode == 1, r.stderr[-2000:]
        assert "moin: failed:" in r.stderr and "No space left on device" in r.stderr, r.stderr[-2000:]
        assert temp_files(disk) == []
        ckpts = os.path.join(disk, "tr", "checkpoints")
        newest = latest(ckpts)
        assert newest["step"] >= 1
        with zipfile.ZipFile(os.path.join(ckpts, newest["file"])) as z:  # a torch archive is a zip
            assert z.testzip() is None
        shutil.copytree(os.path.join(disk, "tr"), tmp_path / "moved")
    # The kept checkpoint is a real one: the run resumes from it on a disk with room.
    r = moin("train", "--config", cfg, "--output", tmp_path / "moved", "--resume", "-q")
    assert r.returncode == 0, r.stderr[-2000:]


def test_full_disk_while_writing_a_model_leaves_no_temp_file(world, tmp_path):
    with Tmpfs(tmp_path / "disk", "48k") as disk:
        r = moin("init-model", "--config", world / "init.json", "--output", os.path.join(disk, "m"))
        assert r.returncode == 1, r.stderr[-2000:]
        assert "No space left on device" in r.stderr
        assert temp_files(disk) == []


# ------------------------------------------------------------------------------------------ 2. one writer

def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken(world, tmp_path):
    cfg = train_config(tmp_path / "t.json", world / "part", world / "base", fault_sleep_s=0.3, max_steps=40)
    out = tmp_path / "out"
    first = start("train", "--config", cfg, "--output", out, log=tmp_path / "first.log")
    try:
        wait_for(lambda: os.path.exists(out / "metrics.jsonl"), proc=first, what="the first run's metrics")
        second = moin("train", "--config", cfg, "--output", out, "--resume")
        assert second.returncode == 2, second.stderr
        assert "moin: error:" in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr
    finally:
        kill9(first)
    # The holder died: its lock goes with it, and the run resumes.
    r = moin("train", "--config", cfg, "--output", out, "--resume", "--set", "fault_sleep_s=0", "-q")
    assert r.returncode == 0, r.stderr[-2000:]


def test_partition_refuses_a_second_writer(world, tmp_path):
    shutil.copytree(world / "part", tmp_path / "part")
    holder = subprocess.Popen(["flock", "-x", str(tmp_path / "part" / ".moin.lock"), "sleep", "30"])
    try:
        wait_for(lambda: subprocess.run(["flock", "-n", "-x", str(tmp_path / "part" / ".moin.lock"), "true"]).returncode
                 != 0, what="the lock")
        r = moin("partition", "--output", tmp_path / "part")
        assert r.returncode == 2 and "in use by another moin process" in r.stderr, r.stderr
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------------------- 3. no orphans

def test_killing_launch_kills_its_training_jobs(world, tmp_path):
    cfg = train_config(tmp_path / "t.json", world / "part", world / "base", fault_sleep_s=0.5, max_steps=200)
    launcher = start("launch", "--partition", world / "part", "--config", cfg, "--output", tmp_path / "experts",
                     "--gpus", "none", "--jobs", "2", log=tmp_path / "launch.log")
    locks = [tmp_path / "experts" / str(k) / ".moin.lock" for k in range(2)]

    def job_pids():
        pids = []
        for lock in locks:
            try:
                pids.append(int(open(lock).read().strip()))
            except (OSError, ValueError):
                return None
        return pids

    wait_for(lambda: job_pids() is not None, proc=launcher, what="both jobs to start")
    pids = job_pids()
    assert all(alive(p) for p in pids)
    kill9(launcher)
    wait_for(lambda: not any(alive(p) for p in pids), timeout=10, what="the jobs to die with the launcher")
    assert_no_orphans(tmp_path)


# ---------------------------------------------------------------------------- 4. resume fingerprints

def test_resume_refuses_another_base_or_partition(world, tmp_path):
    cfg = train_config(tmp_path / "t.json", world / "part", world / "base", fault_sleep_s=0.2, max_steps=30)
    out = tmp_path / "out"
    run = start("train", "--config", cfg, "--output", out, log=tmp_path / "run.log")
    wait_for(lambda: os.path.exists(out / "checkpoints" / "latest.json"), proc=run, what="a checkpoint")
    kill9(run)
    # Another base of the same shapes (another seed), and a partition whose shards hold other tokens.
    moin("init-model", "--config", world / "init.json", "--output", tmp_path / "base2", "--seed", 99, "-q",
         check=True)
    shutil.copytree(world / "part", tmp_path / "part2")
    shard = tmp_path / "part2" / "clusters" / "0" / "train.bin"
    data = bytearray(open(shard, "rb").read())  # uint16 tokens: the first one becomes another valid token
    first = int.from_bytes(data[0:2], "little")
    data[0:2] = (5 if first == 4 else 4).to_bytes(2, "little")
    open(shard, "wb").write(bytes(data))
    for flag, value, word in (("--base", tmp_path / "base2", "base"), ("--partition", tmp_path / "part2", "partition")):
        r = moin("train", "--config", cfg, "--output", out, "--resume", flag, value)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "cannot resume" in r.stderr and f"this run's {word}" in r.stderr, r.stderr
    # The same inputs from another path (a moved folder) resume.
    shutil.copytree(world / "base", tmp_path / "base_moved")
    r = moin("train", "--config", cfg, "--output", out, "--resume", "--base", tmp_path / "base_moved",
             "--set", "fault_sleep_s=0", "-q")
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------------------------------------ 5. non-UTF-8 bytes

def test_a_raw_non_utf8_line_is_counted_not_fatal(world, tmp_path):
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, 40, 5, bad_lines=[b"\xff\xff\xff\n", b'{"text": "ok \xc3\x28 half", "label": "x"}\n'])
    r = moin("partition", "--input", corpus, "--text-field", "text", "--label-field", "label", "--tokenizer",
             world / "tok" / "tok.model", "--clusters", 2, "--output", tmp_path / "p", "--set", "embedder.dim=8", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    fit = json.load(open(tmp_path / "p" / "fit.json", encoding="utf-8"))  # valid UTF-8, or this raises
    assert fit["ingest"]["issues"]["malformed_json"]["count"] == 1, fit["ingest"]
    assert fit["ingest"]["issues"]["invalid_utf8"]["count"] == 2, fit["ingest"]


# ----------------------------------------------------------------------------------- 6. shape mismatches

def test_eval_ppl_refuses_a_tokenizer_larger_than_the_models(world, tmp_path):
    moin("tokenizer", "train", "--input", world / "corpus" / "train.jsonl", "--output", tmp_path / "big",
         "--vocab-size", 400, "-q", check=True)
    r = moin(*ppl_args(world, **{"--tokenizer": tmp_path / "big.model"}))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "moin: error:" in r.stderr and "400" in r.stderr and "320" in r.stderr, r.stderr
    with open(tmp_path / "small.json", "w") as f:
        json.dump({"model": {**json.load(open(world / "init.json"))["model"], "vocab_size": 200,
                             "hidden_size": 16}}, f)
    moin("init-model", "--config", tmp_path / "small.json", "--output", tmp_path / "cpt", "-q", check=True)
    r = moin(*ppl_args(world, **{"--cpt": tmp_path / "cpt"}))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "continued-pre-training model" in r.stderr and "200" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------ 7. resource limits

def test_lora_rank_and_seq_len_beyond_the_model_are_refused(world, tmp_path):
    cfg = train_config(tmp_path / "t.json", world / "part", world / "base")
    r = moin("train", "--config", cfg, "--output", tmp_path / "a", "--set", "lora.r=100000")
    assert r.returncode == 2 and "exceeds min(in, out) = 32" in r.stderr, r.stderr[-2000:]
    r = moin("train", "--config", cfg, "--output", tmp_path / "b", "--set", "seq_len=100000")
    assert r.returncode == 2 and "max_position_embeddings (64)" in r.stderr, r.stderr[-2000:]


# ------------------------------------------------------------------------------- 8. non-finite weights

def test_nan_weights_are_refused_on_load_and_a_nan_loss_is_an_error(world, tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    shutil.copytree(world / "base", tmp_path / "base")
    w = st.load_file(str(tmp_path / "base" / "model.safetensors"))
    w["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    st.save_file(w, str(tmp_path / "base" / "model.safetensors"), metadata={"format": "pt"})
    r = moin(*ppl_args(world, **{"--base": tmp_path / "base"}))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "model.layers.1.mlp.up_proj.weight holds NaN or infinite values" in r.stderr, r.stderr
    # An adapter is checked on load too (issue 33): exit 2 naming the tensor, before any perplexity is printed.
    shutil.copytree(world / "experts", tmp_path / "experts")
    a = tmp_path / "experts" / "1" / "adapter_model.safetensors"
    t = st.load_file(str(a))
    name = sorted(k for k in t if "lora_B" in k)[0]
    t[name][0, 0] = float("inf")
    t[sorted(k for k in t if "lora_A" in k)[0]][0, 0] = float("nan")
    st.save_file(t, str(a))
    r = moin(*ppl_args(world, **{"--experts": tmp_path / "experts"}))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "holds NaN or infinite values" in r.stderr and "experts/1" in r.stderr, r.stderr[-2000:]


# ------------------------------------------------------------------------------------- 9. --set a.b=1

def test_set_below_a_scalar_names_the_key(world, tmp_path):
    cfg = train_config(tmp_path / "t.json", world / "part", world / "base")
    r = moin("train", "--config", cfg, "--output", tmp_path / "o", "--set", "lr.x=1")
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("moin: error: --set lr.x:") and "'lr'" in lines[-1], r.stderr


# --------------------------------------------------------------------------------- 10. smaller defects

def test_eval_ppl_counts_malformed_lines_and_writes_no_plot_into_the_cwd(world, tmp_path):
    data = tmp_path / "valid.jsonl"
    shutil.copy(world / "corpus" / "valid.jsonl", data)
    with open(data, "ab") as f:
        f.write(b"{not json\n")
        f.write(b'{"label": "no text"}\n')
    cwd = tmp_path / "cwd"
    os.makedirs(cwd)
    r = moin(*ppl_args(world, **{"--data": data, "--json": tmp_path / "r" / "ppl.json"}), cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.load(open(tmp_path / "r" / "ppl.json"))
    assert rep["ingest"]["issues"]["malformed_json"]["count"] == 1
    assert rep["ingest"]["issues"]["missing_text"]["count"] == 1
    assert os.path.exists(tmp_path / "r" / "perplexity.png") or shutil.which("gnuplot") is None
    r = moin(*ppl_args(world), cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.listdir(cwd) == []


def test_cli_parse_errors_are_one_prefixed_line(tmp_path):
    for args in (["train", "--no-such-flag"], ["partition", "bogus-step"], ["no-such-command"]):
        r = subprocess.run([MOIN, *args], capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stderr)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("moin: error: "), (args, r.stderr)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(world, tmp_path):
    cfg = train_config(tmp_path / "t.json", world / "part", world / "base")
    a, b = tmp_path / "a", tmp_path / "b"
    moin("train", "--config", cfg, "--output", a, "-q", check=True)
    # The same run, its end undone: no summary, no adapter, the newest checkpoint cut in half.
    moin("train", "--config", cfg, "--output", b, "-q", check=True)
    for f in ("summary.json", "adapter_model.safetensors", "adapter_config.json"):
        os.remove(b / f)
    newest = b / "checkpoints" / latest(b / "checkpoints")["file"]
    size = os.path.getsize(newest)
    with open(newest, "r+b") as f:
        f.truncate(size // 2)
    r = moin("train", "--config", cfg, "--output", b, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trying the checkpoint before it" in r.stderr
    assert open(a / "adapter_model.safetensors", "rb").read() == open(b / "adapter_model.safetensors", "rb").read()


def test_a_truncated_zst_keeps_its_readable_prefix_like_gz(world, tmp_path):
    if shutil.which("zstd") is None or shutil.which("gzip") is None:
        pytest.skip("zstd or gzip is not installed")
    src = tmp_path / "c.jsonl"
    write_corpus(src, 1500, 9)  # ~1.4 MB of text: a zstd stream of many blocks
    total = sum(1 for _ in open(src, "rb"))
    records = {}
    for tool, ext in (("gzip", ".gz"), ("zstd", ".zst")):
        data = subprocess.run([tool, "-q", "-c", str(src)], capture_output=True, check=True).stdout
        cut = tmp_path / ("cut.jsonl" + ext)
        open(cut, "wb").write(data[: len(data) // 2])
        r = moin("tokenizer", "train", "--input", cut, "--output", tmp_path / ("tok" + ext) / "t", "--vocab-size", 320)
        assert r.returncode == 0, r.stderr[-2000:]
        line = [l for l in r.stderr.splitlines() if "tokenizer: corpus:" in l][-1]
        assert "truncated_file 1" in line, line
        records[ext] = int(line.split(" records")[0].rsplit(" ", 1)[1])
    # Both keep what came before the cut (zstd to its last complete block, up to 128 KiB less).
    assert 0.3 * total < records[".gz"] < total, records
    assert 0.6 * records[".gz"] < records[".zst"] <= records[".gz"], records


def test_a_killed_writers_temp_files_are_swept_by_the_next_run(world, tmp_path):
    shutil.copytree(world / "part", tmp_path / "part")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stray = tmp_path / "part" / f".partition.config.json.tmp.{dead.pid}.0.123"
    open(stray, "w").write("{")
    live = tmp_path / "part" / f".other.tmp.{os.getpid()}.0.1"  # a live process's file is left alone
    open(live, "w").write("x")
    r = moin("partition", "--output", tmp_path / "part", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not os.path.exists(stray)
    assert os.path.exists(live)


def test_read_only_tokenizer_output_names_the_reason(world, tmp_path):
    with Tmpfs(tmp_path / "ro", "64k", ro=True) as ro:
        r = moin("tokenizer", "train", "--input", world / "corpus" / "train.jsonl", "--output",
                 os.path.join(ro, "tok"), "--vocab-size", 64)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "Read-only file system" in r.stderr, r.stderr
