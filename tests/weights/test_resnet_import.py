"""ResNet weights from ONNX and safetensors, against torchvision.

ONNX exports of torchvision's resnet18/resnet50 (random batch-norm statistics, so that
a wrong mapping shows):
- exported in training mode, the batch norms stay BatchNormalization nodes: `loupe
  convert` must give back torchvision's state dict exactly (every tensor equal), loaded
  with strict=True into torchvision's model;
- exported in eval mode, torch folds each batch norm into its conv: the checkpoint
  (batch norm as the identity plus the conv's bias) must compute the exported function:
  logits within 1e-4 of the largest logit (folding rounds each weight once, 2^-24
  relative, through ~50 layers);
- batch norm with epsilon 1e-3 (Keras' kind) moves into the running variance: the
  logits of the model with eps 1e-3 and of torchvision's (1e-5) on the checkpoint agree;
- a base alone (fc = Identity) converts as top none, and `loupe train --weights` takes
  the .onnx directly.
A torchvision mobilenet_v2 state dict converts without --arch too, and `loupe predict` of the
checkpoint gives torchvision's eval-mode probabilities; efficientnet_b0 too, in torchvision's
and in timm's names. mobilenet_v2 and efficientnet_b0 from ONNX: batch norm as nodes gives
torchvision's state dict exactly, folded the exported logits; a grouped-convolution graph
that is neither, or the one asked for by --arch, is refused.
Refused with what differs: ResNet v1 (stride on the first 1x1 conv), a ResNet loupe does
not build, a head of several dense layers, --arch naming another ResNet, a VGG graph with
--arch resnet18. A torchvision resnet34 state dict in safetensors converts without --arch
(the architecture and the classifier from the names)."""
import os
import subprocess
import sys

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "train"))
import make_data  # noqa: E402
import safetensors_io as st  # noqa: E402
import wcommon as W  # noqa: E402

cli, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
torch.set_num_threads(2)
torch.manual_seed(0)


def p(name):
    return os.path.join(work, name)


def randomize_bn(model, eps=None):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.6 - 0.3)
            if eps is not None:
                m.eps = eps
    return model.eval()


def export(model, path, size, training):
    x = torch.randn(1, 3, size, size)
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, x, path, input_names=["input"], output_names=["out"], training=mode, do_constant_folding=not training)
    model.eval()


def convert(tag, src, arch=None):
    out = src + ".safetensors"
    rc, so, se = W.convert(cli, src, out, arch)
    if not W.check(rc == 0, "%s: convert exit 0 (got %d: %s)" % (tag, rc, se.strip())):
        return None, None
    sd, meta = st.read(out)
    W.remove(out)
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, meta


def load_strict(tag, arch, sd, classes):
    model = getattr(torchvision.models, arch)(num_classes=classes)
    try:
        model.load_state_dict(sd, strict=True)
    except Exception as e:  # noqa: BLE001
        W.check(False, "%s: load_state_dict(strict=True): %s" % (tag, e))
        return None
    W.check(True, "%s: loads into torchvision.models.%s(num_classes=%d) with strict=True" % (tag, arch, classes))
    return model.eval()


def expect_fail(tag, src, fragments, arch=None):
    out = src + ".safetensors"
    rc, so, se = W.convert(cli, src, out, arch)
    msg = se.strip()
    W.check(rc == 2 and all(f.lower() in msg.lower() for f in fragments) and len(msg.splitlines()) <= 2,
            "%s: exit %d (want 2), one line %r with %s" % (tag, rc, msg, fragments))
    W.check(not os.path.exists(out), "%s: no output written" % tag)
    W.remove(src)


x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))

# ---- batch norm as nodes: the state dict comes back exactly ---------------------------
for arch in ("resnet18", "resnet50"):
    src = randomize_bn(getattr(torchvision.models, arch)(num_classes=5))
    export(src, p(arch + "_bn.onnx"), 64, training=True)
    sd, meta = convert(arch + " (BatchNormalization nodes)", p(arch + "_bn.onnx"))
    W.remove(p(arch + "_bn.onnx"))
    if sd is None:
        continue
    W.check(meta.get("arch") == arch and meta.get("top") == "keep" and meta.get("num_classes") == "5" and meta.get("input_size") == "64x64"
            and meta.get("preprocess") == "torch", "%s: metadata %s" % (arch, {k: meta.get(k) for k in ("arch", "top", "num_classes", "input_size")}))
    want = src.state_dict()
    W.check(sorted(sd) == sorted(want), "%s: the tensors are torchvision's, by name (%d of %d)" % (arch, len(set(sd) & set(want)), len(want)))
    worst = max((float((sd[k].double() - want[k].double()).abs().max()) for k in want if k in sd and not k.endswith("num_batches_tracked")),
                default=1.0)
    W.check(worst == 0.0, "%s: every tensor equal to torchvision's (max difference %g)" % (arch, worst))
    dst = load_strict(arch, arch, sd, 5)
    if dst is not None:
        with torch.no_grad():
            W.check(torch.equal(dst(x), src(x)), "%s: the same logits" % arch)

