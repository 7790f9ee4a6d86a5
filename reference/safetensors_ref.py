"""Reference safetensors reader/writer on PyTorch, to show moe-ts files move to and from PyTorch.

  /usr/bin/python3 reference/safetensors_ref.py write            # fixtures for test/safetensors.test.ts
  /usr/bin/python3 reference/safetensors_ref.py read FILE [--expect FILE.json]

`read` prints each tensor; with --expect ({"tensors": {name: {dtype, shape, data}}}, non-finite
floats and -0 as strings) it exits 1 on any difference. test/safetensors.test.ts runs it on a file
moe-ts wrote when /usr/bin/python3 has torch, and skips otherwise.

The format is implemented here by hand (the `safetensors` package is usually not installed on a
Debian machine, and pip cannot reach PyPI offline); when the package is importable, `read` also
loads the file with it and checks both agree. The writer lays data out like the reference Rust
implementation (dtype descending in its enum order, then name; header padded with spaces to a
multiple of 8), and the reader is as strict as the Rust one (offsets contiguous from 0 and
covering the whole data), which is stricter than moe-ts's reader: files moe-ts writes must pass it.

Fixtures written by `write` (all tiny):
  test/fixtures/ref.safetensors       F32 / F64 / I32 only, incl. a scalar, an empty tensor and
                                      special floats: moe-ts must reproduce it byte for byte
  test/fixtures/ref_half.safetensors  F16 / BF16 / I64 / U8 / BOOL, which moe-ts converts on read
  test/fixtures/ref.json              expected values of both (non-finite floats as strings)
"""
import json
import math
import os
import struct
import sys

try:
    import torch
except ImportError:  # exit code 77 ("skip") lets the TypeScript test skip instead of failing
    print("PyTorch is not installed (Debian: apt install python3-torch)", file=sys.stderr)
    sys.exit(77)

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures")
MAX_HEADER = 100_000_000

