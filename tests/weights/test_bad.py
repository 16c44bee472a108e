"""Bad weights files: each must fail with exit code 2 (1 for a missing file)
and one clear line naming what is wrong, never a crash or a libhdf5 error
stack: truncated HDF5/ONNX/safetensors, wrong shapes, missing layers, a
ResNet given as VGG (Keras, torchvision, ONNX), NaN/Inf, external ONNX data,
pickles, batch-norm VGG, a Keras head whose activations the file does not
record, the wrong --arch. Bad heads: tests/weights/test_heads.py."""
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wcommon as W  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import safetensors_io as st  # noqa: E402

cli, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
import torch  # noqa: E402
import torchvision  # noqa: E402

torch.set_num_threads(2)
OUT = os.path.join(work, "out.safetensors")


def expect_fail(tag, path, fragments, arch=None, code=2, keep=False):
    if os.path.exists(OUT):
        os.remove(OUT)
    rc, so, se = W.convert(cli, path, OUT, arch)
    msg = se.strip()
    ok = rc == code and all(f.lower() in msg.lower() for f in fragments)
    W.check(ok, "%s: exit %d (want %d), message %r has %s" % (tag, rc, code, msg, fragments))
    W.check("HDF5-DIAG" not in se and len(msg.splitlines()) <= 2, "%s: one clean message, no libhdf5 stack" % tag)
    W.check(not os.path.exists(OUT), "%s: no output written" % tag)
    if not keep:
        W.remove(path)


def p(name):
    return os.path.join(work, name)


# ---- Keras HDF5 ----------------------------------------------------------------
good = W.keras_vgg_layers("vgg16", False, seed=1)
W.write_keras_h5(p("good.h5"), good)
data = open(p("good.h5"), "rb").read()
for frac in (0.6, 0.02):
    t = p("truncated_%d.h5" % int(frac * 100))
    with open(t, "wb") as f:
        f.write(data[:int(len(data) * frac)])
    expect_fail("truncated HDF5 (%d%%)" % int(frac * 100), t, [os.path.basename(t), "truncated"])

bad = [(n, [a.copy() for a in arrs]) for n, arrs in good]
for n, arrs in bad:
    if n == "block2_conv1":
        arrs[0] = arrs[0][:, :, :, :64].copy()
        arrs[1] = arrs[1][:64].copy()
W.write_keras_h5(p("wrong_shape.h5"), bad)
expect_fail("Keras wrong shape", p("wrong_shape.h5"), ["block2_conv1/kernel:0", "(3, 3, 64, 64)", "features.5.weight", "(128, 64, 3, 3)"])

W.write_keras_h5(p("missing_layer.h5"), [l for l in good if l[0] != "block5_conv3"])
expect_fail("Keras missing layer", p("missing_layer.h5"), ["12 conv layers", "VGG16 has 13", "missing"])

import h5py  # noqa: E402

shutil.copy(p("good.h5"), p("no_group.h5"))
with h5py.File(p("no_group.h5"), "a") as f:
    del f["block3_conv1"]
expect_fail("Keras layer listed without group", p("no_group.h5"), ["block3_conv1", "no group"])

shutil.copy(p("good.h5"), p("no_dataset.h5"))
with h5py.File(p("no_dataset.h5"), "a") as f:
    del f["block4_conv2/block4_conv2/bias:0"]
expect_fail("Keras weight dataset missing", p("no_dataset.h5"), ["block4_conv2/bias:0", "missing"])

for what, val in (("NaN", np.nan), ("Inf", np.inf)):
    bad = [(n, [a.copy() for a in arrs]) for n, arrs in good]
    for n, arrs in bad:
        if n == "block4_conv2":
            arrs[0][1, 2, 3, 4] = val
    W.write_keras_h5(p("nan.h5"), bad)
    expect_fail("Keras %s" % what, p("nan.h5"), ["block4_conv2/kernel:0", "features.19.weight", "NaN/Inf"])
W.remove(p("good.h5"))

