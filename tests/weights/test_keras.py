"""Keras HDF5 import: files in exactly Keras' layout (h5py), converted with
`loupe convert`, loaded back into torchvision (load_state_dict strict=True);
the torchvision model must compute the Keras function (computed here with
NumPy from the same arrays: NHWC convs, HWC flatten)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wcommon as W  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import safetensors_io as st  # noqa: E402

cli, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
import torch  # noqa: E402

torch.set_num_threads(2)
TOL = 1e-4  # max |a - b| / max |b|, float32 torch vs float64 NumPy


def run_case(tag, arch, top, naming, full_model=False, limit=W.HDF5_OBJECT_HEADER_LIMIT, dtype=np.float32, nested=None,
             size=64, hidden=(64, 48), classes=10, arch_flag=None, keep_output=False):
    h5 = os.path.join(work, tag + ".h5")
    out = os.path.join(work, tag + ".safetensors")
    layers = W.keras_vgg_layers(arch, top, hidden=hidden, classes=classes, seed=hash(tag) % 1000, dtype=dtype)
    W.write_keras_h5(h5, layers, naming=naming, full_model=full_model, limit=limit, nested=nested)
    try:
        return check_case(tag, arch, top, hidden, classes, size, arch_flag, layers, h5, out)
    finally:
        W.remove(h5)
        if not keep_output:
            W.remove(out)


def check_case(tag, arch, top, hidden, classes, size, arch_flag, layers, h5, out):
    rc, so, se = W.convert(cli, h5, out, arch_flag)
    if not W.check(rc == 0, "%s: convert exit 0 (got %d: %s)" % (tag, rc, se.strip())):
        return
    state, meta = st.read(out)
    W.check(meta.get("source") == "keras-h5" and meta.get("preprocess") == "caffe" and meta.get("arch") == arch
            and W.top_ok(meta, top, hidden, classes) and meta.get("format") == "loupe-checkpoint-1",
            "%s: metadata %s" % (tag, {k: meta.get(k) for k in ("source", "preprocess", "arch", "top", "head", "format")}))
    state = W.torchvision_names(state, meta)
    model = W.torch_vgg(arch, hidden=hidden, classes=classes)
    if not top:
        model = model.features
        state = {k[len("features."):]: v for k, v in state.items()}
    try:
        W.load_into_torch(model, state, strict=True)
    except Exception as e:  # noqa: BLE001
        W.check(False, "%s: load_state_dict(strict=True): %s" % (tag, e))
        return
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2 if size <= 64 else 1, size, size, 3)) * 50.0  # caffe-like range
    ref = W.keras_forward(x, layers, top, conv="torch" if size > 64 else "numpy")
    with torch.no_grad():
        got = model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
    if not top:
        got = got.transpose(0, 2, 3, 1)  # NCHW -> NHWC like Keras
    err = W.rel_err(got, ref)
    W.check(got.shape == ref.shape and err < TOL, "%s: torchvision(converted) == Keras function, shape %s, max rel err %.2e"
            % (tag, got.shape, err))
    if top:
        # the test can fail: fc1 without the HWC -> CHW permutation gives other logits
        fc1 = state["classifier.0.weight"].reshape(-1, 512, 7, 7).transpose(0, 2, 3, 1).reshape(-1, 25088)
        bad = dict(state, **{"classifier.0.weight": np.ascontiguousarray(fc1)})
        W.load_into_torch(model, bad, strict=True)
        with torch.no_grad():
            got2 = model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
        W.check(W.rel_err(got2, ref) > 1e-2, "%s: an unpermuted fc1 is detected (rel err %.2e)" % (tag, W.rel_err(got2, ref)))
    return out


# save_weights layout, Keras 2 names, notop, 64x64 input (2x2 final map: spatial order is checked)
run_case("vgg16_notop_k2", "vgg16", False, "keras2")
# Keras 1 names of the original release files, chunked layer_names0..N, VGG19
run_case("vgg19_notop_k1_chunked", "vgg19", False, "keras1", limit=100, size=32)
# model.save layout (model_weights group), full top: fc1 follows the HWC flatten (7x7x512 at 224)
conv_out = run_case("vgg16_top_full_model", "vgg16", True, "keras2", full_model=True, size=224, keep_output=True)
# float16 datasets
run_case("vgg16_notop_f16", "vgg16", False, "keras2", dtype=np.float16, size=32)
# nested functional model: a 'vgg16' layer holding all conv weights
run_case("vgg16_nested", "vgg16", False, "keras2", nested="vgg16", size=32, arch_flag="vgg16")

# a loupe checkpoint given back to convert: source loupe, preprocess and origin kept
if conv_out:
    again = os.path.join(work, "again.safetensors")
    rc, so, se = W.convert(cli, conv_out, again)
    if W.check(rc == 0, "re-convert a loupe checkpoint (exit %d %s)" % (rc, se.strip())):
        s1, m1 = st.read(conv_out)
        s2, m2 = st.read(again)
        W.check(m2.get("source") == "loupe" and m2.get("converted_from") == "keras-h5" and m2.get("preprocess") == "caffe",
                "re-converted metadata %s" % m2)
        W.check(sorted(s1) == sorted(s2) and all(np.array_equal(s1[k], s2[k]) for k in s1), "re-converted tensors identical")
    W.remove(conv_out, again)
W.finish()
