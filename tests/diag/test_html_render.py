#!/usr/bin/env python3
"""diag_html_render: the HTML report renders in headless Chromium (Debian's
`chromium`): the screenshot is not blank and shows the charts' colours.
Exits 77 (skipped) when chromium is not installed.
Usage: test_html_render.py LOUPE_CLI WORKDIR"""
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfixtures as rf  # noqa: E402

CLI, WORK = sys.argv[1], sys.argv[2]
os.makedirs(WORK, exist_ok=True)
browser = shutil.which("chromium") or shutil.which("chromium-browser")
if not browser:
    print("diag_html_render: chromium not installed; skipped")
    sys.exit(77)

run = os.path.join(WORK, "render")
shutil.rmtree(run, ignore_errors=True)
rf.seed_story(run)
out = subprocess.run([CLI, "diagnose", run], capture_output=True, text=True)
if out.returncode != 0:
    sys.exit(f"diagnose failed: {out.stderr}")
report = os.path.abspath(os.path.join(run, "report.html"))
shot = os.path.join(WORK, "render.png")
if os.path.exists(shot):
    os.unlink(shot)
profile = os.path.join(WORK, "chromium-profile")
cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
       "--window-size=1200,2400", f"--screenshot={shot}", "file://" + report]
try:
    subprocess.run(cmd, capture_output=True, text=True, timeout=120)
except subprocess.TimeoutExpired:
    sys.exit("FAIL: chromium did not finish within 120 s")
if not os.path.exists(shot):
    sys.exit("FAIL: chromium wrote no screenshot")
img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
fails = []
nonwhite = (img.sum(2) < 720).mean()
if nonwhite < 0.03:
    fails.append(f"screenshot is almost blank ({nonwhite:.1%} non-white pixels)")
colours = len(np.unique(img.reshape(-1, 3) // 16, axis=0))
if colours < 20:
    fails.append(f"screenshot has only {colours} colours")
# the charts' red (#d9534f: val loss, misclassified share) and blue (#4a79b8 / #7aa6d8)
red = ((abs(img[..., 0] - 217) < 20) & (abs(img[..., 1] - 83) < 25) & (abs(img[..., 2] - 79) < 25)).sum()
blue = ((abs(img[..., 0] - 74) < 25) & (abs(img[..., 1] - 121) < 25) & (abs(img[..., 2] - 184) < 25)).sum()
if red < 500 or blue < 500:
    fails.append(f"chart colours missing (red {red} px, blue {blue} px): SVG not rendered?")
for f in fails:
    print("FAIL:", f)
if fails:
    sys.exit(1)
print(f"diag_html_render: ok ({nonwhite:.1%} non-white, {colours} colours, red {red} px, blue {blue} px)")
