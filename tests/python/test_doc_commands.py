"""Every `moin ...` command line of README.md and docs/*.md, run on a tiny world, so that the docs cannot drift.

What counts as a command: a line of a fenced code block (info string sh, bash, shell, console or none; cpp,
json and text blocks are not shell) whose first word is `moin` or `build/bin/moin`
(`\\` continuations joined, a trailing `# comment` dropped); lines of a `for VAR in A B; do ... done` loop run
with VAR set to its first value. C++ snippets, layout listings and other tools' lines (scripts/*.sh,
.venv/bin/python, bash) are not commands.

How a documented line becomes a runnable one (`runnable()`), in this order:
1. its entry in RUN (keyed by the line's text, whitespace collapsed): `sub` replaces text (a completion
   of a `...` that stands for "the other flags", or a size too large for the tiny world);
2. optional groups `[...]` are KEPT, brackets removed, so that every documented flag is exercised; only
   the groups in DROP_GROUPS (a GPU) and in the entry's `drop` are left out;
3. alternatives `a|b` take the first;
4. PLACEHOLDERS (DIR, BASE_DIR, ADAPTER_DIR, "...", ...) become tiny-world files; every other name a
   command uses (part, base, experts, tok.model, train.jsonl, RUN/..., stories260K.bin, ...) exists under
   that very name in the tiny world (WORLD lists them);
5. the entry's `append` (small overrides such as `--set max_steps=2`) is added at the end.
A `...` or an upper-case placeholder left after that is an error naming the command to map.

Each command runs with `bash -c` in its own copy of the world, where `moin` (on PATH) and `build/bin/moin`
are the binary under test (MOIN_BIN, else ROOT/build/bin/moin), after the entry's `setup` (the doc's
preceding steps), with the entry's `stdin` file (else /dev/null) and its `env`; it must exit with `rc`
(default 0), then the entry's `check` must succeed. Commands that cannot run here are in SKIP with the
reason. test_every_doc_command_is_run_or_skipped fails for a doc line that is in neither table, and for a
table entry that no doc line matches any more.
"""
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from array import array

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tiny_world import MOIN, ROOT, TOPICS  # noqa: E402

DOCS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                              if f.endswith(".md"))

# Symbolic names of the docs -> tiny-world files (regular expressions, applied in order).
PLACEHOLDERS = [
    (r'"\.\.\."', '"the boat sails past the harbour"'),   # --prompt "...", --text "..."
    (r"/path/to/all-MiniLM-L6-v2", "encoder"),             # a sentence-transformers folder
    (r"--encoder DIR\b", "--encoder encoder"),
    (r"--model DIR\b", "--model base"),                   # embed --embedder model --model DIR
    (r"\bBASE_DIR\b", "base"),
    (r"\bADAPTER_DIR\b", "adapter"),
    (r"\bMERGED_DIR\b", "merged"),
    (r"\bPARTITION_DIR\b", "part"),
    (r"--tokenizer FILE\b", "--tokenizer tok.model"),
    (r"--tokenizer TOK\b", "--tokenizer RUN/tokenizer/tok.model"),
    (r"--layer N\b", "--layer -1"),
    (r"--max-length N\b", "--max-length 32"),
    (r"--prefix-tokens P\b", "--prefix-tokens 4"),
    (r"--top-k N\b", "--top-k 2"),
    (r"--text-field F\b", "--text-field text"),
    (r"\bsome/config\.json\b", "tiny/config.json"),
]

