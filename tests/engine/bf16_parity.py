#!/usr/bin/python3
"""bf16 training step against PyTorch 1.13 (ctest engine_bf16_parity).

The same VGG weights (or, with --arch, a torchvision ResNet's, MobileNetV2's or EfficientNet-B0's
with random batch norm scales and statistics, batch norm in --bn's mode) and batch go through loupe's bf16 net
(convolutions, pooling, batch norm and adds in bf16 on oneDNN, dense layers too at batches
over 4; fp32 master weights, batch norm statistics and loss)
and through PyTorch twice: in fp32 (the exact answer) and under
torch.autocast("cpu", bfloat16) (what PyTorch users get from mixed precision). For logits, loss, every gradient and the
weights after SGD steps we measure the relative error to PyTorch fp32,
||x - x_fp32|| / ||x_fp32||, for loupe and for PyTorch's own bf16.

Passes when loupe's error is at bf16's level: per tensor no more than
max(2x PyTorch bf16's error, the undecided-decision error below) + 2e-3 (bf16 keeps 8
significant bits, 3.9e-3 relative rounding), every gradient pointing the same way as fp32's
(cosine > 0.8), and an error above 1e-5 for the logits (the net really ran in bf16, not
silently in fp32). Exits 77 (skipped) without native bf16 (the CPU's, or under an ISA cap
below it), where loupe refuses bf16.

ResNets get no undecided-decision term (its computation walks VGG's chain of layers): their
limit is 2x PyTorch bf16's error + 2e-3 for every tensor.

Why PyTorch's error is not always the reference. Autocast keeps nothing of this net in fp32
but the loss and the master weights: convolutions, ReLU, max pool and Linear all run and
output bf16, forward and backward. Conv gradients are ~30% off fp32 in both because bf16
flips ReLU and max-pool decisions whose fp32 pre-activation lies within bf16's error of zero
(that error grows over the layers, to ~0.5% of the pre-activations' RMS at the last conv).
Most tensors sum thousands of such decisions, and PyTorch's error is a fair sample of their
effect. The last conv's bias gradient is not: with 2x2 maps before a 2x2 pool it sums one
term per image and channel, the head's gradient gated by the sign of the window's largest
pre-activation, with no activation factor. Its error is the head gradient's rounding plus the
few decisions bf16 cannot resolve, and one flipped decision can move it by tens of percent.
PyTorch's run and loupe's are two draws of those decisions: where PyTorch's rounding tipped
none of the heavy ones (a 4% error) and loupe's tipped one (a pre-activation of -1e-4 against
bf16's RMS error of 4e-4 there), 2x PyTorch's error judges the draw, not loupe.
So per parameter of a layer followed by ReLU the limit also admits the error those decisions
can make, computed: the gradient change from flipping every decision of that layer whose fp32
pre-activation is within sigma of zero (sigma = the RMS of PyTorch bf16's error of that
pre-activation), relative to the fp32 gradient's norm. It exceeds 2x PyTorch's error only
where a few decisions carry the tensor.

MobileNetV2: PyTorch 1.13 has no bf16 backward of ReLU6 (hardtanh) on the CPU, so its autocast
cannot train the model. Its ReLU6 modules run here as clamp(x, 0, 6) with the backward
written out, dy where 0 < x < 6 (hardtanh's own rule, PyTorch's for fp32 too): a mask, exact
in any precision, so autocast's run is what PyTorch would compute had it that kernel. The
classifier's dropout takes loupe's masks (parity.py's Mask), step by step.

EfficientNet-B0: the classifier's dropout and the blocks' stochastic depth take loupe's masks.

usage: bf16_parity.py --driver ENGINE_PARITY --workdir DIR [--arch vgg16|resnet18|resnet50|mobilenet_v2|efficientnet_b0
                      --bn train|frozen]"""
import argparse, os, subprocess, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
from parity import build  # noqa: E402
from safetensors_io import read as st_read, write as st_write  # noqa: E402


