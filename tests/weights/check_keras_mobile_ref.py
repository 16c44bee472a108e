"""Validates tests/weights/keras_mobile_ref.py on its own (no loupe, no Keras):
  - keras_forward(tf_padding=False) equals torchvision's mobilenet_v2 / efficientnet_b0 with
    to_torchvision()'s state dict (strict load, eval), and tf_padding=True clearly differs;
  - write_keras_h5() reads back with h5py to the same layers, names and arrays.
Run: /usr/bin/python3 tests/weights/check_keras_mobile_ref.py"""
import os
import sys
import tempfile

import h5py
import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_mobile_ref as R  # noqa: E402

torch.set_num_threads(2)
FAILED = []
SIZE, CLASSES = 64, 2


def check(cond, msg):
    print("%s: %s" % ("PASS" if cond else "FAIL", msg), flush=True)
    if not cond:
        FAILED.append(msg)


def text(v):  # h5py 3 reads Keras' list-of-bytes attributes back as str, fixed-length ones as bytes
    return v.decode() if isinstance(v, bytes) else str(v)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# the layer names the Keras source gives, spot-checked around each kind of block
EXPECT = {
    "mobilenet_v2": ["input_1", "Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_depthwise", "expanded_conv_depthwise_BN",
                     "expanded_conv_depthwise_relu", "expanded_conv_project", "expanded_conv_project_BN", "block_1_expand",
                     "block_1_expand_BN", "block_1_expand_relu", "block_1_pad", "block_1_depthwise", "block_1_depthwise_BN",
                     "block_1_depthwise_relu", "block_1_project", "block_1_project_BN", "block_2_expand"],
    "efficientnet_b0": ["input_1", "rescaling", "normalization", "rescaling_1", "stem_conv_pad", "stem_conv", "stem_bn",
                        "stem_activation", "block1a_dwconv", "block1a_bn", "block1a_activation", "block1a_se_squeeze",
                        "block1a_se_reshape", "block1a_se_reduce", "block1a_se_expand", "block1a_se_excite",
                        "block1a_project_conv", "block1a_project_bn", "block2a_expand_conv", "block2a_expand_bn",
                        "block2a_expand_activation", "block2a_dwconv_pad", "block2a_dwconv"],
}
TAIL = {"mobilenet_v2": ["block_16_project_BN", "Conv_1", "Conv_1_bn", "out_relu", "global_average_pooling2d", "predictions"],
        "efficientnet_b0": ["block7a_project_bn", "top_conv", "top_bn", "top_activation", "avg_pool", "top_dropout", "predictions"]}