# Names the docs use literally, as they exist in the tiny world (each case's working folder).
WORLD = {
    "train.jsonl": "450 documents of 3 topics (sea, code, food): text, label, meta.pile_set_name",
    "valid.jsonl": "60 held-out documents, same fields",
    "corpus.txt": "train.jsonl's texts, one per line",
    "corpus.jsonl.zst": "train.jsonl, zstd-compressed",
    "shards/00.jsonl.zst": "half of train.jsonl (also shards/01.jsonl.zst)",
    "data/demo/train.jsonl": "train.jsonl (configs/tiny*.json read data/demo/)",
    "data/demo/valid.jsonl": "valid.jsonl",
    "configs/tiny-bpe.json": "a copy of ROOT/configs/",
    "texts.txt": "plain text lines",
    "texts.jsonl": "corpus records",
    "queries.txt": "plain text queries",
    "queries.jsonl": 'one {"text": ...} query a line',
    "ids.txt": "space-separated token ids a line (tokenizer decode's stdin)",
    "ids.jsonl": "JSON id lists (tokenizer decode --jsonl's stdin)",
    "labels.txt": "a label a line (eval nmi)",
    "clusters.txt": "a cluster id a line, same order",
    "tok.model": "SentencePiece BPE, 320 pieces, trained on train.jsonl",
    "tok512.model": "the same tokenizer under stories260K's tokenizer name",
    "stories260K.bin": "a random llama2.c legacy checkpoint: dim 32, 5 layers, vocab 320, seq_len 512",
    "base": "stories260K.bin converted (`moin convert llama2c`), with tokenizer.model",
    "models/stories260K": "the same model",
    "models/tiny": "the same model",
    "tiny/config.json": "its config.json (full-mode pre-training from scratch)",
    "part": "a 6-cluster tf-idf partition of train.jsonl (labels meta.pile_set_name)",
    "train.json": "a tiny expert train config (base, seq_len 32, 4 steps, rank 4, CPU)",
    "experts": "experts/0..5 trained on part and base (one pack)",
    "adapter": "a --random-b LoRA adapter of base",
    "encoder": "a tiny random BERT sentence-transformers folder (vocab.txt of the corpus words)",
    "RUN": "`moin run configs/tiny.json` on train/valid.jsonl: partition, base, experts, dense, cpt, "
           "mixture, peer, configs/, report/",
}

# The groups `[...]` never kept, with the reason.
DROP_GROUPS = {"--device cuda": "needs a GPU"}

# Commands that cannot run here, by their text (whitespace collapsed) -> reason.
SKIP = {
    "moin run configs/shared-corpus.json --set output=RUN":
        "needs ../shared/data (the shared corpus) and 26+ minutes; its stage configs are run on RUN below",
    "moin partition --input ../shared/data/corpus/train.jsonl --text-field text --label-field meta.pile_set_name "
    "--tokenizer ../shared/data/models/stories260K/tok512.model --clusters 10 --embedder model --model stories260K "
    "--output part --set embedder.layer=-1 --set embedder.max_length=128 --set sample=5000":
        "needs ../shared/data (the shared corpus and stories260K); the same flags run on the tiny world in "
        "docs/partition-embed.md's CLI block",
    "moin run configs/demo.json [--output runs/x] [--set expert.max_steps=100]":
        "the 10-minute demo (scripts/demo.sh); configs/tiny-bpe.json runs the same pipeline here",
}

TRAIN_SMALL = " --set max_steps=2"
FIT_64 = ("moin partition fit --input 'shards/*.jsonl.zst' --text-field text --tokenizer tok.model --clusters 64 "
          "--output part/")

