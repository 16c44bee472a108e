"""Helpers shared by the data tests: fixture writers and the data_tool driver."""
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def noise_image(w, h, seed, mode="RGB"):
    """Smooth gradient plus noise: realistic enough for JPEG, varied enough for resize."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) * 127 // max(w + h - 2, 1))], -1)
    arr = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def _chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(path, arr, depth=8, interlace=False):
    """PNG writer for what PIL cannot write: 16-bit RGB, Adam7 interlacing.
    arr: (h, w) gray or (h, w, 3|4) uint8/uint16."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    dt = ">u2" if depth == 16 else "u1"
    a3 = arr.reshape(h, w, ch).astype(dt)

    def rows(sub):
        return b"".join(b"\0" + sub[y].tobytes() for y in range(sub.shape[0]))

    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = a3[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += rows(sub)
    else:
        raw = rows(a3)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def run_tool(tool, *args):
    r = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        sys.exit(f"data_tool {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout.splitlines()


class Checker:
    def __init__(self, name):
        self.name, self.failures, self.checks = name, 0, 0

    def check(self, cond, msg):
        self.checks += 1
        if not cond:
            self.failures += 1
            print(f"FAIL: {msg}")

    def done(self):
        print(f"{self.name}: {self.checks - self.failures}/{self.checks} checks passed")
        sys.exit(1 if self.failures else 0)
