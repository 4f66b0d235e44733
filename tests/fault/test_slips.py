"""Issue 33, case by case, with real processes: the slips of a new user that lost data, read data from outside a
partition, gave silent wrong results or sent the user the wrong way. Each test asserts the exit code and the
message, and for the data-loss cases that nothing was overwritten or read. See docs/reliability.md."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import MOIN, moin, ppl_args, train_config, write_corpus


def snapshot(folder):
    """{relative path: sha256} of every file under folder (but the lock file, which holds its last holder's pid,
    and the log, which records the refusal)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f in (".moin.lock", "moin.log"):
                continue
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def last_line(stderr):
    lines = [l for l in stderr.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def copy_partition(world, dst):
    shutil.copytree(world / "part", dst)
    return dst


# ------------------------------------------------------------------ 1. a repeated train keeps a finished expert

def test_repeating_a_finished_train_is_refused_and_overwrite_is_explicit(world, tmp_path):
    cfg = train_config(tmp_path / "t.json", world / "part", world / "base", max_steps=4, keep_final_checkpoint=False)
    out = tmp_path / "experts" / "0"
    moin("train", "--config", cfg, "--output", out, "-q", check=True)
    before = snapshot(out)
    assert "summary.json" in before and "adapter_model.safetensors" in before
    # The exact command again, with more steps (what a user does to "train longer"): refused, nothing touched.
    r = moin("train", "--config", cfg, "--output", out, "--set", "max_steps=6")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "moin: error:" in last_line(r.stderr) and "--resume" in r.stderr and "--overwrite" in r.stderr, r.stderr
    assert snapshot(out) == before
    # --resume keeps it as it is.
    r = moin("train", "--config", cfg, "--output", out, "--resume", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert snapshot(out) == before
    # --overwrite is the explicit choice: trained again from step 0, one consistent folder.
    r = moin("train", "--config", cfg, "--output", out, "--overwrite", "--set", "max_steps=6", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    steps = [json.loads(l)["step"] for l in open(out / "metrics.jsonl") if json.loads(l).get("kind") == "train"]
    assert summary["steps"] == 6 and max(steps) == 6 and min(steps) >= 1
    r = moin("train", "--config", cfg, "--output", out, "--resume", "--overwrite")
    assert r.returncode == 2 and "exclude each other" in r.stderr, r.stderr


# ------------------------------------------------------------------ 2. shards missing or outside the partition

def test_a_missing_cluster_shard_is_an_error_not_an_empty_cluster(world, tmp_path):
    part = copy_partition(world, tmp_path / "part")
    tokens = json.load(open(part / "manifest.json"))["clusters"][0]["train"]["tokens"]
    assert tokens > 0
    shutil.rmtree(part / "clusters" / "0")
    cfg = train_config(tmp_path / "t.json", part, world / "base")
    out = tmp_path / "e0"
    r = moin("train", "--config", cfg, "--output", out)
    assert r.returncode == 2, r.stderr[-2000:]
    msg = last_line(r.stderr)
    assert "moin: error:" in msg and "is missing" in msg and f"{tokens} tokens" in msg, r.stderr
    assert not (out / "summary.json").exists()  # not recorded as too small: it would route to the base forever


def test_a_shard_whose_counts_differ_from_the_manifest_is_refused(world, tmp_path):
    part = copy_partition(world, tmp_path / "part")
    for ext in (".bin", ".idx", ".json"):  # cluster 1's shard in cluster 0's place
        shutil.copy(part / "clusters" / "1" / f"train{ext}", part / "clusters" / "0" / f"train{ext}")
    r = moin("train", "--config", train_config(tmp_path / "t.json", part, world / "base"), "--output", tmp_path / "o")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "is not the one the partition wrote" in last_line(r.stderr), r.stderr


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_manifest_path_outside_the_partition_is_refused(world, tmp_path, where):
    part = copy_partition(world, tmp_path / "part")
    escape = tmp_path / "escape" / "c0"
    shutil.copytree(part / "clusters" / "0", escape)  # a real shard there: the test fails if it is read
    m = json.load(open(part / "manifest.json"))
    m["clusters"][0]["train"]["path"] = "../escape/c0/train" if where == "relative" else str(escape / "train")
    json.dump(m, open(part / "manifest.json", "w"))
    out = tmp_path / "e0"
    r = moin("train", "--config", train_config(tmp_path / "t.json", part, world / "base"), "--output", out)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "not a path inside the partition folder" in last_line(r.stderr), r.stderr
    assert not (out / "metrics.jsonl").exists() and not (out / "summary.json").exists()


# ------------------------------------------------------------------------------ 3. a NaN centroid

def test_a_nan_centroid_is_refused_on_load(world, tmp_path):
    np = pytest.importorskip("numpy")
    part = copy_partition(world, tmp_path / "part")
    c = np.load(part / "centroids.npy")
    c[1, 3] = np.nan
    np.save(part / "centroids.npy", c)
    r = subprocess.run([MOIN, "route", "--partition", str(part)], input="boat wave sail\n", capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "centroid 1 holds a non-finite value" in last_line(r.stderr), r.stderr


# ------------------------------------------------------------------------------ 4. tokenizers that do not match

def test_eval_ppl_refuses_a_tokenizer_neither_the_partition_nor_the_base_used(world, tmp_path):
    write_corpus(tmp_path / "other.jsonl", 60, 9)
    moin("tokenizer", "train", "--input", tmp_path / "other.jsonl", "--output", tmp_path / "other", "--vocab-size",
         300, "-q", check=True)
    r = moin(*ppl_args(world, **{"--tokenizer": tmp_path / "other.model"}))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "is not the one the partition" in last_line(r.stderr), r.stderr
    # The partition's own tokenizer, named explicitly, is fine.
    r = moin(*ppl_args(world, **{"--tokenizer": world / "tok" / "tok.model"}))
    assert r.returncode == 0, r.stderr[-2000:]


def test_generate_refuses_a_tokenizer_smaller_than_the_vocabulary_up_front(world, tmp_path):
    write_corpus(tmp_path / "small.jsonl", 60, 5)
    moin("tokenizer", "train", "--input", tmp_path / "small.jsonl", "--output", tmp_path / "small", "--vocab-size",
         300, "-q", check=True)
    args = ["generate", "--model", world / "base", "--tokenizer", tmp_path / "small.model", "--prompt", "boat",
            "--max-new-tokens", 40]
    r = moin(*args)
    assert r.returncode == 2, r.stderr[-2000:]
    msg = last_line(r.stderr)
    assert "the tokenizer has 300 tokens but the model's vocabulary has 320" in msg and "mask_unused_ids" in msg, msg
    # A padded vocabulary, said so: ids the tokenizer cannot decode are never sampled.
    r = moin(*args, "--set", "generation.mask_unused_ids=true", "--set", "generation.temperature=1.0")
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("line, what", [("[999999, -5]", "999999 is outside the vocabulary"),
                                        ("5 seven 9", "\"seven\" is not a token id")])
def test_tokenizer_decode_refuses_ids_it_cannot_decode(world, line, what):
    r = subprocess.run([MOIN, "tokenizer", "decode", "--model", str(world / "tok" / "tok.model")], input=line + "\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and what in last_line(r.stderr), (r.stdout, r.stderr)


# ------------------------------------------------------------------------------ 5. NaN adapters

def nan_adapter(world, dst):
    st = pytest.importorskip("safetensors.torch")
    shutil.copytree(world / "experts" / "0", dst)
    t = st.load_file(str(dst / "adapter_model.safetensors"))
    name = sorted(k for k in t if "lora_B" in k)[0]
    t[name].view(-1)[:64] = float("nan")
    st.save_file(t, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    return name


def test_lora_merge_and_generate_refuse_a_nan_adapter(world, tmp_path):
    name = nan_adapter(world, tmp_path / "bad")
    r = moin("lora", "merge", "--model", world / "base", "--adapter", tmp_path / "bad", "--output", tmp_path / "merged")
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{name} holds NaN or infinite values" in last_line(r.stderr), r.stderr
    assert not (tmp_path / "merged" / "model.safetensors").exists()
    r = moin("generate", "--model", world / "base", "--tokenizer", world / "tok" / "tok.model", "--adapter",
             tmp_path / "bad", "--prompt", "boat", "--max-new-tokens", 4)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr[-2000:])
    assert "holds NaN or infinite values" in last_line(r.stderr), r.stderr


# ------------------------------------------------------------------------------ 6. output = input

def test_train_refuses_an_output_inside_its_partition_or_base(world, tmp_path):
    part = copy_partition(world, tmp_path / "part")
    before = snapshot(part)
    log_size = os.path.getsize(part / "moin.log") if (part / "moin.log").exists() else -1
    cfg = train_config(tmp_path / "t.json", part, world / "base")
    for out, what in ((part, "partition"), (part / "clusters", "partition"), (world / "base", "base model")):
        r = moin("train", "--config", cfg, "--output", out)
        assert r.returncode == 2, r.stderr[-2000:]
        assert f"is the {what}" in last_line(r.stderr), r.stderr
    assert snapshot(part) == before  # no adapter, no config written there
    assert (os.path.getsize(part / "moin.log") if (part / "moin.log").exists() else -1) == log_size  # nor a log


def test_partition_refuses_an_output_that_holds_its_input(world, tmp_path):
    os.makedirs(tmp_path / "in")
    shutil.copy(world / "corpus" / "train.jsonl", tmp_path / "in" / "train.jsonl")
    before = snapshot(tmp_path / "in")
    for inp in (tmp_path / "in" / "train.jsonl", tmp_path / "in", str(tmp_path / "in" / "*.jsonl")):
        r = moin("partition", "--input", inp, "--tokenizer", world / "tok" / "tok.model", "--clusters", 2, "--output",
                 tmp_path / "in")
        assert r.returncode == 2, r.stderr[-2000:]
        assert "the partition would write among the corpus's files" in last_line(r.stderr), r.stderr
    # An output folder inside a folder input would be read back as corpus on the next run.
    r = moin("partition", "--input", tmp_path / "in", "--tokenizer", world / "tok" / "tok.model", "--clusters", 2,
             "--output", tmp_path / "in" / "part")
    assert r.returncode == 2 and "is a folder that holds the output folder" in last_line(r.stderr), r.stderr
    assert snapshot(tmp_path / "in") == before


# ------------------------------------------------------------------------------ 7. deeply nested JSON

def test_deeply_nested_json_is_refused_cleanly_everywhere(world, tmp_path):
    deep = '{"lr": ' + "[" * 100000 + "]" * 100000 + "}"
    (tmp_path / "deep.json").write_text(deep)
    r = moin("train", "--config", tmp_path / "deep.json", "--output", tmp_path / "o")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "nested deeper than 256 levels" in last_line(r.stderr), r.stderr
    r = moin("train", "--config", train_config(tmp_path / "t.json", world / "part", world / "base"), "--output",
             tmp_path / "o", "--set", "lr=" + "[" * 10000 + "]" * 10000)
    assert r.returncode == 2 and "nested deeper than 256 levels" in last_line(r.stderr), r.stderr[-2000:]
    # A corpus line that deep is a malformed line, counted, not a crash.
    data = tmp_path / "valid.jsonl"
    shutil.copy(world / "corpus" / "valid.jsonl", data)
    with open(data, "a") as f:
        f.write('{"text": ' + "[" * 100000 + "]" * 100000 + "}\n")
    r = moin(*ppl_args(world, **{"--data": data}))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "malformed_json" in r.stderr or "malformed" in r.stderr, r.stderr[-2000:]


def test_a_json_syntax_error_says_where_without_the_librarys_prefix(world, tmp_path):
    (tmp_path / "bad.json").write_text('{"lr": 1e-3,\n "max_steps": x}\n')
    r = moin("train", "--config", tmp_path / "bad.json", "--output", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    msg = last_line(r.stderr)
    assert "invalid JSON at line 2, column" in msg and "[json.exception" not in msg, msg


# ------------------------------------------------------------------------------ 8. fair rows with missing experts

def test_every_system_faces_the_same_experts_when_some_are_missing(world, tmp_path):
    # Three clusters: 0 has an expert, 1 was too small (routes to the base by design), 2 is missing (a failed job).
    part = tmp_path / "part3"
    moin("partition", "--input", world / "corpus" / "train.jsonl", "--text-field", "text", "--label-field", "label",
         "--tokenizer", world / "tok" / "tok.model", "--clusters", 3, "--output", part, "--valid-fraction", 0.1,
         "--set", "embedder.dim=16", "--set", "threads=2", "-q", check=True)
    experts = tmp_path / "experts"
    moin("lora", "init", "--model", world / "base", "--output", experts / "0", "-r", 4, "--seed", 0, "--random-b",
         "-q", check=True)
    os.makedirs(experts / "1")
    json.dump({"mode": "expert", "status": "too_small", "clusters": [1], "train_tokens": 3, "min_train_tokens": 99},
              open(experts / "1" / "summary.json", "w"))
    report = tmp_path / "report"
    r = moin(*ppl_args(world, **{"--partition": part, "--experts": experts}), "--set", "oracle=true",
             "--set", "cbtm=true", "--json", report / "ppl.json", "--markdown", report / "ppl.md")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "left out of every system" in r.stderr
    j = json.load(open(report / "ppl.json"))
    assert j["experts"] == {"clusters": 3, "trained": 1, "too_small": [1], "left_out": [2]}
    assert 2 not in j["documents"]["routed"] and set(j["documents"]["oracle"]) <= {0, -1}
    md = open(report / "ppl.md").read()
    assert "3 clusters: 1 experts, 1 too small for one (scored with the base), 1 missing (clusters 2: left out of every " \
           "system)" in md, md
    # The random system draws from clusters 0 and 1 (1 gives the base), as the router chooses among them.
    sysd = {s["key"]: s for s in j["systems"]}
    assert sysd["random"]["tokens"] == sysd["moin"]["tokens"] == sysd["base"]["tokens"]
    # Chance agreement with the oracle: one in the experts it chose among (1), not 1/K.
    r = moin("eval", "routing", "--data", world / "corpus" / "valid.jsonl", "--partition", part, "--ppl-json",
             report / "ppl.json", "--json", report / "routing.json", "--markdown", report / "routing.md",
             "--set", "latency_queries=0")
    assert r.returncode == 0, r.stderr[-3000:]
    rj = json.load(open(report / "routing.json"))
    assert rj["oracle"]["chance"] == 1.0 and rj["oracle"]["choices"] == 1, rj["oracle"]
    assert "1 in the 1 trained experts it chose among" in open(report / "routing.md").read()


# ------------------------------------------------------------------------------ 9. launch shows the cause

def test_launch_names_a_failed_jobs_cause_and_does_not_retry_a_user_error(world, tmp_path):
    cfg = json.load(open(train_config(tmp_path / "t.json", world / "part", world / "base", max_steps=2)))
    del cfg["base"]
    json.dump(cfg, open(tmp_path / "nobase.json", "w"))
    r = moin("launch", "--partition", world / "part", "--config", tmp_path / "nobase.json", "--output",
             tmp_path / "experts", "--gpus", "none", "--clusters", 0, "--retries", 2)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "expert mode needs the base model (--base DIR)" in r.stdout + r.stderr, (r.stdout, r.stderr[-3000:])
    table = [l.split() for l in r.stdout.splitlines() if l.startswith("0 ")]
    assert table and table[0][1] == "failed" and table[0][2] == "1", r.stdout  # one attempt: exit 2 is not retried
    # launch has a --base flag for exactly this.
    r = moin("launch", "--partition", world / "part", "--config", tmp_path / "nobase.json", "--base", world / "base",
             "--output", tmp_path / "experts", "--gpus", "none", "--clusters", 0)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "experts" / "0" / "adapter_model.safetensors").exists()


def test_launch_shows_the_progress_of_running_jobs(world, tmp_path):
    cfg = train_config(tmp_path / "t.json", world / "part", world / "base", cluster=-1, max_steps=8, fault_sleep_s=0.4)
    r = moin("launch", "--partition", world / "part", "--config", cfg, "--output", tmp_path / "experts", "--gpus",
             "none", "--experts-per-job", 2, "--status-every-s", 0.5)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "clusters 0-1 at step" in r.stderr and "of 2 clusters finished" in r.stderr, r.stderr[-3000:]


# ------------------------------------------------------------------------------ 10. unknown flags

@pytest.mark.parametrize("args, flag, best", [(["partition", "--clusterz", "4"], "--clusterz", "--clusters"),
                                               (["train", "--lr-x", "3"], "--lr-x", "--lr"),
                                               (["eval", "ppl", "--dat", "x"], "--dat", "--data"),
                                               (["launch", "--jobz=2"], "--jobz", "--jobs")])
def test_an_unknown_flag_is_named_with_the_closest_valid_one(args, flag, best):
    r = moin(*args)
    assert r.returncode == 2, r.stderr
    msg = last_line(r.stderr)
    assert msg.startswith("moin: error: unknown flag " + flag) and f"did you mean {best}?" in msg, msg


# ------------------------------------------------------------------------------ 11. the documented forms work

def test_embed_from_takes_a_partition_folder(world, tmp_path):
    queries = "boat wave sail harbour\nbread butter onion\n"
    a = subprocess.run([MOIN, "embed", "--from", str(world / "part")], input=queries, capture_output=True, text=True)
    b = subprocess.run([MOIN, "embed", "--from", str(world / "part" / "embedder")], input=queries, capture_output=True,
                       text=True)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr[-2000:], b.stderr[-2000:])
    assert a.stdout == b.stdout and len(a.stdout.splitlines()) == 2


def test_partition_has_the_encoder_flag_the_docs_name():
    r = moin("partition", "--help")
    assert r.returncode == 0 and "--encoder" in r.stdout, r.stdout


# ------------------------------------------------------------------------------ 12. the smaller ones

def test_lora_merge_copies_the_tokenizer(world, tmp_path):
    shutil.copytree(world / "base", tmp_path / "base")
    shutil.copy(world / "tok" / "tok.model", tmp_path / "base" / "tokenizer.model")
    moin("lora", "merge", "--model", tmp_path / "base", "--adapter", world / "experts" / "0", "--output",
         tmp_path / "merged", "-q", check=True)
    assert open(tmp_path / "merged" / "tokenizer.model", "rb").read() == open(world / "tok" / "tok.model", "rb").read()
    # So the merged model generates without --tokenizer.
    r = moin("generate", "--model", tmp_path / "merged", "--prompt", "boat", "--max-new-tokens", 3)
    assert r.returncode == 0, r.stderr[-2000:]


def test_help_and_config_show_what_a_user_needs_and_nothing_else():
    r = moin("embed", "--help")
    assert r.returncode == 0 and "Config keys" in r.stdout and "from" in r.stdout, r.stdout
    r = moin("config", "train")
    assert r.returncode == 0 and "fault_" not in r.stdout and "max_steps" in r.stdout, r.stdout


def test_train_without_a_length_names_both_flags(world, tmp_path):
    cfg = json.load(open(train_config(tmp_path / "t.json", world / "part", world / "base")))
    del cfg["max_steps"]
    json.dump(cfg, open(tmp_path / "nolen.json", "w"))
    r = moin("train", "--config", tmp_path / "nolen.json", "--output", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    msg = last_line(r.stderr)
    assert "--max-steps" in msg and "--token-budget" in msg, msg


def test_eval_ppl_counts_passes_not_docs_and_plots_the_change_against_the_base(world, tmp_path):
    r = moin(*ppl_args(world), "--json", tmp_path / "rep" / "ppl.json")
    assert r.returncode == 0, r.stderr[-2000:]
    docs = json.load(open(tmp_path / "rep" / "ppl.json"))["docs"]
    assert f"eval ppl: {docs} documents," in r.stderr and "scoring passes" in r.stderr, r.stderr[-2000:]
    done = [l for l in r.stderr.splitlines() if "eval ppl:" in l and "(done)" in l]
    assert done and " passes (100.0%)" in done[-1] and " docs" not in done[-1], r.stderr[-2000:]
    if shutil.which("gnuplot") is None:
        pytest.skip("gnuplot is not installed: the plots are not drawn (scripts/setup.sh installs gnuplot-nox)")
    rep = tmp_path / "rep"
    assert (rep / "perplexity_change.png").exists() and (rep / "perplexity.png").exists()
    gp = open(rep / "perplexity_change.gp").read()
    assert "set yrange [0:" not in gp and "set xzeroaxis" in gp, gp
    # Every system but the base, as a change in percent.
    rows = [l.split() for l in open(rep / "perplexity_change.dat")]
    assert len(rows) == len(json.load(open(rep / "ppl.json"))["systems"]) - 1


def test_bar_labels_are_wrapped_and_counts_have_no_decimals(world, tmp_path):
    if shutil.which("gnuplot") is None:
        pytest.skip("gnuplot is not installed: the plots are not drawn (scripts/setup.sh installs gnuplot-nox)")
    rep = tmp_path / "rep"
    r = moin(*ppl_args(world), "--set", "cbtm=true", "--json", rep / "ppl.json")
    assert r.returncode == 0, r.stderr[-2000:]
    gp = open(rep / "perplexity.gp").read()
    assert '"c-BTM (top-2,\\nT=0.1)"' in gp or "\\n" in gp.split("set xtics (")[1].split(")\n")[0], gp
    r = moin("eval", "routing", "--data", world / "corpus" / "valid.jsonl", "--partition", world / "part",
             "--json", rep / "routing.json", "--set", "latency_queries=0")
    assert r.returncode == 0, r.stderr[-2000:]
    gp = open(rep / "cluster_sizes.gp").read()
    assert "%.0f" in gp and "%.2f" not in gp, gp