# Commands that run, by their text (whitespace collapsed) -> how (keys: see the module docstring).
RUN = {
    # README.md
    "moin tokenizer train --input corpus.txt --output tok --vocab-size 4096 [--model-type bpe|unigram]": dict(
        sub=[("--vocab-size 4096", "--vocab-size 300")],  # the tiny corpus has fewer than 4096 pieces
        check="test -s tok.model && test -s tok.vocab"),
    'moin tokenizer encode --model tok.model|tokenizer.json [--text "..."] [--bos] [--jsonl]': dict(
        append=" > out.txt", check="grep -q '^\\[1,' out.txt"),  # --text with --jsonl: one JSON list, BOS first
    "moin tokenizer decode --model tok.model|tokenizer.json [--skip-special] [--jsonl]": dict(
        stdin="ids.jsonl", append=" > out.txt", check="test $(wc -l < out.txt) = 3"),
    # docs/compare.md (the loop body, s=1, on RUN's stage configs)
    "moin train --config RUN/configs/mixture_train.json --set output=mixture-s$s --set seed=$s": dict(
        check="test -f mixture-s1/summary.json"),
    "moin train --config RUN/configs/peer_train.json --set output=peer-s$s --set seed=$s": dict(
        check="test -f peer-s1/summary.json"),
    "moin eval ppl --config RUN/configs/eval_ppl.json --set oracle=false --set random=false --set cbtm=false "
    "--set arrow=false --set mixture=mixture-s$s --set peer=peer-s$s --json ppl-s$s.json": dict(
        setup="ln -s RUN/mixture mixture-s1 && ln -s RUN/peer peer-s1",  # the seed-0 runs stand in
        check="test -s ppl-s1.json"),
    # docs/encoder.md
    "moin partition --embedder encoder --encoder /path/to/all-MiniLM-L6-v2 ...": dict(
        sub=[("...", "--input train.jsonl --tokenizer tok.model --clusters 3 --output part-encoder")],
        check="grep -q '\"encoder\"' part-encoder/embedder/embedder.json && test -f part-encoder/manifest.json"),
    "moin embed --encoder DIR < texts.txt": dict(append=" > out.txt", check="test $(wc -l < out.txt) = 4"),
    "moin embed --encoder DIR --ids < texts.jsonl": dict(append=" > out.txt", check="test $(wc -l < out.txt) = 3"),
    "moin embed --from PARTITION_DIR < queries.txt": dict(append=" > out.txt", check="test $(wc -l < out.txt) = 3"),
    # docs/lora.md
    "moin lora init --model BASE_DIR --output ADAPTER_DIR [--rank 16] [--alpha 32] [--seed 0] "
    "[--targets q_proj v_proj ...] [--set use_rslora=true] [--set dropout=0.05] [--random-b]": dict(
        sub=[("v_proj ...", "v_proj o_proj")], setup="rm -rf adapter",
        check="test -f adapter/adapter_model.safetensors"),
    "moin lora merge --model BASE_DIR --adapter ADAPTER_DIR --output MERGED_DIR [--dtype float32]": dict(
        check="test -f merged/model.safetensors"),
    'moin generate --model BASE_DIR --adapter ADAPTER_DIR --prompt "..."': dict(),
    'moin logits --model BASE_DIR --adapter ADAPTER_DIR --tokens "1 5 9" --output logits.safetensors': dict(
        check="test -s logits.safetensors"),
    "moin config lora": dict(),
    # docs/model.md
    "moin convert llama2c --input stories260K.bin --output models/stories260K --tokenizer tok512.model "
    "[--dtype bfloat16]": dict(setup="rm -rf models/stories260K",
                               check="test -f models/stories260K/tokenizer.model"),
    "moin init-model --output models/tiny --seed 0 [--model-config some/config.json] [--set model.hidden_size=512] "
    "[--set model.model_type=qwen2] [--max-shard-size 2GB]": dict(
        setup="rm -rf models/tiny", check="grep -q qwen2 models/tiny/config.json"),
    "moin config init-model": dict(),
    'moin generate --model models/stories260K [--tokenizer tok.model] [--adapter experts/3] --prompt "Once" '
    "--max-new-tokens 100 --temperature 0 [--top-p 0.9] [--seed 1] [--dtype bfloat16] [--device cuda]": dict(),
    'moin logits --model models/tiny --tokens "1 15 27" --output logits.safetensors [--hidden-layer -1]': dict(
        check="test -s logits.safetensors"),
    # docs/partition-embed.md
    "moin convert llama2c --input stories260K.bin --tokenizer tok512.model --output models/stories260K": dict(
        setup="rm -rf models/stories260K", check="test -f models/stories260K/model.safetensors"),
    "moin partition --input train.jsonl --tokenizer tok512.model --clusters 10 --output part --embedder model "
    "--model models/stories260K --set embedder.layer=3 --set sample=5000": dict(
        setup="rm -rf part", check="grep -q '\"model\"' part/embedder/embedder.json"),
    "moin embed --from part/embedder < queries.txt": dict(append=" > out.txt", check="test $(wc -l < out.txt) = 3"),
    "moin embed --embedder model --model DIR [--tokenizer FILE] [--layer N] [--max-length N] < texts.txt": dict(
        append=" > out.txt", check="test $(wc -l < out.txt) = 4"),
    "moin eval nmi --labels labels.txt --clusters clusters.txt [--top 3]": dict(),
    # docs/partition.md
    "moin partition --input corpus.jsonl.zst --text-field text --label-field meta.pile_set_name "
    "--tokenizer tok.model --clusters 16 --embedder tfidf --output part/": dict(
        setup="rm -rf part", check="test -f part/manifest.json"),
    FIT_64: dict(setup="rm -rf part", check="test -f part/fit.json"),
    "moin partition assign --output part/ --shard $I --num-shards 32": dict(
        env={"I": "0"}, setup="rm -rf part && " + FIT_64),
    "moin partition merge --output part/": dict(
        setup="rm -rf part && " + FIT_64 + " && moin partition assign --output part/ --num-shards 32",
        check="test -f part/manifest.json"),
    "moin partition ... --clusters 10 --set kmeans.balance_factor=1.5": dict(
        sub=[("...", "--input train.jsonl --tokenizer tok.model --output part-balanced")],
        check="grep -q balance part-balanced/manifest.json"),
    # docs/route-eval.md
    "moin route --partition RUN/partition [--prefix-tokens P] [--top-k N] [--text-field F] [--tokenizer TOK] "
    "< queries.jsonl > routes.jsonl": dict(check="test $(wc -l < routes.jsonl) = 3"),
    "moin eval ppl --data valid.jsonl --base RUN/base --partition RUN/partition --experts RUN/experts "
    "[--dense RUN/dense] [--cpt RUN/cpt] [--prefix-tokens 32] [--max-tokens 256] [--json report/ppl.json] "
    "[--markdown report/ppl.md]": dict(check="test -s report/ppl.json && test -s report/ppl.md"),
    "moin eval routing --data valid.jsonl --partition RUN/partition [--prefix-tokens 16 32 64 128 256] "
    "[--ppl-json report/ppl.json] [--json report/routing.json] [--markdown report/routing.md]": dict(
        setup="mkdir -p report && cp RUN/report/ppl.json report/ppl.json",  # eval ppl on the same valid.jsonl
        check="test -s report/routing.json"),
    # docs/tokenizers.md
    "build/bin/moin run configs/tiny-bpe.json": dict(
        setup="$PYTHON $MOIN_SOURCE_DIR/scripts/train_bpe_tokenizer.py --input data/demo/train.jsonl "
              "--output data/demo/bpe/tokenizer.json --kind qwen2 --vocab 1024",  # the doc's line before
        check="test -f runs/tiny-bpe/report/report.md"),
    # docs/train.md
    "moin train --mode expert --partition part --cluster 3 --base base --output experts/3 --config train.json": dict(
        setup="rm -rf experts/3", check="test -f experts/3/adapter_model.safetensors"),
    "moin train --mode dense-lora --partition part --base base --output dense --config train.json": dict(
        check="test -f dense/summary.json"),
    "moin train --mode full --partition part --base base --output cpt --config train.json": dict(
        check="test -f cpt/model.safetensors"),
    "moin train --mode full --partition part --output scratch --set model_config=tiny/config.json "
    "--set max_steps=2000 --set lr=3e-3": dict(append=TRAIN_SMALL, check="test -f scratch/model.safetensors"),
    "moin train --mode expert --partition part --clusters 3,4,5 --base base --output experts "
    "--config train.json": dict(
        setup="rm -rf experts/3 experts/4 experts/5", check="test -f experts/5/summary.json"),
    "moin train --mode mixture --partition part --base base --experts experts --output mixture --config train.json "
    "--mixture-top-k 2 [--mixture-attention] [--mixture-train-experts]": dict(check="test -f mixture/summary.json"),
    "moin train --mode peer --partition part --base base --experts experts --output peer --config train.json": dict(
        check="test -f peer/summary.json"),
    "moin train ... --resume": dict(
        # a run stopped after its checkpoint at step 2 (fault_nan_at_step: the NaN stop, as a kill would), resumed
        sub=[("...", "--mode expert --partition part --cluster 0 --base base --output resumed --config train.json")],
        setup="if moin train --mode expert --partition part --cluster 0 --base base --output resumed "
              "--config train.json --set checkpoint_every=2 --set fault_nan_at_step=3 -q; then exit 1; fi; "
              "test -f resumed/checkpoints/step-00000002.pt && test ! -f resumed/summary.json",
        check="grep -Eq '\"resumed\": *(true|[1-9])' resumed/summary.json"),
    "moin train ... --overwrite": dict(
        # a finished run trained again: the repeat without a flag is refused first
        sub=[("...", "--mode expert --partition part --cluster 0 --base base --output again --config train.json")],
        setup="moin train --mode expert --partition part --cluster 0 --base base --output again --config train.json "
              "-q && if moin train --mode expert --partition part --cluster 0 --base base --output again "
              "--config train.json -q 2>/dev/null; then exit 1; fi",
        check="test -f again/summary.json && test -f again/adapter_model.safetensors"),
    "moin launch --partition part --config train.json --output experts --base base": dict(
        setup="rm -rf experts/2", check="test -f experts/2/summary.json"),
    "moin launch --partition part --config train.json --output experts": dict(
        setup="rm -rf experts/2", check="test -f experts/2/summary.json"),
    "moin launch --partition part --config train.json --output experts --jobs 2 --gpus none": dict(
        setup="rm -rf experts/1 experts/2",
        check="test -f experts/1/summary.json && test -f experts/2/summary.json"),
    "moin launch --partition part --config train.json --output experts --train-set lr=1e-3 --clusters 0 "
    "--clusters 3": dict(
        setup="rm -rf experts/0 experts/3", check="grep -q 0.001 experts/3/train.config.json"),
    "moin launch --partition part --config train.json --output experts --experts-per-job 8": dict(
        setup="rm -rf experts", check="test -f experts/5/summary.json"),
    "moin launch --partition part --config train.json --output experts --slurm experts.sbatch "
    "--set slurm_options.time=12:00:00 --set slurm_options.partition=gpu": dict(
        setup="rm -rf experts", check="test -f experts.sbatch && test -f experts.submit.sh"),
}

SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}
COMMAND_START = re.compile(r"^(moin|build/bin/moin)(\s|$)")


def normalize(text):
    return re.sub(r"\s+", " ", text).strip()


def strip_comment(line):
    """The line without a trailing `# comment` (a # at the start or after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def extract(root=ROOT, files=DOCS):
    """[(file, line, text, loop_env)] of every command line in the fenced code blocks of `files`."""
    found = []
    for rel in files:
        lines = open(os.path.join(root, rel), encoding="utf-8").read().split("\n")
        fenced, in_block, i = False, False, 0
        loops = []  # [(var, first value)] of the enclosing `for` loops
        while i < len(lines):
            raw = lines[i]
            if raw.lstrip().startswith("```"):
                # a block opens with an info string: sh, bash, ... or none counts; cpp, json, text do not
                fenced = not fenced
                in_block, loops = fenced and raw.strip()[3:].strip() in SHELL_BLOCKS, []
                i += 1
                continue
            if not in_block:
                i += 1
                continue
            start, text = i + 1, raw
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            text = normalize(strip_comment(text))
            m = re.match(r"^for (\w+) in (\S+).*; do$", text)
            if m:
                loops.append((m.group(1), m.group(2)))
            elif text == "done" and loops:
                loops.pop()
            elif COMMAND_START.match(text):
                found.append((rel, start, text, dict(loops)))
    return found


def runnable(text, entry):
    """The documented command `text` made runnable on the tiny world (see the module docstring)."""
    cmd = text
    for old, new in entry.get("sub", []):
        assert old in cmd, f"RUN entry for {text!r}: `sub` text {old!r} is not in the command"
        cmd = cmd.replace(old, new, 1)
    drop = set(DROP_GROUPS) | set(entry.get("drop", []))

    def group(m):
        inner = m.group(1).strip()
        return "" if inner in drop else inner
    cmd = re.sub(r"\[([^\[\]]*)\]", group, cmd)
    cmd = " ".join(tok.split("|")[0] if "|" in tok and not tok.startswith(("'", '"')) else tok
                   for tok in cmd.split(" ") if tok != "")
    for pattern, repl in PLACEHOLDERS:
        cmd = re.sub(pattern, repl, cmd)
    cmd = normalize(cmd) + entry.get("append", "")
    left = [t for t in cmd.split() if t == "..." or re.fullmatch(r"[A-Z][A-Z0-9_]*", t.split("/")[0])
            and t.split("/")[0] != "RUN"]
    assert not left, (f"{text!r}: {left} left after the placeholders: add a completion (`sub`) to its RUN "
                      f"entry or a PLACEHOLDERS row")
    return cmd


COMMANDS = extract()
RUNNING = [(f, line, text, env) for f, line, text, env in COMMANDS if text in RUN]


def test_every_doc_command_is_run_or_skipped(capsys):
    found = {text for _, _, text, _ in COMMANDS}
    unmapped = [f"{f}:{line}: {text}" for f, line, text, _ in COMMANDS if text not in RUN and text not in SKIP]
    both = sorted(set(RUN) & set(SKIP))
    stale = [f"RUN: {t}" for t in RUN if t not in found] + [f"SKIP: {t}" for t in SKIP if t not in found]
    skipped = [(f, line, text) for f, line, text, _ in COMMANDS if text in SKIP]
    with capsys.disabled():
        print(f"\ndoc commands: {len(COMMANDS)} found in {len(DOCS)} files, {len(RUNNING)} run, "
              f"{len(skipped)} not run (SKIP table):")
        for f, line, text in skipped:
            print(f"  {f}:{line}: {SKIP[text]}")
    problems = []
    if unmapped:
        problems.append("doc command lines that are neither in RUN nor in SKIP of tests/python/test_doc_commands.py "
                        "(map each one):\n  " + "\n  ".join(unmapped))
    if stale:
        problems.append("table entries that match no doc command any more (update or remove them):\n  "
                        + "\n  ".join(stale))
    if both:
        problems.append(f"in both RUN and SKIP: {both}")
    assert not problems, "\n".join(problems)
    for text, entry in RUN.items():
        runnable(text, entry)  # every mapping resolves every placeholder


def test_extraction_joins_continuations_and_drops_comments(tmp_path):
    (tmp_path / "x.md").write_text("```text\nmoin diagram\n```\n```sh\nmoin a \\\n    --b 1   # note\nscripts/x.sh\n"
                                   "for s in 1 2; do\n  build/bin/moin c --n $s\ndone\n```\n```cpp\nauto x;\n```\n"
                                   "moin outside a block\n")
    assert extract(str(tmp_path), ["x.md"]) == [("x.md", 5, "moin a --b 1", {}),
                                                ("x.md", 9, "build/bin/moin c --n $s", {"s": "1"})]
    assert runnable("moin x [--a b|c] [--device cuda] --m DIR_X|y", {"sub": [("DIR_X", "d")]}) == "moin x --a b --m d"


# ---- the tiny world ----

def write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def documents(n_per_topic, seed):
    rng = random.Random(seed)
    docs = []
    for _ in range(n_per_topic):
        for topic, words in TOPICS.items():
            docs.append({"text": " ".join(rng.choice(words) for _ in range(rng.randint(20, 60))), "label": topic,
                         "meta": {"pile_set_name": topic}})
    rng.shuffle(docs)
    return docs


def zstd_raw(data):
    """A zstd frame of raw (stored) blocks: what the zstd tool would write, uncompressed."""
    out = bytearray(struct.pack("<I", 0xFD2FB528)) + bytes([0x00, 0x38])  # no checksum; window 128 KiB
    block = 1 << 17
    chunks = [data[i:i + block] for i in range(0, len(data), block)] or [b""]
    for n, chunk in enumerate(chunks):
        header = (len(chunk) << 3) | (0 << 1) | (1 if n == len(chunks) - 1 else 0)
        out += struct.pack("<I", header)[:3] + chunk
    return bytes(out)


def write_llama2c(path, dim=32, hidden=64, layers=5, heads=2, kv=2, vocab=320, seq=512, seed=0):
    """A random llama2.c checkpoint in the legacy layout (shared classifier)."""
    rng = random.Random(seed)
    head, kv_dim = dim // heads, kv * (dim // heads)

    def rand(n, scale=0.1):
        return array("f", (rng.gauss(0.0, scale) for _ in range(n)))
    ones = lambda n: array("f", [1.0] * n)  # noqa: E731
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq))
        for part in ([rand(vocab * dim)] + [ones(dim) for _ in range(layers)] +
                     [rand(dim * dim) for _ in range(layers)] + [rand(kv_dim * dim) for _ in range(layers)] +
                     [rand(kv_dim * dim) for _ in range(layers)] + [rand(dim * dim) for _ in range(layers)] +
                     [ones(dim) for _ in range(layers)] + [rand(hidden * dim) for _ in range(layers)] +
                     [rand(dim * hidden) for _ in range(layers)] + [rand(hidden * dim) for _ in range(layers)] +
                     [ones(dim), array("f", [0.0] * (seq * head))]):
            part.tofile(f)


def write_safetensors(path, tensors):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, (shape, values) in tensors.items():
        data = array("f", values).tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_encoder(d, seed=0):
    """A tiny random BERT in the sentence-transformers layout (mean pooling, normalised)."""
    os.makedirs(os.path.join(d, "1_Pooling"))
    words = sorted({w for ws in TOPICS.values() for w in ws})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + words + \
        [c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    H, I, L, P = 16, 32, 2, 64
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": len(vocab), "hidden_size": H,
              "num_hidden_layers": L, "num_attention_heads": 2, "intermediate_size": I,
              "max_position_embeddings": P, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
              "position_embedding_type": "absolute", "pad_token_id": 0}
    files = {"config.json": config, "tokenizer_config.json": {"do_lower_case": True, "model_max_length": P},
             "sentence_bert_config.json": {"max_seq_length": P, "do_lower_case": False},
             "modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                              {"idx": 1, "name": "1", "path": "1_Pooling",
                               "type": "sentence_transformers.models.Pooling"},
                              {"idx": 2, "name": "2", "path": "2_Normalize",
                               "type": "sentence_transformers.models.Normalize"}],
             "1_Pooling/config.json": {"word_embedding_dimension": H, "pooling_mode_cls_token": False,
                                       "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                       "pooling_mode_mean_sqrt_len_tokens": False}}
    for name, content in files.items():
        with open(os.path.join(d, name), "w") as f:
            json.dump(content, f)
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    rng = random.Random(seed)
    t = {}

    def add(name, shape, kind="rand"):
        n = 1
        for s in shape:
            n *= s
        t[name] = (shape, [1.0] * n if kind == "one" else [0.0] * n if kind == "zero" else
                   [rng.gauss(0.0, 0.5) for _ in range(n)])
    add("embeddings.word_embeddings.weight", [len(vocab), H])
    add("embeddings.position_embeddings.weight", [P, H])
    add("embeddings.token_type_embeddings.weight", [2, H])
    add("embeddings.LayerNorm.weight", [H], "one")
    add("embeddings.LayerNorm.bias", [H], "zero")
    for layer in range(L):
        p = f"encoder.layer.{layer}."
        for m in ("query", "key", "value"):
            add(p + f"attention.self.{m}.weight", [H, H])
            add(p + f"attention.self.{m}.bias", [H], "zero")
        add(p + "attention.output.dense.weight", [H, H])
        add(p + "attention.output.dense.bias", [H], "zero")
        add(p + "attention.output.LayerNorm.weight", [H], "one")
        add(p + "attention.output.LayerNorm.bias", [H], "zero")
        add(p + "intermediate.dense.weight", [I, H])
        add(p + "intermediate.dense.bias", [I], "zero")
        add(p + "output.dense.weight", [H, I])
        add(p + "output.dense.bias", [H], "zero")
        add(p + "output.LayerNorm.weight", [H], "one")
        add(p + "output.LayerNorm.bias", [H], "zero")
    write_safetensors(os.path.join(d, "model.safetensors"), t)


def moin(cwd, *args):
    r = subprocess.run([MOIN, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"tiny world: moin {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr[-3000:]}"


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The tiny world every command runs in (WORLD), built once with the real CLI; and the PATH shim."""
    assert os.path.exists(MOIN), f"{MOIN}: the moin binary under test is missing (set MOIN_BIN)"
    top = tmp_path_factory.mktemp("doc_commands")
    w = str(top / "world")
    os.makedirs(w)
    train, valid = documents(150, 1), documents(20, 2)
    for d in ("", "data/demo"):
        write_jsonl(os.path.join(w, d, "train.jsonl"), train)
        write_jsonl(os.path.join(w, d, "valid.jsonl"), valid)
    with open(os.path.join(w, "corpus.txt"), "w") as f:
        f.write("".join(r["text"] + "\n" for r in train))
    lines = [json.dumps(r).encode() + b"\n" for r in train]
    with open(os.path.join(w, "corpus.jsonl.zst"), "wb") as f:
        f.write(zstd_raw(b"".join(lines)))
    os.makedirs(os.path.join(w, "shards"))
    for k in range(2):
        with open(os.path.join(w, "shards", f"{k:02d}.jsonl.zst"), "wb") as f:
            f.write(zstd_raw(b"".join(lines[k::2])))
    texts = ["the boat sails past the harbour", "return the pointer to the stack", "roast the garlic in the oven",
             "salt and pepper"]
    with open(os.path.join(w, "texts.txt"), "w") as f:
        f.write("\n".join(texts) + "\n")
    write_jsonl(os.path.join(w, "texts.jsonl"), valid[:3])
    with open(os.path.join(w, "queries.txt"), "w") as f:
        f.write("\n".join(texts[:3]) + "\n")
    write_jsonl(os.path.join(w, "queries.jsonl"), [{"text": t} for t in texts[:3]])
    with open(os.path.join(w, "ids.txt"), "w") as f:
        f.write("1 40 41 42\n50 51\n7\n")
    with open(os.path.join(w, "ids.jsonl"), "w") as f:
        f.write("[1, 40, 41, 42]\n[50, 51]\n[7]\n")
    with open(os.path.join(w, "labels.txt"), "w") as f:
        f.write("".join(r["label"] + "\n" for r in valid))
    with open(os.path.join(w, "clusters.txt"), "w") as f:
        f.write("".join(f"{i % 3}\n" for i in range(len(valid))))
    shutil.copytree(os.path.join(ROOT, "configs"), os.path.join(w, "configs"))

    moin(w, "tokenizer", "train", "--input", "train.jsonl", "--output", "tok", "--vocab-size", 320, "-q")
    shutil.copy(os.path.join(w, "tok.model"), os.path.join(w, "tok512.model"))
    write_llama2c(os.path.join(w, "stories260K.bin"))
    moin(w, "convert", "llama2c", "--input", "stories260K.bin", "--output", "base", "--tokenizer", "tok.model", "-q")
    for d in ("models/stories260K", "models/tiny"):
        shutil.copytree(os.path.join(w, "base"), os.path.join(w, d))
    os.makedirs(os.path.join(w, "tiny"))
    shutil.copy(os.path.join(w, "base", "config.json"), os.path.join(w, "tiny", "config.json"))
    moin(w, "partition", "--input", "train.jsonl", "--label-field", "meta.pile_set_name", "--tokenizer", "tok.model",
         "--clusters", 6, "--output", "part", "--set", "embedder.dim=16", "-q")
    with open(os.path.join(w, "train.json"), "w") as f:
        json.dump({"base": "base", "seq_len": 32, "micro_batch": 4, "max_steps": 4, "lr": 3e-3, "warmup_steps": 1,
                   "lora": {"r": 4, "alpha": 8}, "eval_every": 0, "eval_tokens": 256, "checkpoint_every": 0,
                   "log_every": 2, "num_threads": 1, "device": "cpu"}, f, indent=1)
    moin(w, "train", "--mode", "expert", "--partition", "part", "--clusters", "0,1,2,3,4,5", "--base", "base",
         "--output", "experts", "--config", "train.json", "-q")
    moin(w, "lora", "init", "--model", "base", "--output", "adapter", "-r", 4, "--random-b", "-q")
    write_encoder(os.path.join(w, "encoder"))
    moin(w, "run", "configs/tiny.json", "--output", "RUN", "--set", "train_data=train.jsonl",
         "--set", "valid_data=valid.jsonl", "-q")
    os.makedirs(os.path.join(w, "build", "bin"))
    os.symlink(os.path.abspath(MOIN), os.path.join(w, "build", "bin", "moin"))
    for name in WORLD:
        assert os.path.exists(os.path.join(w, name)), f"tiny world: {name} is missing"
    shim = top / "shim"
    shim.mkdir()
    os.symlink(os.path.abspath(MOIN), shim / "moin")
    return {"dir": w, "top": top, "path": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}


