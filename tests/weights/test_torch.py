"""torchvision and timm state dicts saved as safetensors (F32, F16, BF16):
`loupe convert`, then the converted file loaded into a fresh torchvision model
(load_state_dict strict=True) must give the source model's logits."""
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
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(2)
TOL = 1e-5


def sd_numpy(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def roundtrip(dtype, state):
    if dtype == "F16":
        return {k: v.astype(np.float16).astype(np.float32) for k, v in state.items()}
    if dtype == "BF16":
        return {k: st.bf16_bits_to_f32(st.f32_to_bf16_bits(v)).reshape(v.shape) for k, v in state.items()}
    return state


def case(tag, arch, dtype="F32", prefix="", top=True, size=64):
    src = W.torch_vgg(arch, hidden=(64, 48), classes=10, seed=3)
    state = sd_numpy(src)
    if not top:
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    path = os.path.join(work, tag + ".safetensors")
    out = os.path.join(work, tag + ".loupe.safetensors")
    st.write(path, {prefix + k: v for k, v in state.items()}, dtype=dtype)
    try:
        check_case(tag, arch, dtype, top, size, src, state, path, out)
    finally:
        W.remove(path, out)


def check_case(tag, arch, dtype, top, size, src, state, path, out):
    rc, so, se = W.convert(cli, path, out)
    if not W.check(rc == 0, "%s: convert exit 0 (got %d: %s)" % (tag, rc, se.strip())):
        return
    conv, meta = st.read(out)
    W.check(meta.get("source") == "torchvision" and meta.get("preprocess") == "torch" and meta.get("arch") == arch
            and W.top_ok(meta, top) and (not top or meta.get("input_size") == "224x224"), "%s: metadata %s" % (tag, meta))
    conv = W.torchvision_names(conv, meta)
    W.check(all(v.dtype == np.float32 for v in conv.values()), "%s: all tensors F32" % tag)
    # reference: the source model with the weights as stored (rounded for F16/BF16)
    ref_model = W.load_into_torch(W.torch_vgg(arch, hidden=(64, 48), classes=10, seed=4), dict(sd_numpy(src), **roundtrip(dtype, state)))
    dst = W.torch_vgg(arch, hidden=(64, 48), classes=10, seed=5)
    try:
        if top:
            W.load_into_torch(dst, conv, strict=True)
        else:
            W.load_into_torch(dst.features, {k[len("features."):]: v for k, v in conv.items()}, strict=True)
            dst.classifier.load_state_dict(ref_model.classifier.state_dict())
    except Exception as e:  # noqa: BLE001
        W.check(False, "%s: load_state_dict(strict=True): %s" % (tag, e))
        return
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a, b = dst(x).numpy(), ref_model(x).numpy()
    W.check(W.rel_err(a, b) < TOL, "%s: logits equal the source model's, max rel err %.2e" % (tag, W.rel_err(a, b)))


case("tv_vgg16_f32", "vgg16")
case("tv_vgg16_f16", "vgg16", dtype="F16")
case("tv_vgg16_bf16", "vgg16", dtype="BF16")
case("tv_vgg19_notop_dataparallel", "vgg19", prefix="module.", top=False)

# timm's VGG: pre_logits ConvMlp (fc1 = Conv2d(512, H1, 7), fc2 = 1x1 conv), head.fc.
src = W.torch_vgg("vgg16", hidden=(64, 48), classes=10, seed=11)
sd = sd_numpy(src)
timm = {k: v for k, v in sd.items() if k.startswith("features.")}
timm["pre_logits.fc1.weight"] = sd["classifier.0.weight"].reshape(64, 512, 7, 7)
timm["pre_logits.fc1.bias"] = sd["classifier.0.bias"]
timm["pre_logits.fc2.weight"] = sd["classifier.3.weight"].reshape(48, 64, 1, 1)
timm["pre_logits.fc2.bias"] = sd["classifier.3.bias"]
timm["head.fc.weight"] = sd["classifier.6.weight"]
timm["head.fc.bias"] = sd["classifier.6.bias"]
path = os.path.join(work, "timm_vgg16.safetensors")
out = os.path.join(work, "timm_vgg16.loupe.safetensors")
st.write(path, timm, dtype="BF16")
rc, so, se = W.convert(cli, path, out)
if W.check(rc == 0, "timm: convert exit 0 (got %d: %s)" % (rc, se.strip())):
    conv, meta = st.read(out)
    W.check(meta.get("source") == "timm" and meta.get("preprocess") == "torch" and W.top_ok(meta, True), "timm: metadata %s" % meta)
    conv = W.torchvision_names(conv, meta)
    t = {k: torch.from_numpy(v) for k, v in roundtrip("BF16", timm).items()}
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # timm's forward at 224: features -> ConvMlp (7x7 conv over the 7x7 map, ReLU, 1x1 conv, ReLU) -> head.fc
        feat = W.load_into_torch(W.torch_vgg("vgg16", hidden=(64, 48), classes=10),
                                 {k: v.numpy() for k, v in t.items() if k.startswith("features.")}, strict=False).features(x)
        h = F.relu(F.conv2d(feat, t["pre_logits.fc1.weight"], t["pre_logits.fc1.bias"]))
        h = F.relu(F.conv2d(h, t["pre_logits.fc2.weight"], t["pre_logits.fc2.bias"]))
        ref = F.linear(h.flatten(1), t["head.fc.weight"], t["head.fc.bias"]).numpy()
        dst = W.load_into_torch(W.torch_vgg("vgg16", hidden=(64, 48), classes=10, seed=12), conv, strict=True)
        got = dst(x).numpy()
    W.check(W.rel_err(got, ref) < 1e-4, "timm: logits equal timm's function, max rel err %.2e" % W.rel_err(got, ref))
W.remove(path, out)
W.finish()
