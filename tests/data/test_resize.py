"""data_resize: decode + resize (+ keep-aspect centre crop) equals Keras'
load_img(path, color_mode, target_size, interpolation, keep_aspect_ratio),
re-implemented here with Pillow exactly as keras.utils.load_img does it:
convert("RGB"|"L"), then resize((w, h), NEAREST|BILINEAR[, box=crop]) when the
size differs. Tolerance: exact (max |difference| 0), for nearest and for
bilinear (Pillow's antialiased triangle filter on downscale). Also checks the
preprocessing modes on top of the resized pixels (float tolerance 1e-5)."""
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import Checker, fresh_dir, noise_image, run_tool  # noqa: E402

tool, cli, tmp = sys.argv[1], sys.argv[2], fresh_dir(sys.argv[3])
C = Checker("data_resize")
RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}


def keras_load(path, ch, w, h, interp, keep):
    img = Image.open(path)
    img = img.convert("RGB" if ch == 3 else "L")
    if img.size != (w, h):
        if keep:
            width, height = img.size
            # max(1, ...): for extreme aspect ratios Keras fails on an empty box; loupe keeps 1 pixel
            crop_height = max(1, min(height, (width * h) // w))
            crop_width = max(1, min(width, (height * w) // h))
            hs, ws = (height - crop_height) // 2, (width - crop_width) // 2
            img = img.resize((w, h), RESAMPLE[interp], box=[ws, hs, ws + crop_width, hs + crop_height])
        else:
            img = img.resize((w, h), RESAMPLE[interp])
    a = np.array(img).astype(np.float32)
    return a if ch == 3 else a[:, :, None]


sources = []
for i, (w, h, fmt) in enumerate([(1024, 768, "jpg"), (300, 200, "png"), (37, 23, "png"), (224, 224, "jpg"),
                                  (640, 481, "bmp"), (28, 28, "png"), (97, 311, "jpg")]):
    p = os.path.join(tmp, f"src{i}_{w}x{h}.{fmt}")
    noise_image(w, h, i).save(p)
    sources.append(p)
targets = [(224, 224), (28, 28), (64, 48), (100, 80), (7, 300)]
lines, refs = [], []
for si, p in enumerate(sources):
    for (w, h) in targets:
        for interp in ("nearest", "bilinear"):
            for keep in (0, 1):
                for ch in (3, 1):
                    if si == 0 and (ch == 1 or (w, h) != (224, 224)) and not (interp == "bilinear" and keep == 0 and (w, h) == (28, 28)):
                        continue  # keep the big source to a few cases (time)
                    out = os.path.join(tmp, f"o{len(lines)}.f32")
                    lines.append(f"{p} {out} {w} {h} {ch} {interp} {keep} none\n")
                    refs.append((p, out, ch, w, h, interp, keep))
lst = os.path.join(tmp, "list.txt")
with open(lst, "w") as f:
    f.writelines(lines)
res = run_tool(tool, "loadmany", lst)
worst = {"nearest": 0, "bilinear": 0}
for line, (p, out, ch, w, h, interp, keep) in zip(res, refs):
    tag = f"{os.path.basename(p)} -> {w}x{h} {interp} keep={keep} ch={ch}"
    if line != "OK":
        C.check(False, f"{tag}: {line}")
        continue
    got = np.fromfile(out, np.float32).reshape(ch, h, w).transpose(1, 2, 0)
    want = keras_load(p, ch, w, h, interp, keep)
    d = float(np.abs(got - want).max())
    worst[interp] = max(worst[interp], d)
    C.check(d == 0, f"{tag}: max |loupe - keras/PIL| = {d}")
C.check(len(res) == len(refs), "one result per case")
print(f"{len(refs)} resize cases; worst difference: nearest {worst['nearest']}, bilinear {worst['bilinear']}")

# preprocessing modes on top of the resized pixels
p = sources[1]
modes = ["rescale", "caffe", "torch", "none"]
lines = [f"{p} {tmp}/pre_{m}_{ch}.f32 64 48 {ch} bilinear 0 {m}\n" for m in modes for ch in (3, 1)]
with open(lst, "w") as f:
    f.writelines(lines)
res = run_tool(tool, "loadmany", lst)
C.check(all(r == "OK" for r in res), "preprocess loads")
for m in modes:
    for ch in (3, 1):
        x = np.fromfile(f"{tmp}/pre_{m}_{ch}.f32", np.float32).reshape(ch, 48, 64)
        a = keras_load(p, ch, 64, 48, "bilinear", 0).transpose(2, 0, 1)
        if m == "rescale":
            want = a * np.float32(1.0 / 255)
        elif m == "caffe":
            want = a[::-1] - np.array([103.939, 116.779, 123.68], np.float32)[:, None, None] if ch == 3 else a - np.float32((103.939 + 116.779 + 123.68) / 3)
        elif m == "torch":
            mean = np.array([0.485, 0.456, 0.406] if ch == 3 else [0.449], np.float32)[:, None, None]
            std = np.array([0.229, 0.224, 0.225] if ch == 3 else [0.226], np.float32)[:, None, None]
            want = (a / 255 - mean) / std
        else:
            want = a
        d = float(np.abs(x - want).max())
        C.check(d < 1e-4, f"preprocess {m} ch={ch}: max diff {d}")
C.done()