def copy_world(world, dest):
    """A fresh copy of the world at dest, its JSON files' absolute paths pointing into the copy."""
    shutil.copytree(world["dir"], dest, symlinks=True)
    for dirpath, _, files in os.walk(dest):
        for name in files:
            p = os.path.join(dirpath, name)
            if name.endswith(".json") and not os.path.islink(p):
                text = open(p, encoding="utf-8").read()
                if world["dir"] in text:
                    with open(p, "w", encoding="utf-8") as f:
                        f.write(text.replace(world["dir"], dest))


def bash(cmd, cwd, env, stdin=None, timeout=300):
    with open(stdin or os.devnull, "rb") as f:
        return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, stdin=f, capture_output=True, text=True,
                              timeout=timeout)


def tail(r):
    return f"--- stdout (tail)\n{r.stdout[-2000:]}\n--- stderr (tail)\n{r.stderr[-4000:]}"


@pytest.mark.parametrize("doc_file,line,text,loop_env", RUNNING,
                         ids=[f"{f}:{line}" for f, line, _, _ in RUNNING])
def test_doc_command(world, doc_file, line, text, loop_env):
    entry = RUN[text]
    cmd = runnable(text, entry)
    where = f"{doc_file}:{line}"
    case = os.path.join(str(world["top"]), "cases", re.sub(r"[^A-Za-z0-9.]+", "_", where))
    copy_world(world, case)
    env = dict(os.environ, PATH=world["path"], MOIN_SOURCE_DIR=os.path.abspath(ROOT), PYTHON=sys.executable,
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    env.update(loop_env)
    env.update(entry.get("env", {}))
    if entry.get("setup"):
        r = bash("set -e; " + entry["setup"], case, env)
        assert r.returncode == 0, f"{where}: the setup `{entry['setup']}` failed (exit {r.returncode})\n{tail(r)}"
    t0 = time.time()
    stdin = os.path.join(case, entry["stdin"]) if entry.get("stdin") else None
    r = bash(cmd, case, env, stdin, timeout=entry.get("timeout", 300))
    want = entry.get("rc", 0)
    assert r.returncode == want, (f"{where}: `{cmd}` exited {r.returncode} (expected {want}) after "
                                  f"{time.time() - t0:.1f} s\n(documented as: {text})\n{tail(r)}")
    if entry.get("check"):
        c = bash(entry["check"], case, env)
        assert c.returncode == 0, f"{where}: `{cmd}` ran, but the check `{entry['check']}` failed\n{tail(r)}"
    shutil.rmtree(case, ignore_errors=True)
