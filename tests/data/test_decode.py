"""data_decode: every supported format and mode decodes to the same pixels as
Pillow's Image.open(f).convert("RGB" | "L") (what Keras' load_img does).
Tolerance: exact (0) for everything; the one documented difference is 16-bit
grayscale PNG, where Pillow clips to 255 and loupe keeps the high byte (v >> 8).
EXIF orientation is applied (compared with ImageOps.exif_transpose)."""
import os
import sys

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import Checker, fresh_dir, noise_image, run_tool, write_png  # noqa: E402

tool, cli, tmp = sys.argv[1], sys.argv[2], fresh_dir(sys.argv[3])
C = Checker("data_decode")
cases = []  # (path, reference callable(channels) -> ndarray, apply_exif)


def add(name, save, ref=None, exif=True):
    p = os.path.join(tmp, name)
    save(p)
    cases.append((p, ref, exif))


def pil_ref(p, ch, exif=True):
    im = Image.open(p)
    if exif:
        im = ImageOps.exif_transpose(im)
    return np.array(im.convert("RGB" if ch == 3 else "L"))


rgb = noise_image(61, 47, 1)
gray = rgb.convert("L")
# JPEG: baseline 4:2:0, 4:4:4, gray, progressive, CMYK (Pillow writes Adobe inverted CMYK), odd sizes
add("rgb420.jpg", lambda p: rgb.save(p, quality=90))
add("rgb444.jpg", lambda p: rgb.save(p, quality=95, subsampling=0))
add("gray.jpg", lambda p: gray.save(p, quality=90))
add("progressive.jpg", lambda p: rgb.save(p, quality=85, progressive=True))
add("cmyk.jpg", lambda p: rgb.convert("CMYK").save(p, quality=95))
add("odd.jpg", lambda p: noise_image(3, 1, 2).save(p))
add("restart.jpg", lambda p: noise_image(100, 60, 9).save(p, quality=80, optimize=True))
# EXIF orientations 2..8 (a phone photo held sideways is 6)
for o in range(2, 9):
    ex = Image.Exif()
    ex[0x0112] = o
    add(f"exif{o}.jpg", lambda p, ex=ex: rgb.save(p, quality=92, exif=ex.tobytes()))
add("exif6_ignored.jpg", lambda p: rgb.save(p, quality=92, exif=(lambda e: (e.__setitem__(0x0112, 6), e)[1])(Image.Exif()).tobytes()), exif=False)
# PNG: RGB, RGBA (alpha dropped like convert("RGB")), L, LA, P, P with transparency, 1-bit, 16-bit, interlaced
add("rgb.png", lambda p: rgb.save(p))
add("rgba.png", lambda p: Image.fromarray(np.dstack([np.array(rgb), np.arange(61 * 47, dtype=np.uint8).reshape(47, 61)]), "RGBA").save(p))
add("gray.png", lambda p: gray.save(p))
add("la.png", lambda p: gray.convert("LA").save(p))
add("palette.png", lambda p: rgb.convert("P", palette=Image.ADAPTIVE, colors=50).save(p))
add("palette_trns.png", lambda p: rgb.convert("P", palette=Image.ADAPTIVE, colors=16).save(p, transparency=3))
add("bits1.png", lambda p: gray.convert("1").save(p))
add("gray4.png", lambda p: gray.convert("P", palette=Image.ADAPTIVE, colors=16).save(p, bits=4))
add("interlaced_rgb.png", lambda p: write_png(p, np.array(rgb), interlace=True))
add("interlaced_gray.png", lambda p: write_png(p, np.array(gray), interlace=True))
add("interlaced_rgba.png", lambda p: write_png(p, np.array(rgb.convert("RGBA")), interlace=True))
rgb16 = (np.array(rgb).astype(np.uint16) * 257 + np.arange(61, dtype=np.uint16)[None, :, None])
add("rgb16.png", lambda p: write_png(p, rgb16, depth=16))
add("rgb16_interlaced.png", lambda p: write_png(p, rgb16, depth=16, interlace=True))
gray16 = np.array(gray).astype(np.uint16) * 257 + 100
# Pillow clips 16-bit gray to 255 when converting; loupe keeps the high byte
add("gray16.png", lambda p: write_png(p, gray16, depth=16),
    ref=lambda ch: (gray16 >> 8).astype(np.uint8) if ch == 1 else np.repeat((gray16 >> 8).astype(np.uint8)[:, :, None], 3, 2))
# BMP 24-bit, 8-bit gray/palette, 1-bit; PPM/PGM
add("rgb.bmp", lambda p: rgb.save(p))
add("gray.bmp", lambda p: gray.save(p))
add("palette.bmp", lambda p: rgb.convert("P", palette=Image.ADAPTIVE, colors=20).save(p))
add("bits1.bmp", lambda p: gray.convert("1").save(p))
add("rgb.ppm", lambda p: rgb.save(p))
add("gray.pgm", lambda p: gray.save(p))
# TIFF and WebP (when Pillow can write them; loupe may be built without them: then "unsupported")
add("rgb.tif", lambda p: rgb.save(p))
add("lzw.tif", lambda p: rgb.save(p, compression="tiff_lzw"))
add("gray.tif", lambda p: gray.save(p))
add("lossless.webp", lambda p: rgb.save(p, lossless=True))
add("lossy.webp", lambda p: rgb.save(p, quality=80))

lst = os.path.join(tmp, "list.txt")
with open(lst, "w") as f:
    for i, (p, _, exif) in enumerate(cases):
        for ch in (3, 1):
            f.write(f"{p} {p}.{ch}.raw {ch} {1 if exif else 0}\n")
out = run_tool(tool, "decodemany", lst)
C.check(len(out) == 2 * len(cases), f"one line per decode ({len(out)})")
k = 0
for p, ref, exif in cases:
    for ch in (3, 1):
        line = out[k].split()
        k += 1
        name = os.path.basename(p)
        if line[0] != "OK":
            optional = name.endswith((".tif", ".webp")) and "built without" in " ".join(line)
            if optional:
                print(f"note: {name}: {' '.join(line[1:])}")
            else:
                C.check(False, f"{name} ch{ch}: {' '.join(line)}")
            continue
        w, h, c = int(line[1]), int(line[2]), int(line[3])
        got = np.fromfile(f"{p}.{ch}.raw", np.uint8).reshape((h, w) if ch == 1 else (h, w, 3))
        want = ref(ch) if ref else pil_ref(p, ch, exif)
        if got.shape != want.shape:
            C.check(False, f"{name} ch{ch}: shape {got.shape} != {want.shape}")
            continue
        diff = int(np.abs(got.astype(int) - want.astype(int)).max())
        C.check(diff == 0, f"{name} ch{ch}: max |loupe - PIL| = {diff} (mode {line[4]})")
    if name.startswith("exif") and exif:
        C.check(int(line[5]) == int(name[4]), f"{name}: orientation reported {line[5]}")
C.done()