class ReLU6Fn(torch.autograd.Function):
    """ReLU6 = hardtanh(x, 0, 6) with its backward (dy where 0 < x < 6) in the input's dtype."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, dy):
        x, = ctx.saved_tensors
        return dy * ((x > 0) & (x < 6)).to(dy.dtype)


class ReLU6(nn.Module):
    def forward(self, x):
        return ReLU6Fn.apply(x)


def relf(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def undecided_flips(model, sd, x, labels, ref):
    """Per parameter of a layer followed by ReLU: the gradient change, relative to the norm of its fp32
    gradient (ref), from flipping every ReLU decision of that layer whose fp32 pre-activation z lies within
    bf16's error of zero (|z| < sigma, the RMS of PyTorch bf16's error in z at that layer). Where a 2x2 max
    pool follows, a decision is a window's: the sign of its largest z, with the pool output's gradient."""
    layers = list(model.features) + list(model.head)
    model.load_state_dict({kk: torch.from_numpy(v) for kk, v in sd.items()}, strict=True)
    runs = []
    for bf16 in (False, True):
        rec, y, i = [], x, 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(not bf16):
            while i < len(layers):
                m = layers[i]
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    z = nn.Linear.forward(m, y) if isinstance(m, nn.Linear) else m(y)
                    y = z
                    if getattr(m, "relu", False) or (i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)):
                        i += isinstance(m, nn.Conv2d)  # past the ReLU module
                        y = F.relu(z)
                        pool = i + 1 < len(layers) and isinstance(layers[i + 1], nn.MaxPool2d)
                        if pool:
                            i += 1
                            y = layers[i](y)
                        if not bf16:
                            y.retain_grad()
                        rec.append((m, z, y, pool))
                else:
                    y = m(y)
                i += 1
        if not bf16:
            F.cross_entropy(y, labels).backward(retain_graph=True)  # gradients at the ReLU / pool outputs
        runs.append(rec)
    names = {id(m): nm for nm, m in model.named_modules()}
    res = {}
    for (m, z, up, pool), (_, zb, _, _) in zip(*runs):
        sigma = float(torch.sqrt(((zb.float() - z.detach()) ** 2).mean()))
        with torch.no_grad():
            if pool:
                zmax, idx = F.max_pool2d(z, 2, 2, return_indices=True)
                flip = torch.zeros_like(z).flatten(2).scatter_(2, idx.flatten(2), (up.grad * (zmax.abs() < sigma)).flatten(2))
                flip = flip.view_as(z)
            else:
                flip = up.grad * (z.abs() < sigma)
        for t, g in zip(("weight", "bias"), torch.autograd.grad(z, [m.weight, m.bias], flip, retain_graph=True)):
            key = "grad.%s.%s" % (names[id(m)], t)
            res[key] = float(g.norm()) / max(float(np.linalg.norm(ref[key])), 1e-30)
    return res


def native_bf16():
    """The CPU has bf16 instructions and no oneDNN ISA cap below them: loupe takes oneDNN's
    effective ISA, so under ONEDNN_MAX_CPU_ISA=AVX2 or AVX512_CORE it refuses bf16 too."""
    flags = open("/proc/cpuinfo").read()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    capped = cap != "ALL" and not cap.startswith(("AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX512_CORE_FP16"))
    return (" avx512_bf16" in flags or " amx_bf16" in flags) and not capped


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--size", default="32x32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--arch", default="vgg16", choices=["vgg16", "resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0"])
    ap.add_argument("--bn", default="train", choices=["train", "frozen"], help="ResNets: batch norm mode (torch's to match)")
    a = ap.parse_args()
    if not native_bf16():
        print("SKIP: no native bf16 here (avx512_bf16 / amx_bf16, or an ISA cap below them); loupe refuses bf16")
        return 77
    torch.manual_seed(0)
    h, w = map(int, a.size.split("x"))
    n, k = a.batch, 2
    os.makedirs(a.workdir, exist_ok=True)
    p = lambda f: os.path.join(a.workdir, "bf16." + f)
    resnet = a.arch.startswith("resnet") or a.arch in ("mobilenet_v2", "efficientnet_b0")  # torchvision's whole model (top keep)
    head = "flatten,dense:64:relu,dense:2"
    model, masks = build(a.arch, "keep" if resnet else "none", head, k, 3, h, w)
    for parent in list(model.modules()):
        for nm, child in parent.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(parent, nm, ReLU6())
    with torch.no_grad():
        for name, q in model.named_parameters():
            if name.endswith(".bias"):
                q.copy_(torch.randn_like(q) * 0.05)
        for mod in model.modules():  # batch norm: random scales and statistics, as parity.py
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(1.0 + 0.2 * torch.randn_like(mod.weight))
                mod.running_mean.copy_(0.2 * torch.randn_like(mod.running_mean))
                mod.running_var.copy_(0.5 + torch.rand_like(mod.running_var))
    sd = {kk: v.detach().numpy().copy() for kk, v in model.state_dict().items()}
    meta = {"format": "loupe-checkpoint-1", "arch": a.arch, "top": "keep" if resnet else "none", "num_classes": k,
            "input_size": a.size, "in_channels": 3}
    if not resnet:
        meta["head"] = head
    st_write(p("weights.safetensors"), sd, meta)
    x = torch.rand(n, 3, h, w) * 2 - 1
    labels = torch.arange(n) % k
    st_write(p("inputs.safetensors"), {"x": x.numpy(), "labels": labels.numpy().astype(np.int64)}, {})
    env = dict(os.environ, LOUPE_PARITY_BF16="1", LOUPE_PARITY_BN=a.bn)
    subprocess.run([a.driver, "run", p("weights.safetensors"), p("inputs.safetensors"), p("out.safetensors"), "sgd", "0.01",
                    str(a.steps)], check=True, env=env)
    ours, _ = st_read(p("out.safetensors"))

    def torch_run(bf16):
        model.load_state_dict({kk: torch.from_numpy(v) for kk, v in sd.items()}, strict=True)
        model.train()
        if a.bn == "frozen":
            for mod in model.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.eval()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        res = {}
        for s in range(a.steps):
            for nm, mod in masks.items():
                mod.m = torch.from_numpy(ours["mask.%d.%s" % (s, nm)]).reshape(n, -1)
            opt.zero_grad()
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
            with ctx:
                logits = model(x)
                loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            if s == 0:
                res["logits"] = logits.detach().float().numpy()
                res["loss"] = np.array([loss.item()])
                for nm, q in model.named_parameters():
                    res["grad." + nm] = q.grad.numpy().copy()
            opt.step()
        for nm, q in model.named_parameters():
            res["final." + nm] = q.detach().numpy().copy()
        return res

    ref, tbf = torch_run(False), torch_run(True)
    flips = {} if resnet else undecided_flips(model, sd, x, labels, ref)
    failures = []
    print("relative error to PyTorch fp32")
    print("%-28s %12s %12s %12s %10s %8s" % ("tensor", "loupe bf16", "torch bf16", "undecided", "limit", "cosine"))
    for key in ["logits", "loss"] + sorted(kk for kk in ref if kk.startswith("grad.")) + \
               sorted(kk for kk in ref if kk.startswith("final.")):
        e_ours, e_torch = relf(ours[key], ref[key]), relf(tbf[key], ref[key])
        limit = max(2 * e_torch, flips.get(key, 0.0)) + 2e-3
        cos = cosine(ours[key], ref[key])
        ok = e_ours <= limit and (cos > 0.8 or not key.startswith("grad."))
        print("%-28s %12.2e %12.2e %12s %10.2e %8.4f %s" % (key, e_ours, e_torch, "%.2e" % flips[key] if key in flips else "-", limit,
                                                         cos, "ok" if ok else "FAIL"))
        if not ok:
            failures.append(key)
    e_logits = relf(ours["logits"], ref["logits"])
    if e_logits <= 1e-5:
        failures.append("logits equal fp32's to %.1e: the net did not run in bf16" % e_logits)
    if failures:
        print("FAIL:", ", ".join(failures))
        return 1
    print("ok: loupe bf16 within bf16 error of PyTorch fp32 for every tensor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
