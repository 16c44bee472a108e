"""Decode+resize throughput (not a test: no timing assertions). Usage:
  python3 tests/data/bench_data.py build-data/tests/data/data_tool /tmp/loupe-bench [seconds]
Prints img/s for 1024x768 JPEG photos -> 224x224 and 28x28 PNG -> 28x28, on 1 and 2
threads, and for JPEG with DCT scaling (lp_loader_config.dct_scaling)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import fresh_dir, noise_image  # noqa: E402

tool, tmp = sys.argv[1], fresh_dir(sys.argv[2])
secs = sys.argv[3] if len(sys.argv) > 3 else "4"
jpgs = []
for i in range(16):
    p = os.path.join(tmp, f"photo{i}.jpg")
    noise_image(1024, 768, i).save(p, quality=90)
    jpgs.append(p)
pngs = []
for i in range(200):
    p = os.path.join(tmp, f"small{i}.png")
    noise_image(28, 28, 100 + i).save(p)
    pngs.append(p)
for name, w, h, files, env in (("1024x768 JPEG -> 224x224", 224, 224, jpgs, {}),
                               ("1024x768 JPEG -> 224x224, DCT scaling", 224, 224, jpgs, {"LOUPE_BENCH_DCT": "1"}),
                               ("28x28 PNG -> 28x28", 28, 28, pngs, {})):
    for t in (1, 2):
        r = subprocess.run([tool, "bench", str(w), str(h), str(t), secs, *files], capture_output=True, text=True,
                           env={**os.environ, **env})
        print(f"{name}: {r.stdout.strip()}")
