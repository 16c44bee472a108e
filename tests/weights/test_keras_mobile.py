"""Keras' MobileNetV2 and EfficientNetB0 (keras.applications) from their HDF5 weights.

    test_keras_mobile.py LOUPE_CLI WORKDIR mobilenet_v2|efficientnet_b0

The file is written in Keras 2's layout with Keras' layer and weight names and random
values (keras_mobile_ref.py, which also holds Keras' function written in torch from Keras'
source and checked against torchvision's models by check_keras_mobile_ref.py).
- `loupe convert` gives torchvision's names (the state dict loads strict into torchvision's
  model, which then computes Keras' function with torchvision's symmetric padding: the
  tensors are right), metadata padding tf and Keras' preprocessing (tf for MobileNetV2;
  torch for EfficientNetB0, whose Normalization layer holds ImageNet's statistics);
- `loupe predict` gives Keras' probabilities (TensorFlow's "same" padding) on an even and
  an odd input size; the symmetric padding's probabilities are shown to differ, so the
  check can fail;
- `loupe train --weights keras.h5` loads the backbone, says the padding, saves checkpoints
  with padding tf, and `--resume` without --weights goes on with that net; resuming with
  weights of the other padding is refused;
- a user's model (the base nested as one layer, GlobalAveragePooling2D, Dropout, Dense(1))
  converts to a two-class model whose probabilities are the Keras model's sigmoid output;
  two dense layers are refused;
- refused with what to do: another --arch, a layer of another model, a width other than
  alpha 1.0, an EfficientNet normalisation with other statistics (while a variance of std^2,
  or of std as Keras' ImageNet weights hold it, with or without the rescaling Keras 2.10+
  adds, is read as torch preprocessing)."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "train"))
import keras_mobile_ref as K  # noqa: E402
import make_data  # noqa: E402
import safetensors_io as st  # noqa: E402
import wcommon as W  # noqa: E402

cli, work, arch = sys.argv[1], sys.argv[2], sys.argv[3]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
torch.set_num_threads(2)
CLASSES = 3
MB = arch == "mobilenet_v2"
PRE = "tf" if MB else "torch"


def p(name):
    return os.path.join(work, name)


layers = K.keras_layers(arch, CLASSES, np.random.default_rng(5))
LW = dict(layers)


def keras_input(img):
    """What Keras' model gets: MobileNetV2 after mobilenet_v2.preprocess_input; EfficientNet raw
    pixels (its preprocessing is inside the model)."""
    x = img.astype(np.float64)
    x = x / 127.5 - 1.0 if MB else x
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))


def keras_probs(img, tf_padding=True, lw=layers):
    with torch.no_grad():
        return W.softmax(K.keras_forward(arch, lw, keras_input(img), tf_padding=tf_padding).numpy())


# the classifier scaled so that the logits on the test images spread over about 3: the
# probabilities then tell TensorFlow's padding from torchvision's
imgs = {s: W.random_image(s, 7 + s) for s in (64, 57)}
with torch.no_grad():
    z = K.keras_forward(arch, layers, keras_input(imgs[64])).numpy().ravel()
LW["predictions"][0] *= np.float32(3.0 / max(z.max() - z.min(), 1e-3))
LW["predictions"][1][:] = 0

h5 = p("keras.h5")
K.write_keras_h5(h5, layers)

# ---- convert -------------------------------------------------------------------------------
ckpt = p("converted.safetensors")
rc, so, se = W.run(cli, "convert", h5, ckpt, "--size", "64")
W.check(rc == 0, "convert Keras %s: exit 0 (%d: %s)" % (arch, rc, se.strip()))
sd, meta = st.read(ckpt) if rc == 0 else ({}, {})
W.check(meta.get("arch") == arch and meta.get("padding") == "tf" and meta.get("preprocess") == PRE and meta.get("top") == "keep"
        and meta.get("num_classes") == str(CLASSES) and meta.get("source") == "keras-h5",
        "metadata %s" % {k: meta.get(k) for k in ("arch", "padding", "preprocess", "top", "num_classes", "source")})

tv = getattr(torchvision.models, arch)(num_classes=CLASSES).double().eval()
try:
    tv.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    loaded = True
except Exception as e:  # noqa: BLE001
    loaded = False
    W.check(False, "load_state_dict(strict=True): %s" % e)
if loaded:
    W.check(True, "the checkpoint loads into torchvision's %s with strict=True (%d tensors)" % (arch, len(sd)))
    img = imgs[64]
    x_tv = torch.from_numpy(W.model_input(img, "torch")).double() if not MB else keras_input(img)
    with torch.no_grad():
        got = tv(x_tv).numpy().ravel()
        want = K.keras_forward(arch, layers, keras_input(img), tf_padding=False).numpy().ravel()
    err = float(np.abs(got - want).max() / np.abs(want).max())
    W.check(err < 1e-4, "torchvision's %s on the tensors computes Keras' function with symmetric padding within 1e-4 (%.2e)" % (arch, err))

# ---- predict: loupe builds TensorFlow's padding --------------------------------------------
for size, img in imgs.items():
    r2 = subprocess.run([cli, "convert", h5, p("c%d.safetensors" % size), "--size", str(size)], capture_output=True, text=True)
    W.write_ppm(p("img.ppm"), img)
    rc, out, se = W.predict(cli, p("c%d.safetensors" % size), p("img.ppm"))
    if W.check(r2.returncode == 0 and rc == 0 and out is not None, "predict at %dx%d: exit 0 (%d: %s)" % (size, size, rc, se.strip())):
        probs = np.array(out["probs"])
        ptf, psym = keras_probs(img), keras_probs(img, tf_padding=False)
        e1, e2 = float(np.abs(probs - ptf).max()), float(np.abs(psym - ptf).max())
        W.check(e1 < 1e-4 and e2 > 1e-2, "predict at %dx%d gives Keras' probabilities (within %.1e; torchvision's padding would be %.1e off)"
                % (size, size, e1, e2))
    W.remove(p("c%d.safetensors" % size))

# ---- train from the .h5, then resume without it --------------------------------------------
data = make_data.make(p("data"), per_class=(4, 2, 2), size=32, jpeg=False)


def train(run, *extra):
    return subprocess.run([cli, "train", data, "--run", p(run), "--model", arch, "--freeze", "base", "--size", "32x32", "--batch", "4",
                           "--threads", "2", "--tensorboard", "off", *extra], capture_output=True, text=True)


r = train("run", "--weights", h5, "--epochs", "1")
n_base = sum(1 for k in sd if not k.startswith("classifier."))
W.check(r.returncode == 0 and ("Loaded %d tensors" % n_base) in r.stdout and ("expects '%s' preprocessing" % PRE) in r.stdout
        and "TensorFlow's \"same\" padding" in r.stdout,
        "train --weights keras.h5: loads the %d tensors of the base, %s preprocessing, TensorFlow's padding (exit %d: %s)"
        % (n_base, PRE, r.returncode, (r.stdout + r.stderr).strip().splitlines()[-3:]))
last = p("run/checkpoints/last.safetensors")
if os.path.exists(last):
    _, m2 = st.read(last)
    W.check(m2.get("padding") == "tf" and m2.get("preprocess") == PRE, "the run's checkpoint records padding %s, preprocess %s"
            % (m2.get("padding"), m2.get("preprocess")))
r = train("run", "--epochs", "2", "--resume")
W.check(r.returncode == 0 and "Resuming from" in r.stdout and "TensorFlow's \"same\" padding" in r.stdout,
        "--resume without --weights goes on with TensorFlow's padding (exit %d: %s)" % (r.returncode, (r.stdout + r.stderr).strip().splitlines()[-2:]))
if os.path.exists(last):
    _, m3 = st.read(last)
    W.check(m3.get("padding") == "tf" and json.loads(m3.get("train_state", "{}")).get("epochs_done") == 2,
            "after the resumed epoch the checkpoint still has padding tf, 2 epochs done")
tv_weights = p("torchvision.safetensors")
st.write(tv_weights, {k: np.array(v) for k, v in sd.items()}, {"arch": arch})
r = train("run", "--epochs", "3", "--resume", "--weights", tv_weights)
W.check(r.returncode != 0 and "has padding tf but" in r.stderr and "padding torch" in r.stderr,
        "--resume with weights of torchvision's padding is refused: %r" % r.stderr.strip()[-300:])

# ---- a user's model: the base as one nested layer, then GlobalAveragePooling2D, Dropout and
# Dense(1) (TensorFlow's transfer-learning tutorial); the nested group lists the trainable
# weights first and every batch norm's moving statistics after them (Keras' _legacy_weights)
def write_user_model(path, dense):
    import h5py
    base = "mobilenetv2_1.00_224" if MB else "efficientnetb0"
    inner = [(n, a) for n, a in layers if a and n != "predictions"]
    nontrain = ("moving_mean", "moving_variance", "/mean:", "/variance:", "/count:")
    names, arrays = [], []
    for want_trainable in (True, False):
        for n, a in inner:
            for wn, v in zip(K.weight_names(n, a), a):
                if any(t in wn for t in nontrain) != want_trainable:
                    names.append(wn), arrays.append(v)
    top = [("input_2", []), (base, None), ("global_average_pooling2d", []), ("dropout", []), ("dense", dense)]
    with h5py.File(path, "w") as f:
        W.save_attributes_to_hdf5_group(f, "layer_names", [n.encode() for n, _ in top])
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.13.1"
        for n, a in top:
            g = f.create_group(n)
            wn = names if a is None else ["%s/%s:0" % (n, k) for k in ("kernel", "bias")[:len(a)]]
            W.save_attributes_to_hdf5_group(g, "weight_names", [x.encode() for x in wn])
            for x, v in zip(wn, arrays if a is None else a):
                v = np.asarray(v)
                d = g.create_dataset(x, v.shape, dtype=v.dtype)
                if v.shape:
                    d[:] = v
                else:
                    d[()] = v


rng = np.random.default_rng(9)
dense1 = [(rng.standard_normal((1280, 1)) * 3.0 / np.sqrt(1280)).astype(np.float32), np.array([0.1], np.float32)]
write_user_model(p("user.h5"), dense1)
r = subprocess.run([cli, "convert", p("user.h5"), p("user.safetensors"), "--size", "64"], capture_output=True, text=True)
mu = st.read(p("user.safetensors"))[1] if r.returncode == 0 else {}
W.check(r.returncode == 0 and mu.get("arch") == arch and mu.get("num_classes") == "2" and mu.get("padding") == "tf",
        "a user's model (nested base, GlobalAveragePooling2D, Dense(1)) converts: 2 classes (%d: %s)" % (r.returncode, r.stderr.strip()))
if r.returncode == 0:
    W.write_ppm(p("img.ppm"), imgs[64])
    rc, out, se = W.predict(cli, p("user.safetensors"), p("img.ppm"))
    with torch.no_grad():
        zu = float(K.keras_forward(arch, [(n, dense1 if n == "predictions" else a) for n, a in layers], keras_input(imgs[64])).ravel()[0])
    sig = 1.0 / (1.0 + np.exp(-zu))
    if W.check(rc == 0 and out is not None, "predict with the user's model: exit 0 (%d: %s)" % (rc, se.strip())):
        probs = np.array(out["probs"])
        W.check(abs(probs[1] - sig) < 1e-4 and abs(probs[0] - (1 - sig)) < 1e-4,
                "its probabilities are the Keras model's sigmoid output (%.6f vs %.6f)" % (probs[1], sig))
write_user_model(p("user2.h5"), [rng.standard_normal((1280, 64)).astype(np.float32), np.zeros(64, np.float32)])
with h5py.File(p("user2.h5"), "a") as f:  # a second dense layer: a head loupe's top is not
    names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
    W.save_attributes_to_hdf5_group(f, "layer_names", [n.encode() for n in names + ["dense_1"]])
    g = f.create_group("dense_1")
    W.save_attributes_to_hdf5_group(g, "weight_names", [b"dense_1/kernel:0", b"dense_1/bias:0"])
    g.create_dataset("dense_1/kernel:0", data=np.zeros((64, 3), np.float32))
    g.create_dataset("dense_1/bias:0", data=np.zeros(3, np.float32))
r = subprocess.run([cli, "convert", p("user2.h5"), p("x.safetensors")], capture_output=True, text=True)
W.check(r.returncode == 2 and "2 dense layers" in r.stderr and not os.path.exists(p("x.safetensors")), "a head of two dense layers: %r"
        % r.stderr.strip())
W.remove(p("user.h5"), p("user2.h5"), p("user.safetensors"))

# ---- refused -------------------------------------------------------------------------------
other = "efficientnet_b0" if MB else "mobilenet_v2"
r = subprocess.run([cli, "convert", h5, p("x.safetensors"), "--arch", other], capture_output=True, text=True)
W.check(r.returncode == 2 and ("are %s's, not %s's as asked for" % (arch, other)) in r.stderr and not os.path.exists(p("x.safetensors")),
        "--arch %s on Keras' %s: %r" % (other, arch, r.stderr.strip()))


def convert_variant(name, lw):
    K.write_keras_h5(p(name), lw)
    r = subprocess.run([cli, "convert", p(name), p("x.safetensors")], capture_output=True, text=True)
    ok = not os.path.exists(p("x.safetensors"))
    W.remove(p(name), p("x.safetensors"))
    return r, ok


bogus = "block_17_expand" if MB else "block8a_expand_conv"
renamed = [(bogus if n == ("block_16_expand" if MB else "block7a_expand_conv") else n, a) for n, a in layers]
r, ok = convert_variant("bogus.h5", renamed)
W.check(r.returncode == 2 and ok and bogus in r.stderr and len(r.stderr.strip().splitlines()) == 1, "a layer of another model: %r" % r.stderr.strip())

narrow = "block_3_project" if MB else "block3a_project_conv"
thin = [(n, [a[0][..., : a[0].shape[-1] // 2]] + a[1:] if n == narrow else a) for n, a in layers]
r, ok = convert_variant("thin.h5", thin)
W.check(r.returncode == 2 and ok and "shape" in r.stderr, "a layer of another width: %r" % r.stderr.strip())

if not MB:
    # Keras' Normalization with other statistics: refused, naming them
    odd = [(n, [np.array([0.5, 0.5, 0.5], np.float32), a[1], a[2]] if n == "normalization" else a) for n, a in layers]
    r, ok = convert_variant("odd.h5", odd)
    W.check(r.returncode == 2 and ok and "normalises its input" in r.stderr and "0.5" in r.stderr, "other normalisation: %r" % r.stderr.strip())
    # without the ImageNet rescaling, a variance of std^2 is ImageNet's normalisation again
    sq = [(n, [a[0], np.array(K.IMAGENET_STD, np.float32) ** 2, a[2]] if n == "normalization" else a)
          for n, a in K.keras_layers(arch, CLASSES, np.random.default_rng(5), rescaling_1=False, calibrate=0)]
    K.write_keras_h5(p("sq.h5"), sq)
    r = subprocess.run([cli, "convert", p("sq.h5"), p("sq.safetensors")], capture_output=True, text=True)
    m4 = st.read(p("sq.safetensors"))[1] if r.returncode == 0 else {}
    W.check(r.returncode == 0 and m4.get("preprocess") == "torch", "no rescaling_1 and variance = std^2: torch preprocessing (%d: %s)"
            % (r.returncode, r.stderr.strip()))
    # ImageNet's std as the variance without rescaling_1 (Keras' own efficientnetb0_notop.h5 and
    # files saved before Keras 2.10, which lack the layer): what Keras 2.10+ computes with them
    K.write_keras_h5(p("norescale.h5"), [(n, a) for n, a in layers if n != "rescaling_1"])
    r = subprocess.run([cli, "convert", p("norescale.h5"), p("nr.safetensors"), "--size", "64"], capture_output=True, text=True)
    m5 = st.read(p("nr.safetensors"))[1] if r.returncode == 0 else {}
    W.check(r.returncode == 0 and m5.get("preprocess") == "torch", "ImageNet's weights without rescaling_1: torch preprocessing (%d: %s)"
            % (r.returncode, r.stderr.strip()))
    # a variance that is neither ImageNet's std nor its square: refused
    odd2 = [(n, [a[0], np.array([0.3, 0.3, 0.3], np.float32), a[2]] if n == "normalization" else a) for n, a in layers if n != "rescaling_1"]
    r, ok = convert_variant("odd2.h5", odd2)
    W.check(r.returncode == 2 and ok and "normalises its input" in r.stderr, "another variance: %r" % r.stderr.strip())
W.finish()
