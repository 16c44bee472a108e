#!/usr/bin/env python3
"""diag_thumbnails: report.html shows the most affected images (misclassified at
the analysed epoch, largest loss rise since the lowest-val_loss epoch, at most 8)
as PNG data: URIs of the right size and pixels, and a placeholder naming the
file and the reason for a deleted or corrupt image.

Which images and their captions are computed here from the run's own files
(valid_predictions.csv, run.json) with the csv module and NumPy; the expected
thumbnail pixels come from Pillow (loupe's decoders and BILINEAR resize are
documented as bit-exact with Pillow 9). When chromium is installed, the report
is also rendered and a thumbnail's colour must show on screen.
Usage: test_thumbnails.py THUMBS_PROBE LOUPE_CLI WORKDIR"""
import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfixtures as rf  # noqa: E402

PROBE, CLI, WORK = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
MAX_THUMBS, SIDE = 8, 96
os.makedirs(WORK, exist_ok=True)
fails = []


def check(cond, msg):
    if not cond:
        fails.append(msg)
    return cond


# ---- fixture: 3 classes, 40 images of several formats and shapes ------------
CLASSES = ["cat", "dog", "fox"]
SHAPES = [(200, 120), (90, 300), (64, 48), (97, 97), (500, 333), (120, 200), (301, 40), (96, 50)]  # (w, h)
FORMATS = ["png", "png", "jpg", "bmp", "png-gray", "png-rgba", "png", "png"]
GREEN = (0, 200, 0)


def make_image(path, w, h, fmt, rng, solid=None):
    if solid is not None:
        a = np.empty((h, w, 3), np.uint8)
        a[:] = solid
    else:  # smooth gradient plus noise: the pixels identify the image
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
        a = np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(a, "RGB")
    if fmt == "png-gray":
        im = im.convert("L")
    if fmt == "png-rgba":
        im = im.convert("RGBA")
        im.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L"))
    ext = {"jpg": "jpg", "bmp": "bmp"}.get(fmt, "png")
    path = f"{path}.{ext}"
    if ext == "jpg":
        im.save(path, quality=90)
    else:
        im.save(path)
    return path


def make_run(run, data):
    rng = np.random.default_rng(23)
    N, E, K = 40, 6, 3
    labels = rng.permutation(np.arange(N) % K)
    # 14 images drift to a wrong class, each at its own speed; the rest get a bit more confident
    wrong = np.arange(0, N, 3)[:14]
    speed = rng.permutation(np.linspace(0.4, 1.7, len(wrong)))
    fastest = wrong[np.argmax(speed)]  # solid green: the render check looks for it
    rel = []
    for i in range(N):
        d = os.path.join(data, "valid", CLASSES[labels[i]])
        os.makedirs(d, exist_ok=True)
        w, h = SHAPES[i % len(SHAPES)]
        p = make_image(os.path.join(d, f"img_{i:02d}"), w, h, FORMATS[i % len(FORMATS)], rng,
                       solid=GREEN if i == fastest else None)
        rel.append(os.path.relpath(p, data))
    probs = np.zeros((E, N, K))
    for e in range(E):
        t = e + 1
        logits = rng.normal(0, 0.05, (N, K))
        for i in range(N):
            if i in wrong:
                j = int(np.flatnonzero(wrong == i)[0])
                logits[i, labels[i]] += 1.0 - speed[j] * max(0, t - 3)
                logits[i, (labels[i] + 1) % K] += 0.6 + 0.2 * t
            else:
                logits[i, labels[i]] += 1.5 + 0.4 * min(t, 3)
        probs[e] = rf.softmax_rows(logits)
    probs = rf.rounded(probs)
    history = [dict(loss=0.8 * 0.7 ** e, accuracy=min(1.0, 0.7 + 0.05 * e)) for e in range(E)]
    rf.write_run(run, CLASSES, probs, labels, rel, history, config={"data": data})