# ---- batch norm folded into the convs (eval-mode export) -------------------------------
for arch in ("resnet18", "resnet50"):
    src = randomize_bn(getattr(torchvision.models, arch)(num_classes=5))
    export(src, p(arch + "_folded.onnx"), 64, training=False)
    sd, meta = convert(arch + " (folded)", p(arch + "_folded.onnx"))
    W.remove(p(arch + "_folded.onnx"))
    dst = load_strict(arch + " (folded)", arch, sd, 5) if sd is not None else None
    if dst is not None:
        W.check(all(float(sd[k].abs().max()) == 0.0 for k in sd if k.endswith("running_mean")) and
                all(float(sd[k].add(-1.0).abs().max()) < 1e-4 for k in sd if k.endswith("running_var")),
                "%s (folded): batch norm as the identity (running mean 0, variance 1 - eps)" % arch)
        with torch.no_grad():
            got, want = dst(x), src(x)
        err = float((got - want).abs().max() / want.abs().max())
        W.check(err < 1e-4, "%s (folded): logits within 1e-4 of the largest (%.2e)" % (arch, err))

# ---- epsilon 1e-3 and a conv bias before the batch norm --------------------------------
src = randomize_bn(torchvision.models.resnet18(num_classes=3), eps=1e-3)
with torch.no_grad():
    src.conv1.bias = torch.nn.Parameter(torch.rand(64) - 0.5)
export(src, p("eps.onnx"), 64, training=True)
sd, meta = convert("eps 1e-3, conv bias", p("eps.onnx"))
W.remove(p("eps.onnx"))
dst = load_strict("eps 1e-3, conv bias", "resnet18", sd, 3) if sd is not None else None
if dst is not None:
    with torch.no_grad():
        got, want = dst(x), src(x)
    err = float((got - want).abs().max() / want.abs().max())
    W.check(err < 1e-5, "eps 1e-3 and the stem conv's bias: torchvision's model (eps 1e-5) computes the same logits (%.2e)" % err)

# ---- a base alone, straight into train --------------------------------------------------
base = randomize_bn(torchvision.models.resnet18())
base.fc = torch.nn.Identity()
export(base, p("base.onnx"), 64, training=True)
sd, meta = convert("base alone", p("base.onnx"))
if sd is not None:
    W.check(meta.get("top") == "none" and not any(k.startswith("fc.") for k in sd), "base alone: top none, no fc (%s)" % meta.get("top"))
data = make_data.make(p("data"), per_class=(4, 2, 2), size=32, jpeg=False)
r = subprocess.run([cli, "train", data, "--run", p("run"), "--model", "resnet18", "--weights", p("base.onnx"), "--freeze", "base",
                    "--size", "32x32", "--batch", "4", "--epochs", "1", "--threads", "2", "--tensorboard", "off"], capture_output=True, text=True)
W.check(r.returncode == 0 and "Loaded %d tensors" % (len(base.state_dict())) in r.stdout,
        "train --weights base.onnx: loads all %d tensors (exit %d: %s)" % (len(base.state_dict()), r.returncode,
                                                                           (r.stdout + r.stderr).strip().splitlines()[-3:]))
W.remove(p("base.onnx"))

# ---- refused, with what differs -----------------------------------------------------------
v1 = torchvision.models.resnet50()
for layer in (v1.layer2, v1.layer3, v1.layer4):
    layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
export(v1.eval(), p("v1.onnx"), 64, training=False)
expect_fail("ResNet v1", p("v1.onnx"), ["layer2.0.conv1", "ResNet v1", "V1.5"])

small = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1]).eval()
export(small, p("r1111.onnx"), 64, training=False)
expect_fail("a ResNet loupe does not build", p("r1111.onnx"), ["1, 1, 1, 1 bottleneck", "resnet50"])

