#!/usr/bin/env python3
"""Assembles the demo corpus: a small labelled multi-domain JSONL corpus from text that Debian ships.

Sources (each skipped with a warning when absent on this machine):
  fortunes  /usr/share/games/fortunes/*    groups of 5 fortunes, meta.label = the fortune file
  foldoc    /usr/share/dictd/foldoc.*      computing dictionary entries (dictd: .index + gzip'd .dict.dz)
  jargon    /usr/share/dictd/jargon.*      hacker jargon entries
  python    /usr/lib/python3.*/*.py        standard-library source, pieces of at most --max-chars
  man       /usr/share/man/man{1,5,8}/*.gz manual pages, troff stripped crudely
  licenses  /usr/share/common-licenses/*   licence texts, pieces of at most --max-chars

Output: OUT/train.jsonl and OUT/valid.jsonl in the Pile's layout
  {"text": "...", "meta": {"pile_set_name": SOURCE, "label": LABEL}}
The split is deterministic: a document goes to valid when sha1(source/key) falls in the first
--valid-percent of the hash space. Documents are capped per source (seeded, deterministic choice) so that
no source dominates. Only Python's standard library is used.
"""
import argparse
import glob
import gzip
import hashlib
import json
import os
import random
import re
import sys


def warn(msg):
    print(f"make-demo-corpus: warning: {msg}", file=sys.stderr)


def pieces(text, max_chars):
    """Splits text at blank lines into pieces of at most ~max_chars (a longer paragraph is cut)."""
    out, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = para.strip("\n")
        if not para.strip():
            continue
        while len(para) > max_chars:
            if cur:
                out.append(cur)
                cur = ""
            out.append(para[:max_chars])
            para = para[max_chars:]
        if cur and len(cur) + len(para) + 2 > max_chars:
            out.append(cur)
            cur = ""
        cur = cur + "\n\n" + para if cur else para
    if cur:
        out.append(cur)
    return out


def fortunes(root, group):
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "*"))):
        name = os.path.basename(path)
        if "." in name or not os.path.isfile(path):
            continue  # .dat indexes, .u8 links
        with open(path, encoding="utf-8", errors="replace") as f:
            items = [x.strip("\n") for x in re.split(r"^%\s*$", f.read(), flags=re.M)]
        items = [x for x in items if x.strip()]
        for i in range(0, len(items), group):
            docs.append(("fortunes", name, f"{name}/{i}", "\n\n".join(items[i:i + group])))
    return docs


def b64num(s):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for ch in s:
        n = n * 64 + alphabet.index(ch)
    return n


