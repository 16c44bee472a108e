"""safetensors read/write for the tests, written from the format spec (8-byte
little-endian header length, JSON header, raw little-endian data): Debian 12 has
no python3-safetensors, and the tests should not trust loupe's own reader.

A script imports it by path from its own folder:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import safetensors_io as st
"""
import json
import struct

import numpy as np

# safetensors dtype -> numpy dtype of the stored bytes (BF16 is stored as its bit pattern)
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "U8": "u1"}
NAMES = {np.dtype(v): k for k, v in DTYPES.items() if k != "BF16"}


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bfloat16 bit pattern (uint16)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (np.asarray(b).astype(np.uint32) << 16).view(np.float32)


def read_header(path):
    """(header with "__metadata__" if present, the whole file's bytes, offset of the data section)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data, 8 + n


def read(path):
    """(tensors: name -> numpy array, metadata: dict). BF16 comes back as float32,
    every other dtype as itself."""
    header, data, base = read_header(path)
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        if info["dtype"] not in DTYPES:
            raise ValueError("%s: tensor %s has dtype %s" % (path, name, info["dtype"]))
        arr = np.frombuffer(data[base + a:base + b], dtype=DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            arr = bf16_bits_to_f32(arr)
        out[name] = arr.reshape(info["shape"]).copy()
    return out, meta


def write(path, tensors, meta=None, dtype=None):
    """tensors: name -> array, stored in the given order. dtype None keeps each
    array's own dtype; "F32", "F16" or "BF16" converts every tensor to it.
    meta: dict, values stored as strings (omitted when empty)."""
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if dtype == "BF16":
            dt, raw = dtype, f32_to_bf16_bits(arr).astype("<u2").tobytes()
        else:
            dt = dtype or NAMES.get(arr.dtype)
            if dt not in DTYPES:
                raise ValueError("%s: tensor %s: no safetensors dtype for %s" % (path, name, dtype or arr.dtype))
            raw = np.ascontiguousarray(arr, dtype=DTYPES[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    write_raw(path, header, b"".join(blobs))


def write_raw(path, header, data=b"", pad=True):
    """A file from a header given as is (for malformed files); pad=True pads the
    JSON with spaces to a multiple of 8 bytes, as the format recommends."""
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
