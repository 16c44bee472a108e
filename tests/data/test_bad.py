"""data_bad: every kind of bad file is found by content and reported with its
reason: truncated JPEG/PNG/BMP, corrupt JPEG data, zero bytes, a text file named
.jpg, an unsupported format (GIF), a header claiming too many pixels, an
unreadable file (skipped when running as root: root reads through chmod 000).
Hidden files, Thumbs.db and non-images are ignored with a count; a PNG named
.jpg (and vice versa) is fine. `loupe data` exits 2 on bad files, 0 with
--skip-bad; a strict scan (what training does) fails listing path: reason."""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import Checker, fresh_dir, noise_image, run_tool  # noqa: E402

tool, cli, tmp = sys.argv[1], sys.argv[2], fresh_dir(sys.argv[3])
C = Checker("data_bad")
D = os.path.join(tmp, "DATA")
for s in ("train/neg", "train/pos", "valid/neg", "valid/pos"):
    os.makedirs(os.path.join(D, s))


def path(rel):
    return os.path.join(D, rel)


for i in range(3):
    noise_image(40, 30, i).save(path(f"train/neg/good{i}.jpg"))
    noise_image(40, 30, 10 + i).save(path(f"train/pos/good{i}.png"))
noise_image(40, 30, 20).save(path("valid/neg/v.jpg"))
noise_image(40, 30, 21).save(path("valid/pos/v.jpg"))
# content decides, not the name
noise_image(40, 30, 30).save(path("train/neg/really_png.jpg"), format="PNG")
noise_image(40, 30, 31).save(path("train/pos/really_jpeg.png"), format="JPEG")
noise_image(40, 30, 32).save(path("train/pos/no_extension"), format="JPEG")

