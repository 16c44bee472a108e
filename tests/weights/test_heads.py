"""Whole models as PyTorch and Keras users have them (a VGG base with their own
head), converted and then used at once: `loupe convert` then `loupe predict`
must give the source model's class probabilities (within 1e-4), and
`loupe evaluate` must run on the checkpoint as it is.

  state: state dicts saved as safetensors: loupe's own names without metadata
         (`train --weights` keeps the head when its shape fits; layers numbered
         the PyTorch way are matched by order), heads that only --head can tell
         (flatten or gap?), a replaced torchvision classifier, and refusals
         that name what they found and what they expected;
  onnx:  torch.onnx.export of a base with Flatten or AdaptiveAvgPool2d(1) and
         Linear/ReLU/Dropout heads; bad heads (a Conv after the flatten, a dense
         layer whose input does not fit, two outputs) refused naming the node;
  keras: a Keras .h5 with VGG's top (fc1, fc2, predictions): the input size
         comes from fc1's shape; a base with Flatten or GlobalAveragePooling2D
         and a Dense layer.
Small inputs (32x32, 64x64) where the head allows; 224x224 where fc1 fixes it."""
import collections
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wcommon as W  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import safetensors_io as st  # noqa: E402

cli, work, part = sys.argv[1], sys.argv[2], sys.argv[3]  # part: state | onnx | keras
os.makedirs(work, exist_ok=True)
import torch  # noqa: E402
import torchvision  # noqa: E402

torch.set_num_threads(2)
TOL = 1e-4  # max |p - p_source| over the class probabilities


def p(name):
    return os.path.join(work, name)


def vgg_features(seed, arch="vgg16"):
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)().features


def seq(**parts):
    return torch.nn.Sequential(collections.OrderedDict(parts)).eval()


