"""Tests of loupe's TensorBoard writer, read back with tfevents_reader (its own
CRC32C and protobuf decoding). Modes (one ctest each):

  values WRITER DIR   every record's CRCs, file names, file_version, each scalar
                      equals the value written (as float32), histograms against
                      TF's default buckets computed here, images decoded with PIL,
                      the PR curve recomputed here
  torn WRITER DIR     truncation at every kind of offset: all complete records
                      read back valid, the torn tail is left over; corrupted
                      bytes are caught (the check can fail)
  kill WRITER DIR     a writer killed with SIGKILL mid-run leaves a readable file
"""
import bisect
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tfevents_reader import CorruptRecord, read_events, read_records  # noqa: E402

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, file=sys.stderr)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def run_writer(writer, d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    out = subprocess.run([writer, d], check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def tf_default_limits():
    """TensorFlow's histogram.cc InitDefaultBucketsInner, restated."""
    pos, v = [], 1.0e-12
    while v < 1.0e20:
        pos.append(v)
        v *= 1.1
    pos.append(sys.float_info.max)
    return [-x for x in reversed(pos)] + [0.0] + pos


def expected_histo(values):
    limits = tf_default_limits()
    counts = [0.0] * len(limits)
    finite = [v for v in values if math.isfinite(v)]
    for v in finite:
        counts[bisect.bisect_right(limits, v)] += 1.0
    out_l, out_c, i = [], [], 0
    while i < len(limits):  # EncodeToProto(preserve_zero_buckets=False)
        end, count = limits[i], counts[i]
        i += 1
        if count <= 0.0:
            while i < len(limits) and counts[i] <= 0.0:
                end, count = limits[i], counts[i]
                i += 1
        out_l.append(end)
        out_c.append(count)
    s = ss = 0.0
    for v in finite:
        s += v
        ss += v * v
    return {
        "min": min(finite) if finite else sys.float_info.max,
        "max": max(finite) if finite else -sys.float_info.max,
        "num": float(len(finite)), "sum": s, "sum_squares": ss,
        "bucket_limit": out_l, "bucket": out_c,
    }


def load_f32(path):
    with open(path, "rb") as f:
        raw = f.read()
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


def test_values(writer, d):
    lines = run_writer(writer, d)
    files = [x["path"] for x in lines if x["kind"] == "file"]
    check(len(files) == 2, "two event files expected, got %r" % files)
    pat = re.compile(r"events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+)\.(\d+)\.v2$")
    ids = []
    for i, p in enumerate(files):
        check(os.path.dirname(p).endswith(["train", "validation"][i]), "%s not in its logdir" % p)
        m = pat.search(os.path.basename(p))
        check(m is not None, "file name %s does not match Keras' pattern" % p)
        if m:
            check(abs(int(m.group(1)) - time.time()) < 3600, "time in name %s" % m.group(1))
            check(m.group(2) == socket.gethostname(), "host %s != %s" % (m.group(2), socket.gethostname()))
            ids.append((m.group(3), m.group(4)))
        payloads, left = read_records(p)  # raises on any CRC mismatch
        check(left == 0, "%s: %d bytes after the last complete record" % (p, left))
        check(len(payloads) > 1, "%s: no records" % p)
    check(len(ids) == 2 and ids[0][0] == ids[1][0] and ids[0][1] != ids[1][1],
          "same pid, different writer counter expected: %r" % ids)
    events = [read_events(p) for p in files]
    for i, evs in enumerate(events):
        first = evs[0]
        check(first.get("file_version") == "brain.Event:2", "first record of file %d: %r" % (i, first))
        check(abs(first["wall_time"] - time.time()) < 3600, "wall_time %r" % first["wall_time"])
        check(all(e["wall_time"] >= first["wall_time"] for e in evs), "wall_time goes back")
    rest = [evs[1:] for evs in events]
    pos = [0, 0]
    nscalar = 0
    for x in lines:
        if x["kind"] == "file":
            continue
        fi = x["file"]
        if pos[fi] >= len(rest[fi]):
            check(False, "file %d ends before %r" % (fi, x))
            continue
        e = rest[fi][pos[fi]]
        pos[fi] += 1
        check(e["tag"] == x["tag"] and e["step"] == x["step"],
              "expected %s step %s, found %s step %s" % (x["tag"], x["step"], e["tag"], e["step"]))
        if x["kind"] == "scalar":
            nscalar += 1
            check(e.get("plugin") == "scalars" and e.get("data_class") == 1, "scalar metadata %r" % e)
            check(e["tensor"]["dtype"] == 1 and e["tensor"]["shape"] == [], "scalar tensor %r" % e["tensor"])
            check(e.get("value") == f32(x["value"]),
                  "%s step %d: read %r, wrote %r (float32 %r)" % (x["tag"], x["step"], e.get("value"), x["value"], f32(x["value"])))
        elif x["kind"] == "histo":
            want = expected_histo(load_f32(x["values"]))
            got = e.get("histo")
            check(got is not None, "%s: no histogram" % x["tag"])
            if got:
                for k in want:
                    check(got[k] == want[k], "%s: histogram %s: got %r want %r" % (x["tag"], k, str(got[k])[:200], str(want[k])[:200]))
                check(sum(got["bucket"]) == got["num"], "%s: bucket counts do not add up to num" % x["tag"])
        elif x["kind"] == "image":
            from PIL import Image
            im = e.get("image")
            check(e.get("plugin") == "images" and e.get("data_class") == 3, "image metadata %r" % e.get("plugin"))
            check(im and im["width"] == x["width"] and im["height"] == x["height"], "image size %r" % im)
            if im:
                pil = Image.open(io.BytesIO(im["png"]))
                pil.load()
                check(pil.size == (x["width"], x["height"]) and pil.mode == "RGB", "PNG %r %r" % (pil.size, pil.mode))
                with open(x["raw"], "rb") as f:
                    check(pil.tobytes() == f.read(), "%s: PNG pixels differ from what was written" % x["tag"])
        elif x["kind"] == "pr_curve":
            T = x["num_thresholds"]
            probs = load_f32(x["probs"])
            with open(x["labels"], "rb") as f:
                labels = list(f.read())
            tpb, fpb = [0.0] * T, [0.0] * T
            for p, l in zip(probs, labels):
                b = int(math.floor(min(max(p, 0.0), 1.0) * (T - 1)))
                (tpb if l else fpb)[b] += 1
            tp = [sum(tpb[t:]) for t in range(T)]
            fp = [sum(fpb[t:]) for t in range(T)]
            want = {
                "tp": tp, "fp": fp,
                "tn": [fp[0] - v for v in fp], "fn": [tp[0] - v for v in tp],
                "precision": [tp[t] / max(1e-7, tp[t] + fp[t]) for t in range(T)],
                "recall": [tp[t] / max(1e-7, tp[0]) for t in range(T)],
            }
            pc = e.get("pr_curve")
            check(pc is not None and e.get("plugin") == "pr_curves", "pr curve missing: %r" % e.get("plugin"))
            if pc:
                check(pc["num_thresholds"] == T, "num_thresholds %r" % pc["num_thresholds"])
                for k, v in want.items():
                    check(pc[k] == [f32(a) for a in v], "pr curve %s: got %r want %r" % (k, pc[k], v))
                # sanity independent of the formula: recall 1 at threshold 0, TP+FN = positives
                check(pc["recall"][0] == 1.0 and pc["tp"][0] == sum(labels), "pr curve at threshold 0")
    for fi in range(2):
        check(pos[fi] == len(rest[fi]), "file %d has %d unexpected extra values" % (fi, len(rest[fi]) - pos[fi]))
    check(nscalar == 16, "16 scalars expected, checked %d" % nscalar)
    protobuf_check(files)


def protobuf_check(files):
    """Second decoder: Debian's python3-protobuf with TensorFlow's field
    numbers and types (event.proto, summary.proto, tensor.proto,
    tensor_shape.proto, histogram in summary.proto) declared here. Every record
    must parse with no unknown fields and re-serialise to the same message."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        print("python3-protobuf not installed: protobuf cross-check skipped")
        return
    F = descriptor_pb2.FieldDescriptorProto
    R, O = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    fd = descriptor_pb2.FileDescriptorProto(name="loupe_test_tb.proto", package="tensorflow", syntax="proto3")

    def msg(name, fields, parent=None):
        m = parent.nested_type.add() if parent else fd.message_type.add()
        m.name = name
        for n, num, typ, lab, tn in fields:
            f = m.field.add(name=n, number=num, type=typ, label=lab)
            if tn:
                f.type_name = tn
        return m

    D, S, B, M = F.TYPE_DOUBLE, F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE
    msg("HistogramProto", [("min", 1, D, O, None), ("max", 2, D, O, None), ("num", 3, D, O, None),
                           ("sum", 4, D, O, None), ("sum_squares", 5, D, O, None),
                           ("bucket_limit", 6, D, R, None), ("bucket", 7, D, R, None)])
    sh = msg("TensorShapeProto", [("dim", 2, M, R, ".tensorflow.TensorShapeProto.Dim"),
                                  ("unknown_rank", 3, F.TYPE_BOOL, O, None)])
    msg("Dim", [("size", 1, F.TYPE_INT64, O, None), ("name", 2, S, O, None)], sh)
    msg("TensorProto", [("dtype", 1, F.TYPE_INT32, O, None), ("tensor_shape", 2, M, O, ".tensorflow.TensorShapeProto"),
                        ("version_number", 3, F.TYPE_INT32, O, None), ("tensor_content", 4, B, O, None),
                        ("float_val", 5, F.TYPE_FLOAT, R, None), ("double_val", 6, D, R, None),
                        ("int_val", 7, F.TYPE_INT32, R, None), ("string_val", 8, B, R, None)])
    md = msg("SummaryMetadata", [("plugin_data", 1, M, O, ".tensorflow.SummaryMetadata.PluginData"),
                                 ("display_name", 2, S, O, None), ("summary_description", 3, S, O, None),
                                 ("data_class", 4, F.TYPE_INT32, O, None)])
    msg("PluginData", [("plugin_name", 1, S, O, None), ("content", 2, B, O, None)], md)
    sm = msg("Summary", [("value", 1, M, R, ".tensorflow.Summary.Value")])
    msg("Value", [("node_name", 7, S, O, None), ("tag", 1, S, O, None),
                  ("metadata", 9, M, O, ".tensorflow.SummaryMetadata"), ("simple_value", 2, F.TYPE_FLOAT, O, None),
                  ("histo", 5, M, O, ".tensorflow.HistogramProto"), ("tensor", 8, M, O, ".tensorflow.TensorProto")], sm)
    msg("Event", [("wall_time", 1, D, O, None), ("step", 2, F.TYPE_INT64, O, None),
                  ("file_version", 3, S, O, None), ("summary", 5, M, O, ".tensorflow.Summary")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    Event = message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName("tensorflow.Event"))
    n = 0
    for path in files:
        payloads, _ = read_records(path)
        for i, p in enumerate(payloads):
            e = Event()
            e.ParseFromString(p)
            again = Event()
            again.ParseFromString(e.SerializeToString())
            check(again == e, "%s record %d does not survive a protobuf round trip" % (path, i))
            check(e.SerializeToString() == p, "%s record %d is not in protobuf's canonical form" % (path, i))
            n += 1
            if i == 0:
                check(e.file_version == "brain.Event:2", "protobuf: first record %r" % e)
            for v in e.summary.value:
                if v.HasField("tensor") and v.metadata.plugin_data.plugin_name == "scalars":
                    check(len(v.tensor.float_val) == 1 and v.tensor.dtype == 1, "protobuf: scalar %s" % v.tag)
    print("protobuf cross-check: %d records parsed" % n)


def boundaries(path):
    with open(path, "rb") as f:
        data = f.read()
    b, pos = [0], 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        pos += 12 + n + 4
        b.append(pos)
    return data, b


def test_torn(writer, d):
    lines = run_writer(writer, d)
    src = [x["path"] for x in lines if x["kind"] == "file"][0]
    data, bounds = boundaries(src)
    check(bounds[-1] == len(data), "records do not tile the file")
    full = read_events(src)
    cuts = set()
    for i in range(len(bounds) - 1):
        a, z = bounds[i], bounds[i + 1]
        cuts.update([a, a + 1, a + 7, a + 8, a + 11, a + 12, (a + z) // 2, z - 4, z - 1])
    cuts.add(len(data))
    tmp = os.path.join(d, "torn.tfevents")
    ncut = 0
    for cut in sorted(cuts):
        with open(tmp, "wb") as f:
            f.write(data[:cut])
        complete = bisect.bisect_right(bounds, cut) - 1
        try:
            payloads, left = read_records(tmp)
            evs = read_events(tmp)
        except CorruptRecord as ex:
            check(False, "cut at %d: complete records reported corrupt: %s" % (cut, ex))
            continue
        ncut += 1
        check(len(payloads) == complete, "cut at %d: %d records, expected %d" % (cut, len(payloads), complete))
        check(left == cut - bounds[complete], "cut at %d: %d bytes left over" % (cut, left))
        check(evs == full[:len(evs)], "cut at %d: events differ from the full file's" % cut)
        if complete >= 1:
            check(evs[0].get("file_version") == "brain.Event:2", "cut at %d: first record" % cut)
    check(ncut > 50, "only %d cuts tried" % ncut)
    # Negative controls: a flipped byte in a complete record must be caught.
    for name, off in [("payload", bounds[3] + 12 + 3), ("length", bounds[3] + 2), ("payload crc", bounds[4] - 2)]:
        bad = bytearray(data)
        bad[off] ^= 0x40
        with open(tmp, "wb") as f:
            f.write(bad)
        try:
            read_records(tmp)
            check(False, "corrupted %s byte not detected" % name)
        except CorruptRecord:
            pass


def test_kill(writer, d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    p = subprocess.Popen([writer, d, "--loop"], stdout=subprocess.PIPE, text=True)
    path, last = None, -1
    for line in p.stdout:
        x = json.loads(line)
        if x["kind"] == "file":
            path = x["path"]
        elif x["kind"] == "step":
            last = x["step"]
            if last >= 200:
                break
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    check(path is not None and last >= 200, "writer did not get going (last step %d)" % last)
    payloads, left = read_records(path)  # raises on a bad CRC
    evs = read_events(path)
    steps = [e["step"] for e in evs[1:]]
    check(evs[0].get("file_version") == "brain.Event:2", "first record")
    check(len(steps) >= 201, "only %d scalars survived, %d were reported written" % (len(steps), last + 1))
    check(steps == list(range(len(steps))), "steps not contiguous from 0")
    check(all(e["value"] == 0.5 * e["step"] for e in evs[1:]), "loop values")
    print("killed writer: %d complete records, %d torn bytes" % (len(payloads), left))


if __name__ == "__main__":
    mode, writer, d = sys.argv[1], sys.argv[2], sys.argv[3]
    {"values": test_values, "torn": test_torn, "kill": test_kill}[mode](writer, d)
    if failures:
        print("%d failure(s)" % len(failures), file=sys.stderr)
        sys.exit(1)
    print("log_tfevents %s: all passed" % mode)
