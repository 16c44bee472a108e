"""data_fuzz_smoke (LOUPE_FUZZ builds only): writes a small seed corpus of every
format, then runs the libFuzzer decode target for a few seconds. Fails when the
fuzzer finds a crash, leak or sanitizer error."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import fresh_dir, noise_image, write_png  # noqa: E402

fuzz, tmp, secs = sys.argv[1], fresh_dir(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 20
corpus = fresh_dir(os.path.join(tmp, "corpus"))
rgb = noise_image(19, 11, 1)
rgb.save(os.path.join(corpus, "a.jpg"), quality=70)
rgb.save(os.path.join(corpus, "p.jpg"), quality=70, progressive=True)
rgb.convert("CMYK").save(os.path.join(corpus, "c.jpg"))
rgb.convert("L").save(os.path.join(corpus, "g.jpg"))
rgb.save(os.path.join(corpus, "a.png"))
rgb.convert("P", palette=Image.ADAPTIVE, colors=8).save(os.path.join(corpus, "p.png"), transparency=1)
write_png(os.path.join(corpus, "i.png"), np.array(rgb).astype(np.uint16) * 200, depth=16, interlace=True)
rgb.save(os.path.join(corpus, "a.bmp"))
rgb.convert("P").save(os.path.join(corpus, "p.bmp"))
rgb.save(os.path.join(corpus, "a.ppm"))
rgb.convert("L").save(os.path.join(corpus, "a.pgm"))
rgb.save(os.path.join(corpus, "a.tif"))
rgb.save(os.path.join(corpus, "a.webp"), lossless=True)
r = subprocess.run([fuzz, f"-max_total_time={secs}", "-rss_limit_mb=1024", "-max_len=65536",
                    f"-artifact_prefix={tmp}/", corpus], capture_output=True, text=True)
print(r.stderr[-3000:])
sys.exit(r.returncode)