def state_of(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


IMG_SEED = 7  # the image each model is checked on


def spread_biases(model, seed, size):
    """Random biases (the default init has them at 0 in places) so that a
    mapping mistake changes the output, and the last layer scaled so that the
    class scores on the test image are 3 units apart: a softmax far from
    uniform and far from one-hot."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.named_parameters():
            if name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        model.eval()
        z = model(torch.from_numpy(W.model_input(W.random_image(size, IMG_SEED), "torch"))).numpy()
        scale = 3.0 / float(np.ptp(z))
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return model


def probs_of(model, img, preprocess="torch"):
    with torch.no_grad():
        return W.softmax(model(torch.from_numpy(W.model_input(img, preprocess))).numpy())


def check_predict(tag, ckpt, model, size, preprocess="torch", classes=None):
    """predict on a random image of the model's input size: the source model's
    probabilities, and the class name of its best class."""
    img = W.random_image(size, IMG_SEED)
    path = p(tag + ".ppm")
    W.write_ppm(path, img)
    ref = probs_of(model, img, preprocess)
    rc, out, se = W.predict(cli, ckpt, path)
    if not W.check(rc == 0 and out is not None, "%s: predict exit 0 (got %d: %s)" % (tag, rc, se.strip())):
        return None
    got = np.array(out["probs"])
    err = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("inf")
    # a saturated softmax (one class at 1.0) would hide a wrong mapping: the fixture keeps them apart
    W.check(err < TOL and ref.max() < 0.999, "%s: predict gives the source model's probabilities %s, max abs err %.2e"
            % (tag, np.round(ref[:4], 4), err))
    if classes:
        W.check(out["class"] == classes[int(np.argmax(ref))], "%s: predicted class %r, the source's best is %r" % (tag, out["class"], classes[int(np.argmax(ref))]))
    W.remove(path)
    return ref


def convert_ok(tag, src, out, *opts):
    rc, so, se = W.run(cli, "convert", src, out, *opts)
    W.check(rc == 0, "%s: convert exit 0 (got %d: %s)" % (tag, rc, se.strip()))
    if rc:
        return None
    return st.read(out)[1]


def refused(tag, src, fragments, *opts, absent=()):
    """convert fails with exit 2 and one message naming what it found and expected."""
    out = p("refused.safetensors")
    rc, so, se = W.run(cli, "convert", src, out, *opts)
    msg = se.strip()
    ok = rc == 2 and all(f.lower() in msg.lower() for f in fragments) and not any(a.lower() in msg.lower() for a in absent)
    W.check(ok and len(msg.splitlines()) == 1 and not os.path.exists(out),
            "%s: refused (exit %d), message %r has %s%s" % (tag, rc, msg, fragments, " and not %s" % list(absent) if absent else ""))
    W.remove(out)


def train(data, run, *opts):
    shutil.rmtree(run, ignore_errors=True)
    return W.run(cli, "train", data, "--run", run, "--epochs", "1", "--batch", "2", "--freeze", "base", *opts)


def make_data(root, classes, size, n=2, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "valid"):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                W.write_ppm(os.path.join(root, split, c, "%d.ppm" % i), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def part_state():
    data = p("data32")
    make_data(data, ["cat", "dog"], 32)
    # 1. nn.Sequential(features=vgg16().features, head=Sequential(Flatten(), Linear(512, 2))): loupe's
    #    names exactly, no __metadata__
    m1 = spread_biases(seq(features=vgg_features(1), head=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(512, 2))), 1, 32)
    it = p("it.safetensors")
    st.write(it, state_of(m1))
    run = p("run1")
    rc, so, se = train(data, run, "--model", "vgg16", "--top", "none", "--head", "flatten,dense:2", "--weights", it, "--size", "32x32", "--lr", "1e-12")
    if W.check(rc == 0 and "Loaded 28 tensors" in so, "1. train --weights of a state dict with loupe's names: exit %d, %s" % (rc, (se or so).strip()[-300:])):
        ck, _ = st.read(os.path.join(run, "checkpoints", "last.safetensors"))
        src = state_of(m1)
        err = max(float(np.max(np.abs(ck[k] - src[k]))) for k in src)
        W.check(set(src) <= set(ck) and err < 1e-6, "1. the checkpoint holds the file's base and head (max diff %.1e)" % err)
    # the same file at 64x64: the head (512 inputs) does not fit the model's (2048): left out, said so
    run = p("run1b")
    make_data(p("data64"), ["cat", "dog"], 64)
    rc, so, se = train(p("data64"), run, "--top", "none", "--head", "flatten,dense:2", "--weights", it, "--size", "64x64")
    W.check(rc == 0 and "Loaded 26 tensors" in so and "Not used (no such layer in this model, or another shape): head.1.weight,head.1.bias" in so,
            "1. a head that does not fit is left out and listed: exit %d, %s" % (rc, (se or so).strip()[-300:]))
    # convert: flatten or gap? the names cannot tell; --head can
    refused("1. convert without --head", it, ["head.1.weight", "flatten", "global average pooling", "--head"], absent=["not a VGG"])
    ck1 = p("it.loupe.safetensors")
    meta = convert_ok("1. convert --head flatten,dense:2 --classes", it, ck1, "--head", "flatten,dense:2", "--classes", "cat,dog")
    if meta:
        W.check(meta.get("input_size") == "32x32" and json.loads(meta.get("classes", "[]")) == ["cat", "dog"], "1. metadata %s" % meta)
        check_predict("1. predict", ck1, m1, 32, classes=["cat", "dog"])
        rc, so, se = W.run(cli, "evaluate", ck1, os.path.join(data, "valid"), "--json")
        W.check(rc == 0 and json.loads(so)["n"] == 4, "1. evaluate runs on the converted model (exit %d %s)" % (rc, se.strip()))
    refused("1. --head with another dense count", it, ["2 dense layers", "has 1", "head.1.weight"], "--head", "flatten,dense:8:relu,dense:2")
    refused("1. --size that does not fit the flatten", it, ["head.1.weight", "512 inputs", "64x64", "2048"], "--head", "flatten,dense:2", "--size", "64")
    refused("1. --classes of another count", it, ["3 classes", "2 outputs"], "--head", "flatten,dense:2", "--classes", "a,b,c")
    refused("1. a class named twice", it, ["'a' given twice"], "--head", "flatten,dense:2", "--classes", "a,a")
    W.remove(it, ck1)

    # 2. AdaptiveAvgPool2d(1), Flatten, Linear, ReLU, Dropout, Linear numbered the PyTorch way (head.2, head.5)
    m2 = spread_biases(seq(features=vgg_features(2), head=torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(512, 16), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(16, 3))), 2, 64)
    gap = p("gap.safetensors")
    st.write(gap, state_of(m2))
    ck2 = p("gap.loupe.safetensors")
    meta = convert_ok("2. gap head, --head gap,dense:16:relu,dropout,dense:3 --size 64", gap, ck2, "--head", "gap,dense:16:relu,dropout,dense:3", "--size", "64")
    if meta:
        W.check(meta.get("head") == "gap,dense:16:relu,dropout,dense:3" and meta.get("input_size") == "64x64" and "head.1.weight" in st.read(ck2)[0],
                "2. metadata %s" % {k: meta.get(k) for k in ("head", "input_size")})
        check_predict("2. predict", ck2, m2, 64, classes=["class_0", "class_1", "class_2"])
    # without --head at 64x64: a flatten there would give 2048, so the 512 inputs say gap; only what follows head.2 is asked
    refused("2. convert --size 64 without --head", gap, ["what comes between head.0 and head.2.weight", "--head gap,dense:16:relu,"],
            "--size", "64", absent=["both give 512", "flatten"])
    refused("2. --head flatten where the file's head.2 cannot follow one", gap, ["head.2.weight", "512 inputs"], "--head", "flatten,dense:16:relu,dense:3",
            "--size", "64")
    # train: the first dense layer kept by order (head.2 -> head.1), the 3-class output left out for a 2-class model
    run = p("run2")
    rc, so, se = train(p("data64"), run, "--top", "none", "--head", "gap,dense:16:relu,dropout,dense", "--weights", gap, "--size", "64x64", "--lr", "1e-12")
    if W.check(rc == 0 and "Loaded 28 tensors" in so and "head.5.weight" in so, "2. train keeps head.2 as head.1: exit %d, %s" % (rc, (se or so).strip()[-300:])):
        ck, _ = st.read(os.path.join(run, "checkpoints", "last.safetensors"))
        W.check(float(np.max(np.abs(ck["head.1.weight"] - state_of(m2)["head.2.weight"]))) < 1e-6, "2. head.1 holds the file's head.2")
    W.remove(gap, ck2)

    # 3. torchvision's VGG16 with its classifier replaced (Linear, ReLU, Dropout, Linear): at 224x224
    m3 = torchvision.models.vgg16()
    m3.classifier = torch.nn.Sequential(torch.nn.Linear(25088, 32), torch.nn.ReLU(True), torch.nn.Dropout(), torch.nn.Linear(32, 2))
    m3 = spread_biases(m3, 3, 224)
    tv = p("tv_custom.safetensors")
    st.write(tv, state_of(m3))
    ck3 = p("tv_custom.loupe.safetensors")
    meta = convert_ok("3. torchvision VGG16, new classifier", tv, ck3)
    if meta:
        W.check(meta.get("head") == "flatten,dense:32:relu,dropout:0.5,dense:2" and meta.get("input_size") == "224x224",
                "3. metadata %s" % {k: meta.get(k) for k in ("head", "input_size")})
        check_predict("3. predict", ck3, m3, 224)
    refused("3. a classifier after the 7x7 pooling at another size", tv, ["7x7", "64x64", "224"], "--size", "64")
    W.remove(tv, ck3)

    # 4. refusals name what they found and what they expected, without contradicting themselves
    base = {("features." + k): v for k, v in state_of(vgg_features(4)).items()}
    st.write(p("fc.safetensors"), dict(base, **{"fc.weight": np.zeros((2, 512), np.float32), "fc.bias": np.zeros(2, np.float32)}))
    refused("4. VGG16 base and tensors named otherwise", p("fc.safetensors"), ["13 conv layers of a VGG16", "2 tensors", "'fc.", "head.N"],
            absent=["not a VGG"])
    plain = torch.nn.Sequential(vgg_features(5), torch.nn.Flatten(), torch.nn.Linear(512, 2))
    st.write(p("plain.safetensors"), state_of(plain))
    refused("4. an unnamed Sequential", p("plain.safetensors"), ["13 conv layers of a VGG16", "not under torchvision's names", "'0.0.weight'", "ONNX"],
            absent=["not a VGG"])
    # a base alone with --head: nothing in the file for --head to describe (it was ignored); train adds a head
    st.write(p("base.safetensors"), base)
    refused("4. --head on a base alone", p("base.safetensors"), ["convolutional base without a head", "train --weights"], "--head", "gap,dense:2")
    W.remove(p("fc.safetensors"), p("plain.safetensors"), p("base.safetensors"))


def export(model, path, size, dynamic=False, outputs=("out",)):
    kw = {"dynamic_axes": {"input": {0: "n", 2: "h", 3: "w"}}} if dynamic else {}
    torch.onnx.export(model, torch.zeros(1, 3, size, size), path, input_names=["input"], output_names=list(outputs), **kw)


def part_onnx():
    import onnx
    from onnx import numpy_helper
    # 1. features + Flatten + Linear(512, 2) (a fine-tuned model), exported at 32x32
    m1 = spread_biases(torch.nn.Sequential(vgg_features(11), torch.nn.Flatten(), torch.nn.Linear(512, 2)), 11, 32)
    f1 = p("flatten.onnx")
    export(m1, f1, 32)
    meta = convert_ok("o1. Flatten + Linear", f1, p("o1.safetensors"), "--classes", "neg,pos")
    if meta:
        W.check(meta.get("head") == "flatten,dense:2" and meta.get("input_size") == "32x32", "o1. metadata %s" % {k: meta.get(k) for k in ("head", "input_size")})
        check_predict("o1. predict", p("o1.safetensors"), m1, 32, classes=["neg", "pos"])
    # 2. AdaptiveAvgPool2d(1) + Flatten + Linear + ReLU + Dropout + Linear, exported at 64x64
    m2 = spread_biases(torch.nn.Sequential(vgg_features(12), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(512, 8),
                                           torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 3)), 12, 64)
    f2 = p("gap.onnx")
    export(m2, f2, 64)
    meta = convert_ok("o2. GlobalAveragePool + Linear/ReLU/Linear", f2, p("o2.safetensors"))
    if meta:
        W.check(meta.get("head") == "gap,dense:8:relu,dense:3" and meta.get("input_size") == "64x64", "o2. metadata %s" % {k: meta.get(k) for k in ("head", "input_size")})
        check_predict("o2. predict", p("o2.safetensors"), m2, 64)
        img = W.random_image(64, IMG_SEED)
        W.write_ppm(p("o2.ppm"), img)
        ref = probs_of(m2, img)
        rc, so, se = W.run(cli, "predict", p("o2.safetensors"), p("o2.ppm"), "--top", "2")
        best = np.argsort(-ref)[:2]
        want = "%s: class_%d (%.4f); class_%d (%.4f)" % (p("o2.ppm"), best[0], ref[best[0]], best[1], ref[best[1]])
        W.check(rc == 0 and so.strip() == want, "o2. predict --top 2 prints the 2 best: %r (want %r)" % (so.strip(), want))
    # the same with a free input size: from --size, else 224
    f2d = p("gap_dynamic.onnx")
    export(m2, f2d, 64, dynamic=True)
    meta = convert_ok("o2. dynamic input, --size 96x64", f2d, p("o2d.safetensors"), "--size", "96x64")
    W.check(meta is not None and meta.get("input_size") == "64x96", "o2. --size WxH gives the input size (HxW %s)" % (meta or {}).get("input_size"))
    meta = convert_ok("o2. dynamic input, no --size", f2d, p("o2d.safetensors"))
    W.check(meta is not None and meta.get("input_size") == "224x224", "o2. a free input size defaults to 224x224 (%s)" % (meta or {}).get("input_size"))
    W.remove(f2d, p("o2d.safetensors"), p("o2.ppm"), p("o1.safetensors"), p("o2.safetensors"))

    # 3. bad heads, refused naming the node
    class ConvAfter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.conv = vgg_features(13), torch.nn.Conv2d(512, 2, 1)

        def forward(self, x):
            f = torch.flatten(self.features(x), 1).reshape(-1, 512, 1, 1)
            return torch.flatten(self.conv(f), 1)
    export(ConvAfter().eval(), p("conv_after.onnx"), 32)
    refused("o3. a Conv after the flatten", p("conv_after.onnx"), ["Conv '/conv/Conv'", "after Flatten '/Flatten'"])
    m = onnx.load(f1)  # Linear(512, 2) made to take 1024 inputs
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.shape == (2, 512):
            t.CopyFrom(numpy_helper.from_array(np.zeros((2, 1024), np.float32), t.name))
    onnx.save(m, p("wide.onnx"))
    refused("o3. a dense layer whose input does not fit", p("wide.onnx"), ["Gemm '/2/Gemm'", "1024 inputs", "32x32", "gives 512"])

    class TwoOut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.fc = vgg_features(14), torch.nn.Linear(512, 2)

        def forward(self, x):
            f = torch.flatten(self.features(x), 1)
            return self.fc(f), f
    export(TwoOut().eval(), p("two_out.onnx"), 32, outputs=("logits", "feat"))
    refused("o3. two outputs", p("two_out.onnx"), ["2 outputs", "'logits'", "'feat'", "Gemm", "Flatten"])
    W.remove(p("conv_after.onnx"), p("wide.onnx"), p("two_out.onnx"), f1, f2)


def part_keras():
    # a Keras .h5 with VGG's top (model.save layout, narrow fc1/fc2): the input size is fc1's (224)
    layers = W.keras_vgg_layers("vgg16", True, hidden=(64, 48), classes=5, seed=21)
    img = W.random_image(224, seed=5)
    x = W.model_input(img, "caffe").transpose(0, 2, 3, 1)  # NHWC, as Keras sees it
    # predictions scaled so that the logits are a few units apart: an informative softmax
    k, b = layers[-1][1]
    scale = 3.0 / float(np.ptp(W.keras_forward(x, layers, True, conv="torch")))
    layers[-1] = ("predictions", [(k * scale).astype(np.float32), (b * scale).astype(np.float32)])
    h5 = p("keras_top.h5")
    W.write_keras_h5(h5, layers, full_model=True)
    ck = p("keras_top.safetensors")
    meta = convert_ok("k1. Keras VGG16 with its top", h5, ck, "--classes", "a,b,c,d,e")
    if meta:
        W.check(meta.get("input_size") == "224x224" and meta.get("head") == "flatten,dense:64:relu,dense:48:relu,dense:5" and meta.get("preprocess") == "caffe",
                "k1. metadata %s" % {k: meta.get(k) for k in ("input_size", "head", "preprocess")})
        W.write_ppm(p("k1.ppm"), img)
        ref = W.softmax(W.keras_forward(x, layers, True, conv="torch"))
        rc, out, se = W.predict(cli, ck, p("k1.ppm"))
        if W.check(rc == 0 and out is not None, "k1. predict exit 0 (got %d: %s)" % (rc, se.strip())):
            err = float(np.max(np.abs(np.array(out["probs"]) - ref)))
            W.check(err < TOL and ref.max() < 0.999 and out["class"] == "abcde"[int(np.argmax(ref))],
                    "k1. predict gives the Keras model's probabilities %s (max abs err %.2e), class %s" % (np.round(ref, 4), err, out["class"]))
    W.remove(h5, ck, p("k1.ppm"))

    # a Keras base with Flatten + Dense at 64x64 (a 2x2 map read in Keras' H, W, C order), and with
    # GlobalAveragePooling2D + Dense at 32x32 (--size: the pooling leaves the size free)
    for tag, pool, size, opts in (("k2", "flatten", 64, ()), ("k3", "global_average_pooling2d", 32, ("--size", "32"))):
        base = W.keras_vgg_layers("vgg16", False, seed=22)
        img = W.random_image(size, IMG_SEED)
        x = W.model_input(img, "caffe").transpose(0, 2, 3, 1)
        feat = W.keras_forward(x, base, False)  # (1, s, s, 512) NHWC
        feat = feat.reshape(1, -1) if pool == "flatten" else feat.mean(axis=(1, 2))
        rng = np.random.default_rng(23)
        k = rng.standard_normal((feat.shape[1], 3))
        b = rng.standard_normal(3) * 0.1
        scale = 3.0 / float(np.ptp(feat @ k + b))
        k, b = (k * scale).astype(np.float32), (b * scale).astype(np.float32)
        ref = W.softmax(feat @ k.astype(np.float64) + b)
        h5, ck = p(tag + ".h5"), p(tag + ".safetensors")
        W.write_keras_h5(h5, base + [(pool, []), ("dense", [k, b])])
        meta = convert_ok("%s. Keras base + %s + Dense" % (tag, pool), h5, ck, *opts)
        if meta:
            W.check(meta.get("head") == ("flatten" if pool == "flatten" else "gap") + ",dense:3" and meta.get("input_size") == "%dx%d" % (size, size),
                    "%s. metadata %s" % (tag, {k: meta.get(k) for k in ("head", "input_size")}))
            W.write_ppm(p(tag + ".ppm"), img)
            rc, out, se = W.predict(cli, ck, p(tag + ".ppm"))
            if W.check(rc == 0 and out is not None, "%s. predict exit 0 (got %d: %s)" % (tag, rc, se.strip())):
                err = float(np.max(np.abs(np.array(out["probs"]) - ref)))
                W.check(err < TOL and ref.max() < 0.999, "%s. predict gives the Keras model's probabilities %s (max abs err %.2e)" % (tag, np.round(ref, 4), err))
        W.remove(h5, ck, p(tag + ".ppm"))


{"state": part_state, "onnx": part_onnx, "keras": part_keras}[part]()
W.finish()
