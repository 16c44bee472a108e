"""Not a ctest: load time and peak memory of the real-size VGG16 (138M
parameters, 528 MB in F32) in each format, with /usr/bin/time -v.
  python3 tests/weights/measure_full_size.py BUILD_DIR WORK_DIR
Prints one line per format: file size, wall time and peak RSS of
`weights_engine --read` (lp_weights_read alone) and of `loupe convert`."""
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wcommon as W  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import safetensors_io as st  # noqa: E402

build, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
cli = os.path.join(build, "loupe")
drv = os.path.join(build, "tests", "weights", "weights_engine")
import torch  # noqa: E402

model = W.torch_vgg("vgg16", hidden=None, classes=1000)
sd = {k: v.numpy() for k, v in model.state_dict().items()}
files = {}
files["torchvision F32 safetensors"] = os.path.join(work, "vgg16.safetensors")
st.write(files["torchvision F32 safetensors"], sd)
files["torchvision BF16 safetensors"] = os.path.join(work, "vgg16_bf16.safetensors")
st.write(files["torchvision BF16 safetensors"], sd, dtype="BF16")
files["Keras HDF5 (model.save, top)"] = os.path.join(work, "vgg16.h5")
W.write_keras_h5(files["Keras HDF5 (model.save, top)"], W.keras_vgg_layers("vgg16", True, hidden=(4096, 4096), classes=1000), full_model=True)
files["ONNX (torch.onnx.export)"] = os.path.join(work, "vgg16.onnx")
torch.onnx.export(model, torch.randn(1, 3, 224, 224), files["ONNX (torch.onnx.export)"])
del model, sd


def timed(cmd):
    subprocess.run(["sh", "-c", "sync; cat %s > /dev/null" % cmd[-1 if cmd[0] == drv else 2]])  # warm page cache
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if r.returncode:
        return "failed: " + r.stderr[-300:]
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", r.stderr).group(1)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return "%s s, peak RSS %d MB" % (wall.split(":")[-1], rss // 1024)


print("%-32s %9s  %-34s %-34s" % ("format", "size", "lp_weights_read", "loupe convert (read + write)"))
for name, path in files.items():
    out = os.path.join(work, "out.safetensors")
    a = timed([drv, "--read", path])
    b = timed([cli, "convert", path, out])
    print("%-32s %6d MB  %-34s %-34s" % (name, os.path.getsize(path) // 2**20, a, b), flush=True)
    os.remove(path)