# ---- the run's own numbers, read back from its files ------------------------
def expected_images(run):
    with open(os.path.join(run, "run.json")) as f:
        meta = json.load(f)
    classes, data = meta["classes"], meta["config"]["data"]
    with open(os.path.join(run, "valid_predictions.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = sorted({int(r["epoch"]) for r in rows})
    k = sum(1 for c in rows[0] if re.fullmatch(r"p\d+", c))
    first = [r for r in rows if int(r["epoch"]) == epochs[0]]
    paths = [r["path"] for r in first]
    index = {p: i for i, p in enumerate(paths)}
    labels = np.array([int(r["label"]) for r in first])
    P = np.zeros((len(epochs), len(paths), k))
    for r in rows:
        P[epochs.index(int(r["epoch"])), index[r["path"]]] = [float(r[f"p{c}"]) for c in range(k)]
    n = len(paths)
    loss = -np.log(np.maximum(P[:, np.arange(n), labels], 1e-30))  # (E, n)
    best, last = int(np.argmin(loss.mean(1))), len(epochs) - 1
    pred = P[last].argmax(1)
    rise = loss[last] - loss[best]
    cand = [i for i in range(n) if pred[i] != labels[i] and rise[i] > 0]
    cand.sort(key=lambda i: (-rise[i], i))
    out = []
    for i in cand[:MAX_THUMBS]:
        out.append(dict(path=paths[i], file=os.path.join(data, paths[i]), true=classes[labels[i]], pred=classes[pred[i]],
                        p_pred=P[last, i, pred[i]], p_true_best=P[best, i, labels[i]], p_true_last=P[last, i, labels[i]],
                        rise=rise[i], best=epochs[best], last=epochs[last]))
    return out, len(cand), epochs[best] != epochs[last]


def thumb_size(w, h):
    lo, hi = min(w, h), max(w, h)
    if hi <= SIDE:
        return w, h
    s = max(1, int(np.floor(lo * SIDE / hi + 0.5)))
    return (SIDE, s) if w >= h else (s, SIDE)


# ---- the report's section, parsed ------------------------------------------
class Figures(HTMLParser):
    """figure.thumb elements: data-path, img attributes, placeholder and caption text."""

    def __init__(self):
        super().__init__()
        self.figs, self.cur, self.where = [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "thumb" in (a.get("class") or "").split():
            self.cur = dict(path=a.get("data-path"), img=None, placeholder="", caption="")
            self.figs.append(self.cur)
        elif self.cur is not None and tag == "img":
            self.cur["img"] = a
        elif self.cur is not None and tag == "div" and a.get("class") == "placeholder":
            self.where = "placeholder"
        elif self.cur is not None and tag == "figcaption":
            self.where = "caption"
        elif self.cur is not None and tag == "br" and self.where:
            self.cur[self.where] += "\n"

    def handle_endtag(self, tag):
        if tag == "figure":
            self.cur = None
        if tag in ("div", "figcaption"):
            self.where = None

    def handle_data(self, data):
        if self.cur is not None and self.where:
            self.cur[self.where] += data


def section(html):
    m = re.search(r"<h2>Most affected images</h2>(.*?)<h2>", html, re.S)
    return m.group(1) if m else None


def read_report(path):
    with open(path, encoding="utf-8") as f:
        html = f.read()
    sec = section(html)
    if not check(sec is not None, f"{path}: no 'Most affected images' section"):
        return html, []
    p = Figures()
    p.feed(sec)
    return html, p.figs


def check_caption(fig, e):
    cap = fig["caption"]
    lines = [l.strip() for l in cap.split("\n")]
    want = [os.path.basename(e["path"]), f"true {e['true']}, predicted {e['pred']} (p {e['p_pred']:.3f})",
            f"p(true) {e['p_true_best']:.3f} \u2192 {e['p_true_last']:.3f}",
            f"loss {e['rise']:+.3f} (epoch {e['best']} \u2192 {e['last']})"]
    check(lines == want, f"{e['path']}: caption {lines}, expected {want}")


def check_thumbnail(fig, e):
    img = fig["img"]
    if not check(img is not None, f"{e['path']}: no <img> (placeholder: {fig['placeholder']!r})"):
        return
    src = img.get("src", "")
    prefix = "data:image/png;base64,"
    if not check(src.startswith(prefix), f"{e['path']}: src is not a PNG data: URI ({src[:40]!r})"):
        return
    try:
        raw = base64.b64decode(src[len(prefix):], validate=True)
        thumb = Image.open(io.BytesIO(raw))
        thumb.load()
    except Exception as ex:  # noqa: BLE001 - any failure to decode is the finding
        check(False, f"{e['path']}: data: URI does not decode as a PNG ({ex})")
        return
    check(thumb.format == "PNG", f"{e['path']}: embedded image is {thumb.format}, not PNG")
    orig = Image.open(e["file"])
    tw, th = thumb_size(*orig.size)
    check(thumb.size == (tw, th), f"{e['path']}: thumbnail {thumb.size}, expected {(tw, th)} from {orig.size}")
    check((img.get("width"), img.get("height")) == (str(thumb.size[0]), str(thumb.size[1])),
          f"{e['path']}: <img> width/height {img.get('width')}x{img.get('height')} differ from the PNG's {thumb.size}")
    if thumb.size == (tw, th):
        ref = np.asarray(orig.convert("RGB").resize((tw, th), Image.BILINEAR), dtype=int)
        got = np.asarray(thumb.convert("RGB"), dtype=int)
        diff = np.abs(ref - got).max()
        check(diff == 0, f"{e['path']}: thumbnail pixels differ from Pillow's BILINEAR resize by up to {diff}")


# ---- run -----------------------------------------------------------------------
run, data = os.path.join(WORK, "run"), os.path.join(WORK, "data")
shutil.rmtree(run, ignore_errors=True)
shutil.rmtree(data, ignore_errors=True)
make_run(run, data)
exp, n_rose, rose = expected_images(run)
# one top PNG deleted, one cut in half, the rest (several formats) intact
pngs = [e for e in exp[1:] if e["file"].endswith(".png")]
deleted, corrupt = pngs[0], pngs[1]
intact = [e for e in exp if e is not deleted and e is not corrupt]
if not rose or n_rose <= MAX_THUMBS or len({os.path.splitext(e["file"])[1] for e in intact}) < 2:
    sys.exit(f"fixture broken: {n_rose} images rose (need > {MAX_THUMBS}), shown {[e['file'] for e in exp]}")
os.unlink(deleted["file"])
with open(corrupt["file"], "rb") as f:
    blob = f.read()
with open(corrupt["file"], "wb") as f:
    f.write(blob[: len(blob) // 2])

report = os.path.join(WORK, "report.html")
out = subprocess.run([PROBE, run, report], capture_output=True, text=True)
if out.returncode != 0:
    sys.exit(f"FAIL: thumbs_probe: {out.stderr}")
html, figs = read_report(report)
check([f["path"] for f in figs] == [e["path"] for e in exp],
      f"images shown {[f['path'] for f in figs]}, expected (largest rise first) {[e['path'] for e in exp]}")
for fig, e in zip(figs, exp):
    check_caption(fig, e)
    if e is deleted:
        check(fig["img"] is None and os.path.basename(e["path"]) in fig["placeholder"] and "not found" in fig["placeholder"],
              f"{e['path']} (deleted): expected a placeholder naming it and 'not found', got {fig}")
    elif e is corrupt:
        check(fig["img"] is None and os.path.basename(e["path"]) in fig["placeholder"] and "PNG" in fig["placeholder"],
              f"{e['path']} (cut in half): expected a placeholder naming it and the PNG error, got {fig}")
    else:
        check_thumbnail(fig, e)
# bounded: 8 thumbnails of at most 96x96 RGB cannot take more than a few hundred KB
n_uri = len(re.findall(r"data:image/png;base64,", html))
check(n_uri == len(exp) - 2, f"{n_uri} data: URIs, expected {len(exp) - 2}")
check(len(html) < 600_000, f"report is {len(html)} bytes")

# without a decoder the report is still written, with a placeholder per image
report_nd = os.path.join(WORK, "report_no_decoder.html")
out = subprocess.run([PROBE, run, report_nd, "--no-decoder"], capture_output=True, text=True)
check(out.returncode == 0, f"thumbs_probe --no-decoder failed: {out.stderr}")
if out.returncode == 0:
    _, figs_nd = read_report(report_nd)
    check([f["path"] for f in figs_nd] == [e["path"] for e in exp] and all(f["img"] is None and f["placeholder"] for f in figs_nd),
          "without a decoder: expected the same images, each as a placeholder")

# loupe diagnose writes the same section (the images it lists do not depend on the decoder)
out = subprocess.run([CLI, "diagnose", run, "--short"], capture_output=True, text=True)
check(out.returncode == 0, f"loupe diagnose failed: {out.stderr}")
if out.returncode == 0:
    _, figs_cli = read_report(os.path.join(run, "report.html"))
    check([f["path"] for f in figs_cli] == [e["path"] for e in exp], "loupe diagnose's report lists other images")

# rendered: the solid green image (img_00) shows as a 96-pixel-wide block
browser = shutil.which("chromium") or shutil.which("chromium-browser")
green = np.asarray(Image.open(exp[0]["file"]).convert("RGB"))
if not (green == GREEN).all():
    sys.exit("fixture broken: the image with the largest rise is not the solid green one")
if browser and not fails:
    shot, profile = os.path.join(WORK, "thumbs.png"), os.path.join(WORK, "chromium-profile")
    if os.path.exists(shot):
        os.unlink(shot)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--window-size=1200,4000", f"--screenshot={shot}", "file://" + os.path.abspath(report)]
    try:
        subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        fails.append("chromium did not finish within 120 s")
    if check(os.path.exists(shot), "chromium wrote no screenshot"):
        img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
        green = ((img[..., 0] < 20) & (abs(img[..., 1] - 200) < 20) & (img[..., 2] < 20)).sum()
        w, h = thumb_size(*Image.open(exp[0]["file"]).size)
        check(green >= 0.8 * w * h, f"rendered report shows {green} green pixels; the {w}x{h} green thumbnail is missing")
elif not browser:
    print("diag_thumbnails: chromium not installed; rendering not checked")

for f in fails:
    print("FAIL:", f)
if fails:
    sys.exit(1)
print(f"diag_thumbnails: ok ({len(exp)} of {n_rose} images whose loss rose; {n_uri} thumbnails, 2 placeholders; "
      f"report {len(html)} bytes)")