# a Keras ResNet50-like file: conv + batch norm layers, 53 convs
rng = np.random.default_rng(0)
res = [("input_1", []), ("conv1_conv", [rng.standard_normal((7, 7, 3, 8)).astype(np.float32), np.zeros(8, np.float32)])]
res.append(("conv1_bn", [np.ones(8, np.float32)] * 4))
for i in range(52):
    res.append(("conv%d_block%d_%d_conv" % (2 + i // 13, 1 + (i % 13) // 3, 1 + i % 3),
                [rng.standard_normal((1, 1, 8, 8)).astype(np.float32), np.zeros(8, np.float32)]))
    res.append(("conv%d_block%d_%d_bn" % (2 + i // 13, 1 + (i % 13) // 3, 1 + i % 3), [np.ones(8, np.float32)] * 4))
W.write_keras_h5(p("resnet_keras.h5"), res)
with h5py.File(p("resnet_keras.h5"), "a") as f:  # batch norm layers have 4 weights with their own names
    for n, arrs in res:
        if n.endswith("_bn"):
            g = f[n]
            for k in list(g.keys()):
                del g[k]
            names = [("%s/%s:0" % (n, w)).encode() for w in ("gamma", "beta", "moving_mean", "moving_variance")]
            g.attrs["weight_names"] = names
            for nm in names:
                g.create_dataset(nm.decode(), data=np.ones(8, np.float32))
expect_fail("Keras ResNet as VGG16", p("resnet_keras.h5"), ["53 conv layers", "conv1_conv", "not a VGG16"], arch="vgg16")

# a Keras model with two Dense layers after Flatten: the weights do not record the first one's activation
head = W.keras_vgg_layers("vgg16", False, seed=2) + [("flatten", []), ("dense", [np.zeros((25088, 8), np.float32), np.zeros(8, np.float32)]),
                                                     ("dense_1", [np.zeros((8, 2), np.float32), np.zeros(2, np.float32)])]
W.write_keras_h5(p("custom_head.h5"), head)
expect_fail("Keras head of unknown activations", p("custom_head.h5"), ["dense/kernel:0", "ReLU", "--head"])

# ---- safetensors -----------------------------------------------------------------
st.write(p("resnet50.safetensors"), {k: v.numpy() for k, v in torchvision.models.resnet50().state_dict().items()
                                                 if v.dtype == torch.float32})
expect_fail("torchvision ResNet50 as VGG16", p("resnet50.safetensors"), ["53 conv layers", "layer1.0.conv1.weight", "not a VGG16"], arch="vgg16")

vgg19 = {k: v.detach().numpy() for k, v in W.torch_vgg("vgg19").features.state_dict().items()}
st.write(p("vgg19.safetensors"), {"features." + k: v for k, v in vgg19.items()})
expect_fail("VGG19 file with --arch vgg16", p("vgg19.safetensors"), ["16 conv layers", "VGG19, not a VGG16", "--arch vgg19"], arch="vgg16")

tv = {k: v.detach().numpy().copy() for k, v in W.torch_vgg("vgg16").state_dict().items()}
tv["classifier.3.bias"][5] = np.inf
st.write(p("inf.safetensors"), tv, dtype="F16")
expect_fail("safetensors Inf", p("inf.safetensors"), ["classifier.3.bias", "NaN/Inf"])

tv = {k: v.detach().numpy().copy() for k, v in W.torch_vgg("vgg16").state_dict().items()}
tv["features.10.weight"] = tv["features.10.weight"][:, :64].copy()
st.write(p("tv_shape.safetensors"), tv)
expect_fail("safetensors wrong shape", p("tv_shape.safetensors"), ["features.10.weight", "(256, 64, 3, 3)", "(256, 128, 3, 3)"], keep=True)

tv = {k: v.detach().numpy().copy() for k, v in W.torch_vgg("vgg16").state_dict().items() if not k.startswith("features.28")}
st.write(p("tv_missing.safetensors"), tv)
expect_fail("safetensors missing layer", p("tv_missing.safetensors"), ["12 conv layers", "missing"])

bn = {k: v.numpy() for k, v in torchvision.models.vgg11_bn().features.state_dict().items() if v.dtype == torch.float32}
st.write(p("vgg_bn.safetensors"), {"features." + k: v for k, v in bn.items()})
expect_fail("batch-norm VGG", p("vgg_bn.safetensors"), ["batch-norm"])

raw = open(p("tv_shape.safetensors"), "rb").read()
with open(p("trunc.safetensors"), "wb") as f:
    f.write(raw[:len(raw) // 2])
expect_fail("truncated safetensors", p("trunc.safetensors"), ["trunc.safetensors"])
W.remove(p("tv_shape.safetensors"))

# ---- ONNX ----------------------------------------------------------------------------
r18 = torchvision.models.resnet18().eval()
torch.onnx.export(r18, torch.randn(1, 3, 32, 32), p("resnet18.onnx"))
expect_fail("ONNX ResNet18 as VGG16", p("resnet18.onnx"), ["resnet", "not a sequential vgg"], arch="vgg16")

small = W.torch_vgg("vgg16", hidden=(16, 16), classes=2)
torch.onnx.export(small, torch.randn(1, 3, 224, 224), p("small.onnx"))
import onnx  # noqa: E402

m = onnx.load(p("small.onnx"))
onnx.save_model(m, p("ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=1024)
expect_fail("ONNX external data", p("ext.onnx"), ["external", "ext.onnx.data", "save_as_external_data=False"])
W.remove(p("ext.onnx.data"))
raw = open(p("small.onnx"), "rb").read()
with open(p("trunc.onnx"), "wb") as f:
    f.write(raw[:len(raw) * 2 // 3])
expect_fail("truncated ONNX", p("trunc.onnx"), ["trunc.onnx", "truncated"])
W.remove(p("small.onnx"))

# ---- other files -----------------------------------------------------------------------
with open(p("garbage.bin"), "wb") as f:
    f.write(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
expect_fail("garbage", p("garbage.bin"), ["unknown weights format"])
torch.save({"features.0.weight": torch.zeros(1)}, p("model.pth"))
expect_fail("PyTorch pickle", p("model.pth"), ["safetensors", "pickle"])
expect_fail("missing file", p("does_not_exist.h5"), ["does_not_exist.h5", "cannot open"], code=1)
W.finish()
