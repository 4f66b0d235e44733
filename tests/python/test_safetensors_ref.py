"""moin's safetensors reader and writer against the Python `safetensors` package, in both directions.
Files written by safetensors.numpy / safetensors.torch (F32, F16, BF16, I64, ..., with metadata) are read by
`moin inspect` with the same dtypes, shapes, offsets, bytes (FNV-1a hash) and metadata; `moin inspect
--copy-to` re-writes them through moin's writer and Python loads the copy bit-identically. Corrupt files
are rejected by both."""
import json
import os
import struct
import subprocess

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as np_save
from safetensors.torch import load_file, save_file

MOIN = os.environ.get("MOIN_BIN", "build/bin/moin")


def moin(*args):
    return subprocess.run([MOIN, *map(str, args)], capture_output=True, text=True)


def inspect(path, copy_to=None):
    args = ["inspect", path] + (["--copy-to", copy_to] if copy_to else [])
    r = moin(*args)
    assert r.returncode == 0, f"moin inspect exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def raw_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def check_description(path, desc, tensors_bytes, metadata):
    n, header = raw_header(path)
    assert desc["header_bytes"] == n
    assert desc["metadata"] == metadata
    by_name = {t["name"]: t for t in desc["tensors"]}
    assert set(by_name) == set(tensors_bytes)
    for name, data in tensors_bytes.items():
        t = by_name[name]
        assert t["dtype"] == header[name]["dtype"], name
        assert t["shape"] == header[name]["shape"], name
        assert t["data_offsets"] == header[name]["data_offsets"], name
        assert t["fnv1a64"] == fnv1a64(data), name


def torch_tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g) * 50
    return {
        "model.embed_tokens.weight": base,
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "ids": (base * 1e6).long(),
        "f64": base.double().t().contiguous(),
        "i32": base.int(),
        "i16": base.short(),
        "i8": base.clamp(-128, 127).to(torch.int8),
        "u8": base.abs().clamp(0, 255).to(torch.uint8),
        "mask": base > 0,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "odd": torch.arange(3, dtype=torch.int8),  # a 3-byte tensor: later data is not 8-byte aligned
    }


def test_read_and_rewrite_torch_file(tmp_path):
    src, copy = str(tmp_path / "torch.safetensors"), str(tmp_path / "copy.safetensors")
    tensors = torch_tensors()
    meta = {"format": "pt", "note": "écrit par safetensors"}
    save_file(tensors, src, metadata=meta)
    desc = inspect(src, copy_to=copy)
    check_description(src, desc, {k: tensor_bytes(v) for k, v in tensors.items()}, meta)

    back = load_file(copy)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        assert tensor_bytes(back[k]) == tensor_bytes(v), k
    with safe_open(copy, framework="pt") as f:
        assert f.metadata() == meta
    n, _ = raw_header(copy)
    assert n % 8 == 0, "moin pads the header to 8 bytes"
    # The copy describes the same tensors (offsets may differ: moin orders the data by dtype width).
    d2 = inspect(copy)
    assert {t["name"]: t["fnv1a64"] for t in d2["tensors"]} == {t["name"]: t["fnv1a64"] for t in desc["tensors"]}


def test_read_and_rewrite_numpy_file(tmp_path):
    src, copy = str(tmp_path / "np.safetensors"), str(tmp_path / "copy.safetensors")
    rng = np.random.default_rng(1)
    arrays = {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "h": rng.standard_normal((6,)).astype(np.float16),
        "d": rng.standard_normal((2, 2, 2)).astype(np.float64),
        "n": rng.integers(-(2**40), 2**40, size=(9,), dtype=np.int64),
        "b": rng.integers(0, 2, size=(4,)).astype(np.bool_),
    }
    save_file_meta = {"source": "numpy"}
    np_save(arrays, src, metadata=save_file_meta)
    desc = inspect(src, copy_to=copy)
    check_description(src, desc, {k: v.tobytes() for k, v in arrays.items()}, save_file_meta)
    with safe_open(copy, framework="np") as f:
        assert f.metadata() == save_file_meta
        for k, v in arrays.items():
            got = f.get_tensor(k)
            assert got.dtype == v.dtype and got.shape == v.shape and got.tobytes() == v.tobytes(), k


def test_no_tensors(tmp_path):
    src = str(tmp_path / "empty.safetensors")
    save_file({}, src, metadata={"k": "v"})
    desc = inspect(src, copy_to=str(tmp_path / "copy.safetensors"))
    assert desc["tensors"] == [] and desc["metadata"] == {"k": "v"}
    assert load_file(str(tmp_path / "copy.safetensors")) == {}


def python_accepts(path):
    try:
        load_file(path)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("case", ["truncated", "offsets", "dtype", "length", "overlap"])
def test_corrupt_files_rejected_by_both(tmp_path, case):
    src = str(tmp_path / "ok.safetensors")
    save_file({"w": torch.ones(4), "v": torch.zeros(2, dtype=torch.int64)}, src)
    raw = open(src, "rb").read()
    n, header = raw_header(src)
    body = raw[8 + n:]
    if case == "truncated":
        bad = raw[:-3]
    elif case == "length":
        bad = struct.pack("<Q", n + 1000) + raw[8:]
    else:
        if case == "offsets":
            header["w"]["data_offsets"][1] += 4
        elif case == "dtype":
            header["w"]["dtype"] = "F33"
        elif case == "overlap":
            header["w"]["data_offsets"] = header["v"]["data_offsets"]
            header["w"]["shape"] = [4]
        h = json.dumps(header).encode()
        bad = struct.pack("<Q", len(h)) + h + body
    path = str(tmp_path / "bad.safetensors")
    open(path, "wb").write(bad)
    r = moin("inspect", path)
    assert r.returncode == 2, f"{case}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert path in r.stderr and "moin: error:" in r.stderr, r.stderr
    assert not python_accepts(path), f"{case}: Python accepted it"