rng = np.random.default_rng(0)
img = rng.integers(0, 256, (1, 3, SIZE, SIZE)).astype(np.float64)  # raw RGB pixels, NCHW
tmp = tempfile.mkdtemp()
for arch in R.ARCHS:
    print("== %s, %dx%d, %d classes" % (arch, SIZE, SIZE, CLASSES))
    layers = R.keras_layers(arch, CLASSES, rng)
    names = [n for n, _ in layers]
    check(len(set(names)) == len(names) and names[:len(EXPECT[arch])] == EXPECT[arch] and names[-len(TAIL[arch]):] == TAIL[arch],
          "%s: %d unique layer names, Keras' names at the head and tail" % (arch, len(names)))
    if arch == "mobilenet_v2":
        adds = [n for n in names if n.endswith("_add")]
        check(adds == ["block_%d_add" % i for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)] and len(names) - 2 == 154,
              "mobilenet_v2: adds %s, %d layers without the top (Keras' MobileNetV2 base: 154)" % (",".join(a[6:-4] for a in adds), len(names) - 2))
    else:
        adds = [n[5:7] for n in names if n.endswith("_add")]
        drops = [n[5:7] for n in names if n.endswith("_drop")]
        check(adds == drops == ["2b", "3b", "4b", "4c", "5b", "5c", "6b", "6c", "6d"],
              "efficientnet_b0: drop+add in blocks %s; %d layers without the top" % (",".join(adds), len(names) - 3))

    # torchvision's model with the converted tensors
    model = getattr(torchvision.models, arch)(weights=None, num_classes=CLASSES)
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert len(eps) == 1, eps
    sd = R.to_torchvision(arch, layers, bn_eps_target=eps.pop())
    try:
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=True)
        check(True, "%s: torchvision load_state_dict(strict=True) of %d tensors" % (arch, len(sd)))
    except RuntimeError as e:
        check(False, "%s: torchvision strict load: %s" % (arch, str(e)[:2000]))
        continue
    model.eval().double()
    stats = []
    hooks = [m.register_forward_hook(lambda m, i, o: stats.append(float(o.std()))) for m in model.features]
    if arch == "mobilenet_v2":
        x_keras = x_tv = img / 127.5 - 1.0  # "tf" preprocessing, outside the model
    else:  # torch preprocessing for torchvision; Keras' model rescales/normalizes inside
        x_keras = img
        x_tv = (img / 255.0 - np.array(R.IMAGENET_MEAN).reshape(1, 3, 1, 1)) / np.array(R.IMAGENET_STD).reshape(1, 3, 1, 1)
    with torch.no_grad():
        tv = model(torch.from_numpy(x_tv)).numpy()
        for h in hooks:
            h.remove()
        same = R.keras_forward(arch, layers, torch.from_numpy(x_keras), tf_padding=False).numpy()
        tfp = R.keras_forward(arch, layers, torch.from_numpy(x_keras), tf_padding=True).numpy()
        tfp32 = R.keras_forward(arch, layers, torch.from_numpy(x_keras).float(), tf_padding=True).numpy()
    print("   torchvision logits %s; feature std per stage %s" % (np.round(tv.ravel(), 4), " ".join("%.2f" % s for s in stats)))
    check(all(0.05 < s < 20 for s in stats) and 0.05 < np.abs(tv).max() < 100, "%s: activations O(1) through the net" % arch)
    e_same, e_tf, e32 = rel(same, tv), rel(tfp, tv), rel(tfp32, tfp)
    check(e_same < 1e-4, "%s: keras_forward(tf_padding=False) == torchvision: rel err %.3g (< 1e-4)" % (arch, e_same))
    check(e_tf > 1e-2 and e_tf > 1e3 * e_same,
          "%s: keras_forward(tf_padding=True) differs from torchvision: rel err %.3g (> 1e-2 and > 1000 x %.3g)" % (arch, e_tf, e_same))
    check(e32 < 1e-4, "%s: keras_forward float32 == float64: rel err %.3g" % (arch, e32))

    # the HDF5 file reads back
    path = os.path.join(tmp, arch + ".h5")
    R.write_keras_h5(path, layers)
    ok, why = True, []
    with h5py.File(path, "r") as f:
        ok &= [text(n) for n in f.attrs["layer_names"]] == names and text(f.attrs["backend"]) == "tensorflow"
        ok &= sorted(f.keys()) == sorted(names + ["top_level_model_weights"]) and f["top_level_model_weights"].attrs["weight_names"].size == 0
        for n, arrs in layers:
            wn = [text(w) for w in f[n].attrs["weight_names"]]
            if not arrs:
                a = f[n].attrs["weight_names"]
                if not (a.dtype == np.float64 and a.size == 0):
                    ok, _ = False, why.append(n + ": weight_names of a weightless layer")
                continue
            if wn != R.weight_names(n, arrs) or not all(w.startswith(n + "/") and w.endswith(":0") for w in wn):
                ok, _ = False, why.append(n + ": weight names %s" % wn)
            for w, a in zip(wn, arrs):
                d = f[n][w]
                if d.shape != a.shape or d.dtype != a.dtype or not np.array_equal(d[()], a):
                    ok, _ = False, why.append(n + ": " + w)
        if arch == "efficientnet_b0":
            g = f["normalization"]
            ok &= [text(w) for w in g.attrs["weight_names"]] == ["normalization/mean:0", "normalization/variance:0", "normalization/count:0"]
            ok &= g["normalization/count:0"].shape == () and g["normalization/count:0"].dtype == np.int64
        else:
            ok &= "Conv1/kernel:0" in f["Conv1"] and f["Conv1"]["Conv1"]["kernel:0"].shape == (3, 3, 3, 32)
            ok &= f["block_1_depthwise/block_1_depthwise/depthwise_kernel:0"].shape == (3, 3, 96, 1)
    check(ok, "%s: write_keras_h5 reads back with h5py: layer_names, weight_names, %d arrays equal %s"
          % (arch, sum(len(a) for _, a in layers), "; ".join(why[:5])))
    os.remove(path)
os.rmdir(tmp)

if FAILED:
    print("%d check(s) FAILED" % len(FAILED))
    sys.exit(1)
print("all checks PASS")
