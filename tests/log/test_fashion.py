"""log_fashion: `loupe fashion` against Debian's dataset-fashion-mnist, read
here independently (gzip + struct for IDX, PIL for PNG).

usage: test_fashion.py LOUPE WORKDIR
Checks: counts per split and class, no image in two splits, every PNG's pixels
equal the IDX image its name points to and its IDX label matches its folder,
same options -> same files and "already prepared", other options -> refused,
--pretrain layout, leftovers of an interrupted run, and clear IDX errors.
"""
import gzip
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

from PIL import Image

SRC = "/usr/share/datasets/fashion-mnist"
NAMES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, file=sys.stderr)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">%dI" % ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def load(prefix):
    (n, r, c), pix = read_idx(os.path.join(SRC, prefix + "-images-idx3-ubyte.gz"))
    (nl,), lab = read_idx(os.path.join(SRC, prefix + "-labels-idx1-ubyte.gz"))
    assert n == nl and r == 28 and c == 28
    return pix, lab


def loupe(exe, *args):
    p = subprocess.run([exe, "fashion"] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def listing(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            if f.endswith(".png"):
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                out[rel] = os.stat(os.path.join(dirpath, f)).st_mtime_ns
    return out


def check_tree(root, splits, classes, counts, sources):
    """classes: folder -> label; counts: split -> per class; sources: split -> (pixels, labels)."""
    seen = {}
    for split in splits:
        check(sorted(os.listdir(os.path.join(root, split))) == sorted(classes),
              "%s/%s: classes %r" % (root, split, sorted(os.listdir(os.path.join(root, split)))))
        pix, lab = sources[split]
        for cls, label in classes.items():
            d = os.path.join(root, split, cls)
            files = sorted(os.listdir(d))
            check(len(files) == counts[split], "%s: %d files, expected %d" % (d, len(files), counts[split]))
            for f in files:
                m = re.fullmatch(r"(\d{5})\.png", f)
                check(m is not None, "%s/%s: bad name" % (d, f))
                if not m:
                    continue
                i = int(m.group(1))
                key = ("t10k" if sources[split] is sources.get("test") else "train", i)
                check(key not in seen, "%s/%s is also %s" % (d, f, seen.get(key)))
                seen[key] = os.path.join(split, cls, f)
                check(lab[i] == label, "%s/%s: IDX label %d, folder says %d" % (d, f, lab[i], label))
                im = Image.open(os.path.join(d, f))
                im.load()
                check(im.mode == "L" and im.size == (28, 28), "%s/%s: %s %r" % (d, f, im.mode, im.size))
                check(im.tobytes() == pix[i * 784:(i + 1) * 784], "%s/%s: pixels differ from IDX image %d" % (d, f, i))
    return seen


def main(exe, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if not os.path.exists(os.path.join(SRC, "train-images-idx3-ubyte.gz")):
        print("FAIL: %s missing: install dataset-fashion-mnist (scripts/setup-deps)" % SRC, file=sys.stderr)
        sys.exit(1)
    train, test = load("train"), load("t10k")

    rc, out = loupe(exe, "--help")
    check(rc == 0 and "--pretrain" in out, "--help: rc %d" % rc)

    # Binary task with the defaults.
    b = os.path.join(work, "bin")
    rc, out = loupe(exe, "--out", b)
    check(rc == 0 and "514" in out, "binary run: rc %d: %s" % (rc, out))
    src = {"train": train, "valid": train, "test": test}
    seen = check_tree(b, ["train", "valid", "test"], {"negative": 0, "positive": 6},
                      {"train": 154, "valid": 26, "test": 77}, src)
    check(len(seen) == 2 * (154 + 26 + 77), "%d distinct images, expected 514" % len(seen))
    check(not os.path.exists(b + ".tmp"), "temporary folder left behind")
    before = listing(b)
    rc, out = loupe(exe, "--out", b)
    check(rc == 0 and "already prepared" in out, "re-run: rc %d: %s" % (rc, out))
    check(listing(b) == before, "re-run rewrote files")
    rc, out = loupe(exe, "--out", b, "--train", "10")
    check(rc == 2 and "other options" in out, "other options on a prepared folder: rc %d: %s" % (rc, out))
    check(listing(b) == before, "refused run changed the folder")

    # Same options elsewhere -> same selection; another seed -> another one.
    b2, b3 = os.path.join(work, "bin2"), os.path.join(work, "bin3")
    loupe(exe, "--out", b2)
    check(sorted(listing(b2)) == sorted(before), "same options gave different files")
    rc, out = loupe(exe, "--out", b3, "--seed", "2", "--negative", "dress", "--positive", "4",
                    "--train", "20", "--valid", "5", "--test", "7")
    check(rc == 0, "seed 2 run: %s" % out)
    check_tree(b3, ["train", "valid", "test"], {"negative": 3, "positive": 4}, {"train": 20, "valid": 5, "test": 7}, src)

    # Pretraining set.
    p = os.path.join(work, "pre")
    rc, out = loupe(exe, "--pretrain", "--out", p, "--per-class", "40")
    check(rc == 0 and "320" in out, "pretrain run: rc %d: %s" % (rc, out))
    classes = {NAMES[l]: l for l in range(10) if l not in (0, 6)}
    check(sorted(os.listdir(p)) == [".loupe-fashion", "train", "valid"], "pretrain top level %r" % os.listdir(p))
    check_tree(p, ["train", "valid"], classes, {"train": 40, "valid": 5}, {"train": train, "valid": train})
    p2 = os.path.join(work, "pre2")
    rc, out = loupe(exe, "--pretrain", "--out", p2, "--train", "3", "--valid", "2", "--exclude", "1,bag,9")
    check(rc == 0, "pretrain with --exclude: %s" % out)
    check_tree(p2, ["train", "valid"], {NAMES[l]: l for l in (0, 2, 3, 4, 5, 6, 7)}, {"train": 3, "valid": 2},
               {"train": train, "valid": train})

    # Leftover of an interrupted run is cleaned; a foreign DIR.tmp is not touched.
    i = os.path.join(work, "int")
    os.makedirs(i + ".tmp/train/negative")
    open(i + ".tmp/.loupe-fashion-partial", "w").write("incomplete\n")
    open(i + ".tmp/train/negative/99999.png", "w").write("junk")
    rc, out = loupe(exe, "--out", i, "--train", "4", "--valid", "2", "--test", "3")
    check(rc == 0 and not os.path.exists(i + ".tmp"), "leftover not cleaned: rc %d %s" % (rc, out))
    check(len(listing(i)) == 18, "after leftover: %d files" % len(listing(i)))
    f = os.path.join(work, "foreign")
    os.makedirs(f + ".tmp")
    open(f + ".tmp/keep.txt", "w").write("mine")
    rc, out = loupe(exe, "--out", f)
    check(rc == 2 and os.path.exists(f + ".tmp/keep.txt") and not os.path.exists(f), "foreign tmp: rc %d %s" % (rc, out))
    # A folder that exists with other content is refused.
    os.makedirs(os.path.join(work, "taken"))
    open(os.path.join(work, "taken", "x"), "w").write("x")
    rc, out = loupe(exe, "--out", os.path.join(work, "taken"))
    check(rc == 2 and "not written by loupe fashion" in out, "occupied folder: rc %d %s" % (rc, out))

    # Killed mid-run: the output folder is absent or complete, never half.
    k = os.path.join(work, "killed")
    proc = subprocess.Popen([exe, "fashion", "--pretrain", "--out", k, "--per-class", "200"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(2000):  # wait until it is writing PNGs (or done)
        first = os.path.join(k + ".tmp", "train", "trouser")
        if proc.poll() is not None or (os.path.isdir(first) and len(os.listdir(first)) >= 20):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    full = 8 * (200 + 25)
    print("killed run: %s %s, %s.tmp holds %d PNGs" % (k, "exists" if os.path.exists(k) else "absent", k,
                                                      len(listing(k + ".tmp"))))
    if os.path.exists(k):
        check(os.path.exists(os.path.join(k, ".loupe-fashion")) and len(listing(k)) == full,
              "killed run left an incomplete %s" % k)
    rc, out = loupe(exe, "--pretrain", "--out", k, "--per-class", "200")
    check(rc == 0 and not os.path.exists(k + ".tmp"), "run after kill: rc %d %s" % (rc, out))
    check(len(listing(k)) == full, "run after kill: %d files" % len(listing(k)))
    shutil.rmtree(k)

    # Bad sources: clear errors.
    bad = os.path.join(work, "badsrc")
    os.makedirs(bad)
    rc, out = loupe(exe, "--out", os.path.join(work, "x1"), "--source", bad)
    check(rc == 1 and "dataset-fashion-mnist" in out, "missing files: rc %d %s" % (rc, out))
    for name in ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        shutil.copy(os.path.join(SRC, name), bad)
    with gzip.open(os.path.join(bad, "train-images-idx3-ubyte.gz"), "wb") as g:  # labels' magic on an image file
        g.write(struct.pack(">IIII", 0x801, 60000, 28, 28))
    rc, out = loupe(exe, "--out", os.path.join(work, "x2"), "--source", bad)
    check(rc == 2 and "magic 0x00000801" in out and "0x00000803" in out, "bad magic: rc %d %s" % (rc, out))
    with gzip.open(os.path.join(bad, "train-images-idx3-ubyte.gz"), "wb") as g:  # truncated pixels
        g.write(struct.pack(">IIII", 0x803, 60000, 28, 28) + bytes(1000))
    rc, out = loupe(exe, "--out", os.path.join(work, "x3"), "--source", bad)
    check(rc == 2 and "truncated" in out, "truncated: rc %d %s" % (rc, out))
    with gzip.open(os.path.join(bad, "train-images-idx3-ubyte.gz"), "wb") as g:  # count differs from labels
        g.write(struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(7840))
    rc, out = loupe(exe, "--out", os.path.join(work, "x4"), "--source", bad)
    check(rc == 2 and "do not belong together" in out, "count mismatch: rc %d %s" % (rc, out))
    check(not any(os.path.exists(os.path.join(work, x)) or os.path.exists(os.path.join(work, x + ".tmp"))
                  for x in ["x1", "x2", "x3", "x4"]), "failed runs left folders")
    for args, what in [(["--negative", "3", "--positive", "3"], "same class"), (["--negative", "11"], "label 11"),
                       (["--train", "6000"], "too many"), (["--per-class", "3"], "--per-class without --pretrain"),
                       (["--pretrain", "--per-class", "16", "--train", "7"], "--per-class and --train")]:
        rc, out = loupe(exe, "--out", os.path.join(work, "x5"), *args)
        check(rc == 2 and not os.path.exists(os.path.join(work, "x5")), "%s: rc %d %s" % (what, rc, out))

    if failures:
        print("%d failure(s)" % len(failures), file=sys.stderr)
        sys.exit(1)
    print("log_fashion: all passed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
