"""ONNX import: torch.onnx.export of torchvision VGG16 (the real 1000-class
model, 528 MB) and variants edited with the onnx package (float_data instead
of raw_data, MatMul+Add instead of Gemm, Gemm with transB=0 and alpha/beta,
initializers renamed and shuffled so that names cannot be relied on, the
convolutional base alone). `loupe convert` output loaded into torchvision
(strict) must give the PyTorch model's logits; the whole VGG16 then predicts at
once, with torchvision's ImageNet category names."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wcommon as W  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import safetensors_io as st  # noqa: E402

cli, work, part = sys.argv[1], sys.argv[2], sys.argv[3]  # part: full | variants
os.makedirs(work, exist_ok=True)
import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

torch.set_num_threads(2)
TOL = 1e-5
X224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))


def export(model, path, x):
    torch.onnx.export(model, x, path, input_names=["input"], output_names=["out"], do_constant_folding=True)


def check_converted(tag, onnx_path, ref_model, x, arch="vgg16", top=True, hidden=(64, 48), classes=10, keep=False):
    out = os.path.join(work, tag + ".safetensors")
    try:
        check_output(tag, onnx_path, out, ref_model, x, arch, top, hidden, classes)
    finally:
        if not keep:
            W.remove(out)
    return out


def check_output(tag, onnx_path, out, ref_model, x, arch, top, hidden, classes):
    rc, so, se = W.convert(cli, onnx_path, out)
    if not W.check(rc == 0, "%s: convert exit 0 (got %d: %s)" % (tag, rc, se.strip())):
        return
    conv, meta = st.read(out)
    W.check(meta.get("source") == "onnx" and meta.get("preprocess") == "torch" and meta.get("arch") == arch
            and W.top_ok(meta, top, hidden, classes), "%s: metadata %s" % (tag, {k: meta.get(k) for k in ("source", "preprocess", "arch", "top", "head")}))
    conv = W.torchvision_names(conv, meta)
    dst = W.torch_vgg(arch, hidden=hidden, classes=classes, seed=99)
    try:
        if top:
            W.load_into_torch(dst, conv, strict=True)
        else:
            dst = dst.features
            W.load_into_torch(dst, {k[len("features."):]: v for k, v in conv.items()}, strict=True)
    except Exception as e:  # noqa: BLE001
        W.check(False, "%s: load_state_dict(strict=True): %s" % (tag, e))
        return
    with torch.no_grad():
        a, b = dst(x).numpy(), ref_model(x).numpy()
    W.check(a.shape == b.shape and W.rel_err(a, b) < TOL, "%s: logits equal PyTorch's, max rel err %.2e" % (tag, W.rel_err(a, b)))


if part == "full":
    # 1. the real torchvision VGG16 (1000 classes, fc 4096): exported at 224x224, then predict at once
    #    with ImageNet's class names (torchvision's own list: the name check uses random weights)
    from torchvision.models import VGG16_Weights
    full = W.torch_vgg("vgg16", hidden=None, classes=1000, seed=1)
    img = W.random_image(224, 8)
    x = torch.from_numpy(W.model_input(img, "torch"))
    with torch.no_grad():
        best = int(full(x).argmax())
        full.classifier[6].bias[best] += 5.0  # a clear best class: no near tie for the name check
        ref = W.softmax(full(x).numpy())
    p = os.path.join(work, "vgg16_full.onnx")
    export(full, p, X224)
    out = check_converted("full", p, full, X224, hidden=None, classes=1000, keep=True)
    os.remove(p)
    cats = VGG16_Weights.IMAGENET1K_V1.meta["categories"]
    if os.path.exists(out):
        meta = st.read(out)[1]
        W.check(meta.get("input_size") == "224x224" and json.loads(meta.get("classes", "[]")) == cats,
                "full: input size %s and torchvision's 1000 category names" % meta.get("input_size"))
        ip = os.path.join(work, "photo.ppm")
        W.write_ppm(ip, img)
        rc, o, se = W.predict(cli, out, ip)
        if W.check(rc == 0 and o is not None, "full: predict at once (exit %d %s)" % (rc, se.strip())):
            err = float(np.max(np.abs(np.array(o["probs"]) - ref)))
            W.check(err < 1e-4, "full: predict gives PyTorch's probabilities, max abs err %.2e" % err)
            W.check(o["class"] == cats[int(np.argmax(ref))], "full: predicted %r, torchvision's name of the best class is %r" % (o["class"], cats[int(np.argmax(ref))]))
        rc, so, se = W.run(cli, "predict", out, ip, "--top", "3")
        got = so.strip().split(": ", 1)[-1].split("; ")
        W.check(rc == 0 and len(got) == 3 and got[0] == "%s (%.4f)" % (cats[best], ref[best]),
                "full: predict --top 3 prints 3 classes, best first: %r" % so.strip())
        W.remove(ip)
    W.remove(out)
    W.finish()

# 2. a VGG16 with a small top, then edited variants
small = W.torch_vgg("vgg16", hidden=(64, 48), classes=10, seed=2)
base = os.path.join(work, "vgg16_small.onnx")
export(small, base, X224)
check_converted("small", base, small, X224)


def variant(tag, edit):
    m = onnx.load(base)
    edit(m)
    onnx.checker.check_model(m)
    path = os.path.join(work, tag + ".onnx")
    onnx.save(m, path)
    check_converted(tag, path, small, X224)
    W.remove(path)


def to_float_data(m):
    for i, t in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            nt = helper.make_tensor(t.name, onnx.TensorProto.FLOAT, a.shape, a.flatten().tolist(), raw=False)
            m.graph.initializer[i].CopyFrom(nt)


def rename_and_shuffle(m):
    rng = np.random.default_rng(0)
    names = {str(t): "w%03d" % k for k, t in enumerate(rng.permutation([t.name for t in m.graph.initializer]))}
    inits = [onnx.TensorProto() for _ in m.graph.initializer]
    for dst, src in zip(inits, m.graph.initializer):
        dst.CopyFrom(src)
        dst.name = names[src.name]
    order = rng.permutation(len(inits))
    del m.graph.initializer[:]
    m.graph.initializer.extend([inits[i] for i in order])
    for n in m.graph.node:
        for j, v in enumerate(n.input):
            if v in names:
                n.input[j] = names[v]


def gemm_to_matmul_add(m):
    inits = {t.name: t for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type != "Gemm":
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]])  # [out, in] (transB=1)
        wt = numpy_helper.from_array(np.ascontiguousarray(w.T), n.input[1] + "_t")
        m.graph.initializer.append(wt)
        mid = n.output[0] + "_mm"
        nodes.append(helper.make_node("MatMul", [n.input[0], wt.name], [mid], name=n.name + "_mm"))
        nodes.append(helper.make_node("Add", [mid, n.input[2]], [n.output[0]], name=n.name + "_add"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {i for n in m.graph.node for i in n.input}
    keep = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)


def gemm_transb0_alpha(m):
    inits = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type != "Gemm":
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w.T) / 2.0, n.input[1]))  # [in, out], halved
        b = numpy_helper.to_array(inits[n.input[2]])
        inits[n.input[2]].CopyFrom(numpy_helper.from_array((b * 4.0).reshape(1, -1), n.input[2]))  # [1, out], x4
        del n.attribute[:]
        n.attribute.extend([helper.make_attribute("alpha", 2.0), helper.make_attribute("beta", 0.25), helper.make_attribute("transB", 0)])


def model_zoo_style(m):
    """Like the ONNX model zoo's vgg16-7 (MXNet export): input 'data',
    Dropout nodes after the fc ReLUs, a Softmax at the end (compared before it)."""
    old_in = m.graph.input[0].name
    for n in m.graph.node:
        for j, v in enumerate(n.input):
            if v == old_in:
                n.input[j] = "data"
    m.graph.input[0].name = "data"
    nodes = []
    for n in m.graph.node:
        nodes.append(n)
        if n.op_type == "Relu" and "classifier" in n.output[0]:
            out = n.output[0]
            n.output[0] = out + "_pre_drop"
            nodes.append(helper.make_node("Dropout", [out + "_pre_drop"], [out], name=out + "_dropout"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    last = m.graph.output[0].name
    m.graph.node.append(helper.make_node("Softmax", [last], ["prob"], name="softmax", axis=1))
    m.graph.output[0].name = "prob"


variant("model_zoo_style", model_zoo_style)
variant("float_data", to_float_data)
variant("renamed_shuffled", rename_and_shuffle)
variant("matmul_add", gemm_to_matmul_add)
variant("gemm_transb0_alpha_beta", gemm_transb0_alpha)

# 3. initializers listed as graph inputs (older exporters), VGG19 convolutional base alone at 64x64
f19 = W.torch_vgg("vgg19", hidden=(64, 48), classes=10, seed=3).features
x64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
p19 = os.path.join(work, "vgg19_notop.onnx")
torch.onnx.export(f19, x64, p19, input_names=["input"], output_names=["out"], keep_initializers_as_inputs=True,
                  dynamic_axes={"input": {0: "batch"}})
check_converted("vgg19_notop_inits_as_inputs", p19, f19, x64, arch="vgg19", top=False)
W.remove(base, p19)
W.finish()