two = torchvision.models.resnet18()
two.fc = torch.nn.Sequential(torch.nn.Linear(512, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
export(two.eval(), p("two.onnx"), 64, training=False)
expect_fail("a head of two dense layers", p("two.onnx"), ["more than one dense layer", "Identity"])

export(torchvision.models.resnet18().eval(), p("r18.onnx"), 64, training=False)
expect_fail("resnet18 graph with --arch resnet50", p("r18.onnx"), ["is a resnet18", "not the resnet50"], arch="resnet50")

# a state dict short of one tensor (the first block's conv, which once alone told a ResNet):
# still read as a ResNet, the missing tensor named
short = {k: v.numpy() for k, v in torchvision.models.resnet18(num_classes=3).state_dict().items() if k != "layer1.0.conv1.weight"}
st.write(p("r18_short.safetensors"), short, {})
expect_fail("resnet18 state dict missing a tensor", p("r18_short.safetensors"), ["resnet18", "layer1.0.conv1.weight", "does not have"])

# a state dict without num_batches_tracked (saved before PyTorch 0.4.1): converts, the counters
# filled in as 0 as load_state_dict does; convert counts parameters as torchvision's parameters
# and running statistics (the counters are not parameters)
for arch in ("resnet18", "mobilenet_v2"):
    m = randomize_bn(getattr(torchvision.models, arch)(num_classes=3))
    st.write(p(arch + "_nonbt.safetensors"), {k: v.numpy() for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}, {})
    rc, so, se = W.run(cli, "convert", p(arch + "_nonbt.safetensors"), p(arch + "_nonbt_out.safetensors"))
    count = sum(t.numel() for t in m.parameters()) + sum(b.numel() for n, b in m.named_buffers() if not n.endswith("num_batches_tracked"))
    if W.check(rc == 0 and ", %d parameters" % count in so,
               "%s state dict without num_batches_tracked: converts, %d parameters (exit %d: %s %s)" % (arch, count, rc, so.strip(), se.strip())):
        sd, _ = st.read(p(arch + "_nonbt_out.safetensors"))
        sd = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
        W.check(all(int(sd[k]) == 0 for k in m.state_dict() if k.endswith("num_batches_tracked")), "%s: the counters are 0" % arch)
        load_strict(arch + " without num_batches_tracked", arch, sd, 3)
    W.remove(p(arch + "_nonbt.safetensors"), p(arch + "_nonbt_out.safetensors"))

# --head on a model whose classifier is its own fc: refused, not silently ignored
st.write(p("r18_fc.safetensors"), {k: v.numpy() for k, v in torchvision.models.resnet18(num_classes=3).state_dict().items()}, {})
rc, so, se = W.run(cli, "convert", p("r18_fc.safetensors"), p("r18_fc_out.safetensors"), "--head", "gap,dense:2")
W.check(rc == 2 and "keeps its own classifier" in se and not os.path.exists(p("r18_fc_out.safetensors")),
        "--head on a ResNet with its fc: exit %d, %r" % (rc, se))
# another model's state dict under --arch: refused by its names, not converted into a file that
# loads nothing (train would then start from random weights)
expect_fail("resnet18 state dict with --arch mobilenet_v2", p("r18_fc.safetensors"), ["ResNet's", "not mobilenet_v2's"], arch="mobilenet_v2")
vgg_sd = {k: v.numpy() for k, v in torchvision.models.vgg11().state_dict().items()}
st.write(p("vgg_sd.safetensors"), vgg_sd, {})
expect_fail("VGG state dict with --arch efficientnet_b0", p("vgg_sd.safetensors"), ["not efficientnet_b0's", "features.0.0.weight"],
            arch="efficientnet_b0")
st.write(p("vgg_sd.safetensors"), vgg_sd, {})
expect_fail("VGG state dict with --arch resnet18", p("vgg_sd.safetensors"), ["not a ResNet state dict", "features.0.weight"], arch="resnet18")

vgg = W.torch_vgg("vgg16", hidden=(16, 16), classes=2)
torch.onnx.export(vgg, torch.randn(1, 3, 224, 224), p("vgg.onnx"))
expect_fail("VGG graph with --arch resnet18", p("vgg.onnx"), ["without residual add", "not a resnet18"], arch="resnet18")

# ---- a torchvision state dict in safetensors, no --arch -----------------------------------
r34 = randomize_bn(torchvision.models.resnet34(num_classes=7))
st.write(p("r34.safetensors"), {k: v.numpy() for k, v in r34.state_dict().items()}, {})
sd, meta = convert("resnet34 safetensors", p("r34.safetensors"))
W.remove(p("r34.safetensors"))
if sd is not None:
    W.check(meta.get("arch") == "resnet34" and meta.get("top") == "keep" and meta.get("num_classes") == "7",
            "resnet34 safetensors: arch, top and classes from the names (%s)" % {k: meta.get(k) for k in ("arch", "top", "num_classes")})
    want = r34.state_dict()
    W.check(sorted(sd) == sorted(want) and all(torch.equal(sd[k], want[k]) for k in want), "resnet34 safetensors: every tensor as saved")
    load_strict("resnet34 safetensors", "resnet34", sd, 7)

# ---- MobileNetV2: a torchvision state dict converts without --arch, predicts as torchvision --
mb = randomize_bn(torchvision.models.mobilenet_v2(num_classes=4))
st.write(p("mb.safetensors"), {k: v.numpy() for k, v in mb.state_dict().items()}, {})
rc, so, se = W.run(cli, "convert", p("mb.safetensors"), p("mb_ck.safetensors"), "--size", "64")
W.remove(p("mb.safetensors"))
if W.check(rc == 0, "mobilenet_v2 safetensors: convert exit 0 (%d: %s)" % (rc, se.strip())):
    sd, meta = st.read(p("mb_ck.safetensors"))
    W.check(meta.get("arch") == "mobilenet_v2" and meta.get("top") == "keep" and meta.get("num_classes") == "4",
            "mobilenet_v2: arch, top and classes from the names (%s)" % {k: meta.get(k) for k in ("arch", "top", "num_classes")})
    load_strict("mobilenet_v2", "mobilenet_v2", {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, 4)
    img = W.random_image(64, 9)
    W.write_ppm(p("mb.ppm"), img)
    rc, out, se = W.predict(cli, p("mb_ck.safetensors"), p("mb.ppm"))
    with torch.no_grad():
        want = W.softmax(mb(torch.from_numpy(W.model_input(img, "torch"))).numpy())
    if W.check(rc == 0 and out is not None, "mobilenet_v2 predict: exit 0 (%d: %s)" % (rc, se.strip())):
        err = float(np.abs(np.array(out["probs"]) - want).max())
        W.check(err < 1e-4 and want.max() < 0.999, "mobilenet_v2 predict gives torchvision's eval probabilities %s (within %.1e)" % (np.round(want, 3), err))
    W.remove(p("mb_ck.safetensors"), p("mb.ppm"))


# ---- EfficientNet-B0: torchvision's state dict, and timm's names for the same tensors -----------
def timm_names(sd):
    """torchvision's efficientnet_b0 names -> timm's (timm/models/_efficientnet_blocks.py: DepthwiseSeparableConv
    conv_dw, bn1, se.conv_reduce/conv_expand, conv_pw, bn2; InvertedResidual conv_pw, bn1, conv_dw, bn2, se,
    conv_pwl, bn3; EfficientNet conv_stem, bn1, blocks, conv_head, bn2, classifier)."""
    ds = [("conv_dw", "bn1"), None, ("conv_pw", "bn2")]  # block.J: (conv, bn), None: the SE
    ir = [("conv_pw", "bn1"), ("conv_dw", "bn2"), None, ("conv_pwl", "bn3")]
    top = {"features.0.0": "conv_stem", "features.0.1": "bn1", "features.8.0": "conv_head", "features.8.1": "bn2",
           "classifier.1": "classifier"}
    out = {}
    for k, v in sd.items():
        mod, leaf = k.rsplit(".", 1)
        if mod in top:
            out[top[mod] + "." + leaf] = v
            continue
        f = mod.split(".")  # features S I block J [K | fc1 | fc2]
        s, i, j = int(f[1]), int(f[2]), int(f[4])
        if f[5] in ("fc1", "fc2"):
            name = "se." + ("conv_reduce" if f[5] == "fc1" else "conv_expand")
        else:
            name = (ds if s == 1 else ir)[j][int(f[5])]
        out["blocks.%d.%d.%s.%s" % (s - 1, i, name, leaf)] = v
    return out


ef = randomize_bn(torchvision.models.efficientnet_b0(num_classes=3)).eval()
img = W.random_image(64, 11)
W.write_ppm(p("ef.ppm"), img)
with torch.no_grad():
    want = W.softmax(ef(torch.from_numpy(W.model_input(img, "torch"))).numpy())
efsd = {k: v.numpy() for k, v in ef.state_dict().items()}
for label, tensors in (("efficientnet_b0 (torchvision names)", efsd), ("efficientnet_b0 (timm names)", timm_names(efsd))):
    st.write(p("ef.safetensors"), tensors, {})
    rc, so, se = W.run(cli, "convert", p("ef.safetensors"), p("ef_ck.safetensors"), "--size", "64")
    W.remove(p("ef.safetensors"))
    if not W.check(rc == 0, "%s safetensors: convert exit 0 (%d: %s)" % (label, rc, se.strip())):
        continue
    sd, meta = st.read(p("ef_ck.safetensors"))
    W.check(meta.get("arch") == "efficientnet_b0" and meta.get("top") == "keep" and meta.get("num_classes") == "3",
            "%s: arch, top and classes from the names (%s)" % (label, {k: meta.get(k) for k in ("arch", "top", "num_classes")}))
    load_strict(label, "efficientnet_b0", {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, 3)
    rc, out, se = W.predict(cli, p("ef_ck.safetensors"), p("ef.ppm"))
    if W.check(rc == 0 and out is not None, "%s predict: exit 0 (%d: %s)" % (label, rc, se.strip())):
        err = float(np.abs(np.array(out["probs"]) - want).max())
        W.check(err < 1e-4 and want.max() < 0.999, "%s predict gives torchvision's eval probabilities %s (within %.1e)" % (label, np.round(want, 3), err))
    W.remove(p("ef_ck.safetensors"))
W.remove(p("ef.ppm"))

# ---- MobileNetV2 and EfficientNet-B0 from ONNX: batch norm as nodes (training-mode export:
# the state dict exactly) and folded (eval-mode export: the exported logits) --------------
for arch in ("mobilenet_v2", "efficientnet_b0"):
    src = randomize_bn(getattr(torchvision.models, arch)(num_classes=4))
    if arch == "efficientnet_b0":  # torch 1.13 cannot export stochastic depth in training mode; in eval it is the identity
        for stage in src.features[1:8]:
            for blk in stage:
                blk.stochastic_depth = torch.nn.Identity()
    export(src, p(arch + "_bn.onnx"), 64, training=True)
    want = src.state_dict()  # as exported (the training-mode export's forward moved the running statistics)
    sd, meta = convert(arch + " ONNX (BatchNormalization nodes)", p(arch + "_bn.onnx"))
    W.remove(p(arch + "_bn.onnx"))
    if sd is not None:
        W.check(meta.get("arch") == arch and meta.get("top") == "keep" and meta.get("num_classes") == "4",
                "%s ONNX: arch, top and classes (%s)" % (arch, {k: meta.get(k) for k in ("arch", "top", "num_classes")}))
        worst = max((float((sd[k].double() - want[k].double()).abs().max()) for k in want if k in sd and not k.endswith("num_batches_tracked")),
                    default=1.0)
        W.check(sorted(sd) == sorted(want) and worst == 0.0, "%s ONNX (BatchNormalization nodes): torchvision's state dict exactly "
                "(%d of %d tensors, max difference %g)" % (arch, len(set(sd) & set(want)), len(want), worst))
    src.eval()
    export(src, p(arch + "_folded.onnx"), 64, training=False)
    sd, meta = convert(arch + " ONNX (folded)", p(arch + "_folded.onnx"))
    W.remove(p(arch + "_folded.onnx"))
    dst = load_strict(arch + " ONNX (folded)", arch, sd, 4) if sd is not None else None
    if dst is not None:
        with torch.no_grad():
            got, ref = dst(x), src(x)
        err = float((got - ref).abs().max() / ref.abs().max())
        W.check(err < 1e-4, "%s ONNX (folded): logits within 1e-4 of the largest (%.2e)" % (arch, err))
# refused: a grouped-conv graph that is neither (torchvision's shufflenet has no Clip or Sigmoid)
export(torchvision.models.shufflenet_v2_x0_5().eval(), p("shuffle.onnx"), 64, training=False)
expect_fail("shufflenet (grouped convolutions, neither model)", p("shuffle.onnx"), ["grouped convolutions", "mobilenet_v2 and efficientnet_b0"])
mb = torchvision.models.mobilenet_v2().eval()
export(mb, p("mb_as_ef.onnx"), 64, training=False)
expect_fail("mobilenet_v2 graph with --arch efficientnet_b0", p("mb_as_ef.onnx"), ["Clip", "efficientnet_b0"], arch="efficientnet_b0")

W.finish()