# Rust `Dtype` enum order (safetensors 0.4); the writer sorts by it, descending.
DTYPE_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]
TORCH_OF = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "F16": torch.float16,
    "BF16": torch.bfloat16, "I32": torch.int32, "F32": torch.float32, "F64": torch.float64, "I64": torch.int64,
}
NAME_OF = {v: k for k, v in TORCH_OF.items()}
ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
            "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; the bits are what matter
        t = t.view(torch.int16)
    a = t.numpy()
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def serialize(tensors, metadata=None):
    items = sorted(tensors.items(), key=lambda kv: (-DTYPE_ORDER.index(NAME_OF[kv[1].dtype]), kv[0].encode("utf-8")))
    header = {}
    if metadata is not None:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata, key=lambda s: s.encode("utf-8"))}
    blobs, offset = [], 0
    for name, t in items:
        b = tensor_bytes(t)
        header[name] = {"dtype": NAME_OF[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def parse(buf):
    """Returns (tensors in data order, metadata); raises ValueError on anything the Rust reader rejects."""
    if len(buf) < 8:
        raise ValueError("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER or n > len(buf) - 8:
        raise ValueError(f"header length {n} invalid for a {len(buf)}-byte file")
    text = buf[8:8 + n].decode("utf-8")
    if not text.startswith("{"):
        raise ValueError("header does not start with '{'")
    header = json.loads(text)
    metadata = header.pop("__metadata__", None) or {}
    if not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("metadata values must be strings")
    data = buf[8 + n:]
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    expect, out = 0, {}
    for name, e in entries:
        begin, end = e["data_offsets"]
        if begin != expect:
            raise ValueError(f"{name}: offsets not contiguous (begins at {begin}, expected {expect})")
        numel = math.prod(e["shape"])
        if end - begin != numel * ITEMSIZE[e["dtype"]]:
            raise ValueError(f"{name}: {end - begin} bytes for {e['dtype']} {e['shape']}")
        dtype = TORCH_OF[e["dtype"]]
        if numel == 0:
            t = torch.empty(e["shape"], dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(e["shape"])
        out[name] = t
        expect = end
    if expect != len(data):
        raise ValueError(f"data is {len(data)} bytes but tensors cover {expect}")
    return out, metadata


def enc(x):
    """JSON has no NaN or Infinity: write them as strings the test decodes."""
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, float) and x == 0 and math.copysign(1, x) < 0:
        return "-0"
    return x


def expected(t):
    v = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    v = v.to(torch.int32) if t.dtype in (torch.int64, torch.uint8, torch.bool) else v
    return {"dtype": NAME_OF[t.dtype], "shape": list(t.shape), "data": [enc(x) for x in v.reshape(-1).tolist()]}


def write():
    torch.manual_seed(0)
    main = {
        "experts.w1": torch.randn(2, 3, 4),
        "router.weight": torch.randn(3, 5, dtype=torch.float64),
        "indices": torch.tensor([0, -1, 2147483647, -2147483648, 7], dtype=torch.int32),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
        "specials": torch.tensor([math.inf, -math.inf, math.nan, -0.0, 1e-45, 3.4028234663852886e38]),
        "a.b.c.0.weight": torch.randn(1, 1, 1),
    }
    half = {
        "h16": torch.tensor([1.0, -2.5, 65504.0, 2.0 ** -24, -0.0, math.inf, 0.1], dtype=torch.float16),
        "bf16": torch.randn(2, 3).bfloat16(),
        "ids": torch.arange(-3, 5, dtype=torch.int64).reshape(2, 4),
        "bytes": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
    }
    meta = {"format": "pt", "producer": "reference/safetensors_ref.py"}
    files = {"ref.safetensors": main, "ref_half.safetensors": half}
    out = {"metadata": meta}
    for fname, tensors in files.items():
        blob = serialize(tensors, meta)
        with open(os.path.join(OUT, fname), "wb") as f:
            f.write(blob)
        back, _ = parse(blob)
        assert all(tensor_bytes(back[k]) == tensor_bytes(v) and back[k].shape == v.shape for k, v in tensors.items())
        out[fname] = {k: expected(v) for k, v in tensors.items()}
        print("wrote", fname, len(blob), "bytes")
    with open(os.path.join(OUT, "ref.json"), "w") as f:
        json.dump(out, f)


def read(path, expect_path=None):
    with open(path, "rb") as f:
        buf = f.read()
    tensors, metadata = parse(buf)
    print("metadata", metadata)
    for name, t in tensors.items():
        print(f"{name} {NAME_OF[t.dtype]} {list(t.shape)} {t.reshape(-1)[:6].tolist()}")
    try:
        from safetensors.torch import load  # noqa: the package, when present, must agree
        for name, t in load(buf).items():
            assert tensor_bytes(t) == tensor_bytes(tensors[name]), name
        print("safetensors package agrees")
    except ImportError:
        pass
    if expect_path:
        with open(expect_path) as f:
            exp = json.load(f)
        bad = []
        for name, e in exp["tensors"].items():
            t = tensors.get(name)
            if t is None:
                bad.append(f"{name} missing")
                continue
            if NAME_OF[t.dtype] != e["dtype"] or list(t.shape) != e["shape"]:
                bad.append(f"{name}: {NAME_OF[t.dtype]} {list(t.shape)} != {e['dtype']} {e['shape']}")
                continue
            got = [enc(x) for x in t.reshape(-1).tolist()]
            if got != e["data"]:
                bad.append(f"{name}: values differ: {got[:6]} vs {e['data'][:6]}")
        if set(tensors) != set(exp["tensors"]):
            bad.append(f"names differ: {sorted(tensors)} vs {sorted(exp['tensors'])}")
        if bad:
            print("MISMATCH\n  " + "\n  ".join(bad))
            sys.exit(1)
        print(f"OK: {len(tensors)} tensors match {expect_path}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "write":
        write()
    elif len(sys.argv) >= 3 and sys.argv[1] == "read":
        read(sys.argv[2], sys.argv[4] if len(sys.argv) >= 5 and sys.argv[3] == "--expect" else None)
    else:
        print(__doc__)
        sys.exit(2)
