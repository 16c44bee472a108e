"""Imported weights through OUR engine (nn.h forward via tests/weights/weights_engine.c):
  A. a Keras notop VGG16 file + a flatten,dense head: engine logits vs the
     Keras function (NumPy, NHWC) followed by the same dense head;
  B. the real-size torchvision VGG16 (1000 classes, 528 MB safetensors), converted
     with `loupe convert`: engine logits vs torchvision's at 224x224."""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wcommon as W  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import safetensors_io as st  # noqa: E402

cli, driver, work = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(work, exist_ok=True)
TOL = 1e-4  # max |a - b| / max |b|, fp32 oneDNN vs reference


def p(name):
    return os.path.join(work, name)


def engine(weights, extra, x, head, classes):
    x.astype(np.float32).tofile(p("x.bin"))
    n, _, h, w = x.shape
    r = subprocess.run([driver, weights, extra, p("x.bin"), str(n), str(h), str(w), head, p("logits.bin")], capture_output=True, text=True)
    if not W.check(r.returncode == 0, "engine run on %s (exit %d: %s)" % (os.path.basename(weights), r.returncode, r.stderr.strip())):
        return None
    return np.fromfile(p("logits.bin"), dtype=np.float32).reshape(n, classes)


# A. Keras notop + head
layers = W.keras_vgg_layers("vgg16", False, seed=21)
W.write_keras_h5(p("notop.h5"), layers)
rng = np.random.default_rng(22)
x_nhwc = rng.standard_normal((2, 64, 64, 3)) * 50.0
feat = W.keras_forward(x_nhwc, layers, False)  # (2, 2, 2, 512) NHWC
hw = rng.standard_normal((10, 512 * 2 * 2)) * 0.01
hb = rng.standard_normal(10) * 0.1
ref = feat.transpose(0, 3, 1, 2).reshape(2, -1) @ hw.T + hb  # our head flattens C,H,W
st.write(p("head.safetensors"), {"head.1.weight": hw, "head.1.bias": hb}, dtype="F32")
got = engine(p("notop.h5"), p("head.safetensors"), x_nhwc.transpose(0, 3, 1, 2), "flatten,dense", 10)
if got is not None:
    W.check(W.rel_err(got, ref) < TOL, "A. Keras notop through the engine: max rel err %.2e" % W.rel_err(got, ref))

# B. real-size torchvision VGG16 -> loupe convert -> engine
import torch  # noqa: E402

torch.set_num_threads(2)
model = W.torch_vgg("vgg16", hidden=None, classes=1000, seed=23)
st.write(p("vgg16_tv.safetensors"), {k: v.numpy() for k, v in model.state_dict().items()})
rc, so, se = W.convert(cli, p("vgg16_tv.safetensors"), p("vgg16_loupe.safetensors"))
os.remove(p("vgg16_tv.safetensors"))
if W.check(rc == 0, "B. convert the real-size torchvision VGG16 (exit %d %s)" % (rc, se.strip())):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(24))
    with torch.no_grad():
        ref = model(x).numpy()
    got = engine(p("vgg16_loupe.safetensors"), "-", x.numpy(), "-", 1000)
    if got is not None:
        W.check(W.rel_err(got, ref) < TOL, "B. torchvision VGG16 (1000 classes) through the engine at 224: max rel err %.2e" % W.rel_err(got, ref))
os.remove(p("vgg16_loupe.safetensors"))
W.finish()
