"""Keras' ResNet50 (keras.applications.resnet50, ResNet v1) from its HDF5 weights.

The file is written in Keras 2's layout with Keras' layer and weight names (conv1_conv,
conv2_block1_1_conv/kernel:0, conv2_block1_1_bn/gamma:0 ..., predictions) and random
values (batch-norm statistics included). The reference is Keras' function written here
in torch from keras/applications/resnet.py: convs with biases, batch norm with epsilon
1.001e-5, the stride of a stage's first block on its first 1x1 conv and on the shortcut,
ZeroPadding2D + valid convs and pooling, global average pooling, Dense.
- `loupe convert` gives torchvision's names, metadata resnet_version v1 and caffe
  preprocessing; loaded into torchvision's resnet50 with its strides moved to v1, the
  tensors compute the reference's logits (conv biases moved into the running means,
  Keras' epsilon into the running variances);
- `loupe predict` of the checkpoint gives the reference's probabilities on a caffe-
  preprocessed image (loupe builds the v1 net; the V1.5 net's probabilities are shown to
  differ, so the check can fail);
- `loupe train --weights keras.h5` loads every tensor but predictions, saves a v1
  checkpoint, and `--resume` without --weights goes on with the v1 net;
- a user's model (ResNet50 nested as one layer, GlobalAveragePooling2D, Dense(1)) predicts the
  Keras model's sigmoid output as its second class;
- Keras' ResNet50V2 names and --model resnet18 are refused with what to do."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "train"))
import make_data  # noqa: E402
import safetensors_io as st  # noqa: E402
import wcommon as W  # noqa: E402

cli, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
torch.set_num_threads(2)
rng = np.random.default_rng(11)
CLASSES = 5
STAGES = [(2, 64, 3, 1), (3, 128, 4, 2), (4, 256, 6, 2), (5, 512, 3, 2)]  # Keras stack1 calls: name, filters, blocks, stride1


def p(name):
    return os.path.join(work, name)


# ---- Keras' ResNet50 weights, in Keras' layer order --------------------------------------
def conv(k, cin, cout):
    return [(rng.standard_normal((k, k, cin, cout)) * np.sqrt(2.0 / (k * k * cin))).astype(np.float32),
            (rng.standard_normal(cout) * 0.1).astype(np.float32)]


def bn(c):
    return [rng.uniform(0.5, 1.0, c).astype(np.float32), (rng.standard_normal(c) * 0.1).astype(np.float32),
            (rng.standard_normal(c) * 0.1).astype(np.float32), rng.uniform(0.5, 2.0, c).astype(np.float32)]


layers = [("input_1", []), ("conv1_pad", []), ("conv1_conv", conv(7, 3, 64)), ("conv1_bn", bn(64)), ("conv1_relu", []), ("pool1_pad", []),
          ("pool1_pool", [])]
cin = 64
for s, f, nb, _ in STAGES:
    for b in range(1, nb + 1):
        n = "conv%d_block%d" % (s, b)
        layers += [(n + "_1_conv", conv(1, cin, f)), (n + "_1_bn", bn(f)), (n + "_1_relu", []), (n + "_2_conv", conv(3, f, f)), (n + "_2_bn", bn(f)),
                   (n + "_2_relu", [])]
        if b == 1:
            layers += [(n + "_0_conv", conv(1, cin, 4 * f)), (n + "_3_conv", conv(1, f, 4 * f)), (n + "_0_bn", bn(4 * f)), (n + "_3_bn", bn(4 * f))]
        else:
            layers += [(n + "_3_conv", conv(1, f, 4 * f)), (n + "_3_bn", bn(4 * f))]
        layers += [(n + "_add", []), (n + "_out", [])]
        cin = 4 * f
layers += [("avg_pool", []), ("predictions", [(rng.standard_normal((2048, CLASSES)) * 0.02).astype(np.float32),
                                              (rng.standard_normal(CLASSES) * 0.1).astype(np.float32)])]
KW = dict(layers)


def write_keras(path, rename=None):
    W.write_keras_h5(path, [(rename(n) if rename else n, a) for n, a in layers])
    with h5py.File(path, "a") as fh:  # batch norm layers have 4 weights with their own names
        for n, arrs in layers:
            if not n.endswith("_bn"):
                continue
            n = rename(n) if rename else n
            g = fh[n]
            for k in list(g.keys()):
                del g[k]
            names = [("%s/%s:0" % (n, w)).encode() for w in ("gamma", "beta", "moving_mean", "moving_variance")]
            g.attrs["weight_names"] = names
            for nm, v in zip(names, arrs):
                g.create_dataset(nm.decode(), data=v)


# ---- Keras' function, from keras/applications/resnet.py ----------------------------------
def k_conv(x, name, stride=1, pad=0):
    w, b = KW[name]
    return F.conv2d(F.pad(x, (pad,) * 4), torch.from_numpy(w).permute(3, 2, 0, 1), torch.from_numpy(b), stride)


def k_bn(x, name):
    g, b, m, v = (torch.from_numpy(a) for a in KW[name])
    return F.batch_norm(x, m, v, g, b, False, 0.0, 1.001e-5)


def keras_resnet50(x, v15=False):
    x = F.relu(k_bn(k_conv(x, "conv1_conv", 2, 3), "conv1_bn"))
    x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)  # ZeroPadding2D then valid: x >= 0, so zeros are as -inf
    for s, f, nb, s1 in STAGES:
        for b in range(1, nb + 1):
            n = "conv%d_block%d" % (s, b)
            stride = s1 if b == 1 else 1
            sc = k_bn(k_conv(x, n + "_0_conv", stride), n + "_0_bn") if b == 1 else x
            y = F.relu(k_bn(k_conv(x, n + "_1_conv", 1 if v15 else stride), n + "_1_bn"))
            y = F.relu(k_bn(k_conv(y, n + "_2_conv", stride if v15 else 1, 1), n + "_2_bn"))
            y = k_bn(k_conv(y, n + "_3_conv"), n + "_3_bn")
            x = F.relu(sc + y)
    w, b = KW["predictions"]
    return F.linear(x.mean((2, 3)), torch.from_numpy(w).t(), torch.from_numpy(b))


# the classifier scaled so that the test image's logits spread over about 2: the
# probabilities then tell the v1 and V1.5 nets apart (the base's output is large)
img = W.random_image(64, 3)
xin = torch.from_numpy(W.model_input(img, "caffe"))
with torch.no_grad():
    z = keras_resnet50(xin).numpy()
KW["predictions"][0] *= np.float32(2.0 / (z.max() - z.min()))
KW["predictions"][1][:] = 0

keras_h5 = p("resnet50_keras.h5")
write_keras(keras_h5)
ckpt = p("resnet50_keras.safetensors")
rc, so, se = W.run(cli, "convert", keras_h5, ckpt, "--size", "64")
W.check(rc == 0, "convert Keras ResNet50: exit 0 (%d: %s)" % (rc, se.strip()))
sd, meta = st.read(ckpt)
W.check(meta.get("arch") == "resnet50" and meta.get("resnet_version") == "v1" and meta.get("preprocess") == "caffe" and meta.get("top") == "keep"
        and meta.get("num_classes") == str(CLASSES) and meta.get("source") == "keras-h5" and meta.get("input_size") == "64x64",
        "metadata %s" % {k: meta.get(k) for k in ("arch", "resnet_version", "preprocess", "top", "num_classes", "source", "input_size")})

tv = torchvision.models.resnet50(num_classes=CLASSES)
for layer in (tv.layer2, tv.layer3, tv.layer4):
    layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
try:
    tv.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    W.check(True, "the checkpoint loads into torchvision's resnet50 (strides moved to v1) with strict=True")
except Exception as e:  # noqa: BLE001
    W.check(False, "load_state_dict(strict=True): %s" % e)
tv.eval()
x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 50
with torch.no_grad():
    want, got = keras_resnet50(x), tv(x)
err = float((got - want).abs().max() / want.abs().max())
W.check(err < 1e-4, "torchvision's v1 net on the checkpoint computes Keras' logits within 1e-4 of the largest (%.2e)" % err)

# ---- loupe's own net: predict ------------------------------------------------------------
W.write_ppm(p("img.ppm"), img)
rc, out, se = W.predict(cli, ckpt, p("img.ppm"))
if W.check(rc == 0 and out is not None, "predict: exit 0 (%d: %s)" % (rc, se.strip())):
    probs = np.array(out["probs"])
    with torch.no_grad():
        p_v1 = W.softmax(keras_resnet50(xin).numpy())
        p_v15 = W.softmax(keras_resnet50(xin, v15=True).numpy())
    e1, e15 = float(np.abs(probs - p_v1).max()), float(np.abs(p_v15 - p_v1).max())
    W.check(e1 < 1e-4 and e15 > 1e-2, "predict gives Keras' probabilities (within %.1e; the V1.5 net would be %.1e off)" % (e1, e15))
W.remove(ckpt, p("img.ppm"))

# ---- train from the .h5, then resume without it ------------------------------------------
data = make_data.make(p("data"), per_class=(4, 2, 2), size=32, jpeg=False)


def train(*extra):
    return subprocess.run([cli, "train", data, "--run", p("run"), "--model", "resnet50", "--freeze", "base", "--size", "32x32", "--batch", "4",
                           "--threads", "2", "--tensorboard", "off", *extra], capture_output=True, text=True)


r = train("--weights", keras_h5, "--epochs", "1")
n_tensors = len(sd) - 2
W.check(r.returncode == 0 and ("Loaded %d tensors" % n_tensors) in r.stdout and "expects 'caffe' preprocessing" in r.stdout,
        "train --weights keras.h5: loads the %d tensors of the base, caffe preprocessing (exit %d: %s)" % (n_tensors, r.returncode,
                                                                                                       (r.stdout + r.stderr).strip().splitlines()[-3:]))
last = p("run/checkpoints/last.safetensors")
if os.path.exists(last):
    _, m2 = st.read(last)
    W.check(m2.get("resnet_version") == "v1", "the run's checkpoint records resnet_version v1 (%s)" % m2.get("resnet_version"))
r = train("--epochs", "2", "--resume")
W.check(r.returncode == 0 and "Resuming from" in r.stdout, "--resume without --weights goes on (exit %d: %s)" % (r.returncode,
                                                                                                             (r.stdout + r.stderr).strip().splitlines()[-2:]))
if os.path.exists(last):
    _, m3 = st.read(last)
    W.check(m3.get("resnet_version") == "v1" and json.loads(m3.get("train_state", "{}")).get("epochs_done") == 2,
            "after the resumed epoch the checkpoint is still v1, 2 epochs done")

# ---- a user's model: ResNet50 nested as one layer, GlobalAveragePooling2D, Dense(1) --------
def bn_names(n):
    return ["%s/%s:0" % (n, w) for w in ("gamma", "beta", "moving_mean", "moving_variance")]


inner = [(n, a) for n, a in layers if a and n != "predictions"]
names, arrays = [], []
for trainable in (True, False):  # Keras' _legacy_weights: trainable weights first, moving statistics after
    for n, a in inner:
        wn = bn_names(n) if n.endswith("_bn") else ["%s/kernel:0" % n, "%s/bias:0" % n]
        for x, v in zip(wn, a):
            if ("moving_" in x) != trainable:
                names.append(x), arrays.append(v)
dense1 = [(rng.standard_normal((2048, 1)) * 0.5 / np.sqrt(2048)).astype(np.float32), np.array([0.0], np.float32)]
saved = KW["predictions"]
KW["predictions"] = dense1
with torch.no_grad():  # scaled so that the test image's logit is 1 (the sigmoid far from saturation)
    dense1[0] *= np.float32(1.0 / abs(float(keras_resnet50(xin).numpy().ravel()[0])))
KW["predictions"] = saved
dense1[1][0] = 0.2
with h5py.File(p("user.h5"), "w") as f:
    top = ["input_2", "resnet50", "global_average_pooling2d", "dense"]
    W.save_attributes_to_hdf5_group(f, "layer_names", [n.encode() for n in top])
    for n in top:
        g = f.create_group(n)
        wn, arr = (names, arrays) if n == "resnet50" else (["dense/kernel:0", "dense/bias:0"], dense1) if n == "dense" else ([], [])
        W.save_attributes_to_hdf5_group(g, "weight_names", [x.encode() for x in wn])
        for x, v in zip(wn, arr):
            g.create_dataset(x, data=v)
rc, so, se = W.run(cli, "convert", p("user.h5"), p("user.safetensors"), "--size", "64")
W.check(rc == 0 and st.read(p("user.safetensors"))[1].get("num_classes") == "2", "a user's model (nested ResNet50, Dense(1)) converts to 2 "
        "classes (%d: %s)" % (rc, se.strip()))
if rc == 0:
    W.write_ppm(p("img.ppm"), img)
    rc, out, se = W.predict(cli, p("user.safetensors"), p("img.ppm"))
    saved = KW["predictions"]
    KW["predictions"] = dense1
    with torch.no_grad():
        zu = float(keras_resnet50(xin).numpy().ravel()[0])
    KW["predictions"] = saved
    sig = 1.0 / (1.0 + np.exp(-zu))
    W.check(rc == 0 and out is not None and abs(out["probs"][1] - sig) < 1e-4, "its probabilities are the Keras model's sigmoid "
            "output (%s vs %.6f)" % (out and out["probs"], sig))
W.remove(p("user.h5"), p("user.safetensors"), p("img.ppm"))

# ---- refused ------------------------------------------------------------------------------
r = subprocess.run([cli, "convert", keras_h5, p("x.safetensors"), "--arch", "resnet18"], capture_output=True, text=True)
W.check(r.returncode == 2 and "a resnet50, not the resnet18" in r.stderr and not os.path.exists(p("x.safetensors")),
        "--arch resnet18 on Keras' ResNet50: %r" % r.stderr.strip())
write_keras(p("v2.h5"), rename=lambda n: n.replace("conv2_block1_1_bn", "conv2_block1_preact_bn"))
r = subprocess.run([cli, "convert", p("v2.h5"), p("x.safetensors")], capture_output=True, text=True)
W.check(r.returncode == 2 and "conv2_block1_preact_bn" in r.stderr and "ResNet50V2" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
        "a layer of ResNet50V2: %r" % r.stderr.strip())
W.remove(p("v2.h5"), keras_h5)
W.finish()