jpg = open(path("train/neg/good0.jpg"), "rb").read()
png = open(path("train/pos/good0.png"), "rb").read()
expect = {}  # relpath -> reason substring
open(path("train/neg/trunc.jpg"), "wb").write(jpg[: len(jpg) // 2])
expect["train/neg/trunc.jpg"] = "truncated JPEG"
open(path("train/pos/trunc.png"), "wb").write(png[: len(png) // 2])
expect["train/pos/trunc.png"] = "truncated PNG"
open(path("train/neg/zero.jpg"), "wb").close()
expect["train/neg/zero.jpg"] = "empty file"
open(path("train/neg/text.jpg"), "w").write("this is not a picture\n")
expect["train/neg/text.jpg"] = "not an image"
Image.new("RGB", (8, 8)).save(path("train/pos/anim.jpg"), format="GIF")
expect["train/pos/anim.jpg"] = "unsupported format (GIF)"
# PNG header claiming 20000 x 20000 (400 Mpx) with almost no data: refused before any allocation
ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)


def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


open(path("train/pos/bomb.png"), "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
expect["train/pos/bomb.png"] = "too large"
# corrupt entropy-coded data in the middle of a JPEG
big = noise_image(200, 150, 5)
big.save(path("train/neg/corrupt_src.jpg"))
cj = bytearray(open(path("train/neg/corrupt_src.jpg"), "rb").read())
os.remove(path("train/neg/corrupt_src.jpg"))
sos = cj.find(b"\xff\xda")
for k in range(sos + 200, sos + 260):
    cj[k] = 0xFF if k % 7 == 0 else cj[k] ^ 0x5A
open(path("train/neg/corrupt.jpg"), "wb").write(bytes(cj))
expect["train/neg/corrupt.jpg"] = "JPEG"
bmp_path = path("train/pos/trunc.bmp")
noise_image(40, 30, 40).save(bmp_path)
b = open(bmp_path, "rb").read()
open(bmp_path, "wb").write(b[: len(b) - 500])
expect["train/pos/trunc.bmp"] = "truncated BMP"
root = os.geteuid() == 0
noise_image(40, 30, 41).save(path("train/pos/locked.jpg"))
os.chmod(path("train/pos/locked.jpg"), 0)
if root:
    print("note: running as root, chmod 000 does not stop reads: the unreadable-file case is skipped")
else:
    expect["train/pos/locked.jpg"] = "unreadable (Permission denied)"
# ignored: hidden files, AppleDouble, Thumbs.db, non-images
open(path("train/neg/.DS_Store"), "wb").write(b"\0\0\0\1Bud1")
open(path("train/neg/._good0.jpg"), "wb").write(b"\0\5\26\7junk")
open(path("train/pos/Thumbs.db"), "wb").write(b"\xd0\xcf\x11\xe0")
open(path("train/pos/notes.txt"), "w").write("labels were checked by Dr X\n")
open(path("train/pos/labels.csv"), "w").write("a,b\n")

n_good_train = {"neg": 4, "pos": 5 + (1 if root else 0)}

r = subprocess.run([cli, "data", D, "--json"], capture_output=True, text=True, timeout=60)
C.check(r.returncode == 2, f"loupe data exits 2 on bad files (got {r.returncode}; stderr {r.stderr})")
try:
    rep = json.loads(r.stdout)
except ValueError:
    rep = None
    C.check(False, f"--json output parses: {r.stdout[:300]}")
if rep:
    tr = rep["splits"]["train"]
    C.check(tr["classes"] == n_good_train, f"good images per class {tr['classes']} == {n_good_train}")
    bad = {b["path"]: b["reason"] for b in tr["bad"]}
    for rel, why in expect.items():
        C.check(rel in bad and why in bad[rel], f"{rel}: expected reason with '{why}', got {bad.get(rel)}")
    extra = set(bad) - set(expect)
    C.check(not extra, f"no unexpected bad files: {extra}")
    C.check(tr["ignored"] == 5, f"ignored count {tr['ignored']} == 5 ({tr['ignored_detail']})")
    C.check(tr["ignored_detail"]["hidden"] == 3 and tr["ignored_detail"]["not_images"] == 2, f"ignored detail {tr['ignored_detail']}")
    C.check(rep["splits"]["valid"]["classes"] == {"neg": 1, "pos": 1}, "valid counts")
    C.check(rep["num_bad"] == len(expect), f"num_bad {rep['num_bad']}")

r = subprocess.run([cli, "data", D], capture_output=True, text=True, timeout=60)
C.check(f"train: Found {sum(n_good_train.values())} images belonging to 2 classes." in r.stdout, "Keras-style Found line")
C.check("valid: Found 2 images belonging to 2 classes." in r.stdout, "valid Found line")
for rel, why in expect.items():
    C.check(f"{rel}: " in r.stdout, f"text report lists {rel}")
r = subprocess.run([cli, "data", D, "--skip-bad"], capture_output=True, text=True, timeout=60)
C.check(r.returncode == 0 and "warning" in r.stderr, f"--skip-bad exits 0 with a warning (got {r.returncode})")

# strict scan (training's default): an error listing every bad file
out = run_tool(tool, "scan", D)
C.check(out and out[0].startswith("ERROR"), "strict scan fails")
msg = "\n".join(out)
for rel, why in expect.items():
    C.check(f"{rel}: " in msg and why in msg, f"strict error lists {rel}")
out = run_tool(tool, "scan", D, "--skip-bad")
C.check(not out[0].startswith("ERROR"), "skip-bad scan succeeds")
C.check(sum(1 for l in out if l.startswith("BAD train")) == len(expect), "skip-bad scan keeps the bad list")
C.check(sum(1 for l in out if l.startswith("train ")) == sum(n_good_train.values()), "skip-bad scan keeps the good files")
# a smaller pixel limit refuses ordinary images too
r = subprocess.run([cli, "data", D, "--json", "--max-pixels", "1000"], capture_output=True, text=True, timeout=60)
rep = json.loads(r.stdout)
C.check(any("too large" in b["reason"] for b in rep["splits"]["valid"]["bad"]), "--max-pixels applies")
os.chmod(path("train/pos/locked.jpg"), 0o644)
C.done()