def dictd(prefix, source):
    """Entries of a dictd dictionary: PREFIX.index lines 'word<TAB>offset<TAB>length' (base64 numbers)
    into the uncompressed PREFIX.dict.dz (dictzip is gzip-compatible)."""
    with gzip.open(prefix + ".dict.dz", "rb") as f:
        data = f.read()
    docs, seen = [], set()
    with open(prefix + ".index", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00database"):
                continue
            off, ln = b64num(parts[1]), b64num(parts[2])
            if (off, ln) in seen:
                continue
            seen.add((off, ln))
            text = data[off:off + ln].decode("utf-8", errors="replace").strip()
            if len(text) >= 40:
                docs.append((source, source, f"{parts[0]}@{off}", text))
    return docs


def python_stdlib(max_chars):
    dirs = sorted(glob.glob("/usr/lib/python3.*[0-9]"))
    if not dirs:
        return []
    docs = []
    for path in sorted(glob.glob(os.path.join(dirs[-1], "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        name = os.path.basename(path)
        for i, p in enumerate(pieces(text, max_chars)):
            if len(p) >= 200:
                docs.append(("python", "stdlib", f"{name}/{i}", p))
    return docs


TROFF_ESC = re.compile(r"\\f[BIRPC]|\\f\(..|\\f\[[^\]]*\]|\\s[+-]?\d|\\\(..|\\\*\(..|\\\*.|\\[&|^/,%]|\\[eE]")


def strip_troff(src):
    lines = []
    for line in src.splitlines():
        if line.startswith(".\\\"") or line.startswith("'\\\""):
            continue
        if line.startswith(".") or line.startswith("'"):
            m = re.match(r"[.'](SH|SS|BR|BI|IB|IR|RB|RI|TP|IP|Nm|Nd|Sh|Fl|Ar|B|I)\s+(.*)", line)
            if not m or not m.group(2):
                continue
            line = m.group(2).replace('"', "")
        line = TROFF_ESC.sub("", line).replace("\\-", "-").replace("\\ ", " ").replace("\\\\", "\\")
        lines.append(line)
    return "\n".join(lines)


def manpages(max_chars, max_pages):
    docs = []
    paths = []
    for sec in ("1", "5", "8"):
        paths += sorted(glob.glob(f"/usr/share/man/man{sec}/*.gz"))
    random.Random(7).shuffle(paths)
    for path in paths[:max_pages]:
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                src = f.read()
        except (OSError, EOFError):
            continue
        if src.startswith(".so "):
            continue  # a link to another page
        text = strip_troff(src).strip()
        if len(text) < 200:
            continue
        name = os.path.basename(path)
        sec = os.path.basename(os.path.dirname(path))
        docs.append(("man", sec, name, text[:max_chars]))
    return docs


def licenses(max_chars):
    docs = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        name = os.path.basename(path)
        for i, p in enumerate(pieces(text, max_chars // 4)):
            if len(p) >= 200:
                docs.append(("licenses", name, f"{name}/{i}", p))
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (train.jsonl, valid.jsonl, stats.json)")
    ap.add_argument("--max-per-source", type=int, default=1500, help="documents kept per source (seeded choice)")
    ap.add_argument("--max-chars", type=int, default=2500, help="longest document in characters")
    ap.add_argument("--valid-percent", type=float, default=8.0, help="share of documents held out")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    collected = []
    fort = "/usr/share/games/fortunes"
    if os.path.isdir(fort):
        collected.append(fortunes(fort, 5))
    else:
        warn(f"{fort} is absent (install fortunes, fortunes-min)")
    for name in ("foldoc", "jargon"):
        prefix = f"/usr/share/dictd/{name}"
        if os.path.exists(prefix + ".index") and os.path.exists(prefix + ".dict.dz"):
            collected.append(dictd(prefix, name))
        else:
            warn(f"{prefix}.index/.dict.dz are absent (install dict-{name})")
    collected.append(python_stdlib(a.max_chars))
    collected.append(manpages(a.max_chars, 4 * a.max_per_source))
    collected.append(licenses(a.max_chars))

    rng = random.Random(a.seed)
    docs = []
    for group in collected:
        if not group:
            continue
        if len(group) > a.max_per_source:
            group = rng.sample(group, a.max_per_source)
            group.sort(key=lambda d: d[2])
        docs.extend(group)
    sources = sorted({d[0] for d in docs})
    if len(sources) < 2:
        sys.exit("make-demo-corpus: error: fewer than two sources found; run scripts/setup.sh first")

    os.makedirs(a.out, exist_ok=True)
    stats = {"sources": {}, "train": 0, "valid": 0}
    tmp = {s: os.path.join(a.out, f".{s}.jsonl.tmp") for s in ("train", "valid")}
    files = {s: open(p, "w", encoding="utf-8") for s, p in tmp.items()}
    for source, label, key, text in docs:
        text = text.replace("\x00", "")[:a.max_chars]
        h = int(hashlib.sha1(f"{source}/{key}".encode()).hexdigest()[:8], 16) / 16**8
        split = "valid" if h < a.valid_percent / 100 else "train"
        files[split].write(json.dumps({"text": text, "meta": {"pile_set_name": source, "label": label}},
                                      ensure_ascii=False) + "\n")
        stats[split] += 1
        s = stats["sources"].setdefault(source, {"train": 0, "valid": 0, "chars": 0})
        s[split] += 1
        s["chars"] += len(text)
    for s, f in files.items():
        f.close()
        os.replace(tmp[s], os.path.join(a.out, f"{s}.jsonl"))
    with open(os.path.join(a.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
