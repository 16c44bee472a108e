"""Independent reader for TensorBoard event files (Python standard library only).

Decodes TensorFlow's record framing (u64 length, masked CRC32C of the length,
payload, masked CRC32C of the payload) with its own CRC32C, and the Event
protobuf wire format by hand (no TensorFlow, no generated code), so tests can
check what loupe's C writer produced.

    from tfevents_reader import read_events
    for e in read_events(path):
        if e["tag"] == "epoch_loss":
            print(e["step"], e["value"])

read_events(path) returns one dict per summary value, in file order, plus one
for the file_version record. Keys: wall_time, step, tag (None for the version
record), file_version (version record only), and by kind:
  scalars    value (float), plugin "scalars"
  histograms histo {min, max, num, sum, sum_squares, bucket_limit, bucket}
  images     image {width, height, png}, plugin "images"
  pr curves  pr_curve {num_thresholds, tp, fp, tn, fn, precision, recall}
and plugin, data_class where the metadata has them.
A complete record with a bad CRC raises CorruptRecord; a torn last record (a
crash mid-write) is ignored, as TensorFlow's reader does (read_records tells
how many bytes were left over).
"""
import struct

_POLY = 0x82F63B78
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (_POLY if _c & 1 else 0)
    _TABLE.append(_c)


class CorruptRecord(ValueError):
    pass


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    """Returns (payloads, leftover_bytes). Checks both CRCs of every complete record."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 12:
            break
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc_len,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if crc_len != masked_crc32c(header):
            raise CorruptRecord("%s: record %d at byte %d: length CRC mismatch" % (path, len(out), pos))
        end = pos + 12 + length + 4
        if end > len(data):
            break
        payload = data[pos + 12:pos + 12 + length]
        (crc_data,) = struct.unpack("<I", data[end - 4:end])
        if crc_data != masked_crc32c(payload):
            raise CorruptRecord("%s: record %d at byte %d: payload CRC mismatch" % (path, len(out), pos))
        out.append(payload)
        pos = end
    return out, len(data) - pos


# ---- protobuf wire format ------------------------------------------------------
def _varint(buf, pos):
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise CorruptRecord("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptRecord("varint too long")


def parse(buf):
    """Message bytes -> {field_number: [values]}; varints as int, fixed64 and
    fixed32 as raw 8/4 bytes, length-delimited as bytes."""
    fields, pos = {}, 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, pos = _varint(buf, pos)
        elif wire == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        elif wire == 2:
            n, pos = _varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        else:
            raise CorruptRecord("unsupported wire type %d" % wire)
        if pos > len(buf):
            raise CorruptRecord("field %d runs past the message end" % field)
        fields.setdefault(field, []).append(v)
    return fields


def _one(fields, n, default=None):
    v = fields.get(n)
    return v[-1] if v else default


def _double(raw):
    return struct.unpack("<d", raw)[0]


def _int64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _floats(fields, n):
    # float_val entries are either packed blobs (wire type 2) or 4-byte fixed32 values;
    # parse() returns both as bytes, and a packed blob of exactly one float is also 4 bytes:
    # both decode the same way.
    out = []
    for v in fields.get(n, []):
        out.extend(struct.unpack("<%df" % (len(v) // 4), v))
    return out


def _doubles(fields, n):
    out = []
    for v in fields.get(n, []):
        out.extend(struct.unpack("<%dd" % (len(v) // 8), v))
    return out


DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING = 1, 2, 3, 7


def _tensor(buf):
    t = parse(buf)
    dtype = _one(t, 1, 0)
    shape = []
    if 2 in t:
        for d in parse(_one(t, 2)).get(2, []):
            shape.append(_int64(_one(parse(d), 1, 0)))
    if dtype == DT_STRING:
        values = list(t.get(8, []))
    elif dtype == DT_FLOAT:
        values = _floats(t, 5)
        if not values and 4 in t:
            raw = _one(t, 4)
            values = list(struct.unpack("<%df" % (len(raw) // 4), raw))
    elif dtype == DT_DOUBLE:
        values = _doubles(t, 6)
        if not values and 4 in t:
            raw = _one(t, 4)
            values = list(struct.unpack("<%dd" % (len(raw) // 8), raw))
    else:
        values = None
    return {"dtype": dtype, "shape": shape, "values": values}


def _histo(buf):
    h = parse(buf)
    return {
        "min": _double(_one(h, 1, b"\0" * 8)),
        "max": _double(_one(h, 2, b"\0" * 8)),
        "num": _double(_one(h, 3, b"\0" * 8)),
        "sum": _double(_one(h, 4, b"\0" * 8)),
        "sum_squares": _double(_one(h, 5, b"\0" * 8)),
        "bucket_limit": _doubles(h, 6),
        "bucket": _doubles(h, 7),
    }


def _value(v, base):
    e = dict(base)
    e["tag"] = _one(v, 1, b"").decode("utf-8")
    if 9 in v:
        meta = parse(_one(v, 9))
        e["data_class"] = _one(meta, 4, 0)
        if 1 in meta:
            pd = parse(_one(meta, 1))
            e["plugin"] = _one(pd, 1, b"").decode("utf-8")
            e["plugin_content"] = _one(pd, 2, b"")
    if 2 in v:  # simple_value (fixed32)
        e["value"] = struct.unpack("<f", _one(v, 2))[0]
    if 5 in v:
        e["histo"] = _histo(_one(v, 5))
    if 4 in v:  # legacy Summary.Image
        im = parse(_one(v, 4))
        e["image"] = {"height": _one(im, 1, 0), "width": _one(im, 2, 0), "png": _one(im, 4, b"")}
    if 8 in v:
        t = _tensor(_one(v, 8))
        e["tensor"] = t
        plugin = e.get("plugin")
        if plugin == "scalars" and t["values"] is not None and len(t["values"]) == 1 and t["shape"] == []:
            e["value"] = t["values"][0]
        elif plugin == "images" and t["dtype"] == DT_STRING and len(t["values"]) >= 3:
            e["image"] = {"width": int(t["values"][0]), "height": int(t["values"][1]), "png": t["values"][2],
                          "count": len(t["values"]) - 2}
        elif plugin == "pr_curves" and len(t["shape"]) == 2 and t["shape"][0] == 6:
            k = t["shape"][1]
            vals = t["values"]
            pc = parse(e.get("plugin_content", b""))
            e["pr_curve"] = {"num_thresholds": _one(pc, 2, 0)}
            for row, name in enumerate(["tp", "fp", "tn", "fn", "precision", "recall"]):
                e["pr_curve"][name] = vals[row * k:(row + 1) * k]
    return e


def read_events(path):
    payloads, _ = read_records(path)
    events = []
    for p in payloads:
        ev = parse(p)
        base = {
            "wall_time": _double(_one(ev, 1, b"\0" * 8)),
            "step": _int64(_one(ev, 2, 0)),
        }
        if 3 in ev:
            e = dict(base)
            e["tag"] = None
            e["file_version"] = _one(ev, 3).decode("utf-8")
            events.append(e)
        if 5 in ev:
            for v in parse(_one(ev, 5)).get(1, []):
                events.append(_value(parse(v), base))
    return events
