#!/usr/bin/python3
"""PyTorch 1.13 parity for the loupe engine (run by ctest, see CMakeLists.txt).

For one model configuration:
  1. the C driver builds the net with loupe's init and saves a checkpoint; it must
     load strictly into the equivalent torch model (torchvision.models.vgg16/19 for
     top=keep) and its init statistics must match torchvision's (kaiming normal
     fan_out for conv, N(0, 0.01) for linear, zero bias);
  2. random biases are set on the torch side and torch's state dict is written as a
     loupe checkpoint, which the C driver loads strictly (the reverse direction);
  3. same input and labels on both sides: eval logits, then training steps with the
     same dropout masks (dumped by the C side): logits, loss, per-sample loss, probs,
     every parameter gradient of the first step, every weight after STEPS steps of
     SGD (momentum 0.9, lr 0.01) and of Adam (lr 1e-4, eps 1e-6 by default), plus
     optional extra optimizers.
Metric: max|loupe - torch| / max(max|torch|, 1e-6) per tensor; worst per check.
Single-step quantities have fixed tolerances from fp32 arithmetic: 1e-4 logits/loss/probs,
GRAD_TOL = 1e-5 first-step gradients (13-16 conv layers of fp32 sums in another order:
measured up to 6e-6 with Winograd in every layer), 1e-5 optimizers alone on shared gradients.
With batch norm on the batch's statistics (ResNets in training mode at batch 2), the training
forward and the gradients are ill-conditioned (a normalization over few values, layer after
layer): there the training logits, loss and probabilities may also be off by K_SENS x PyTorch's
own sensitivity, and each gradient tensor by K_SENS x its own, where that is more.
Weights after STEPS steps: tolerance from PyTorch's own sensitivity in the same setting.
PyTorch trains again from the same weights times (1 +- 1e-7) (--sens-runs sign patterns,
the same data and masks) and the same metric gives how far it moves from itself; tensor by
tensor, loupe must be within K_SENS x the worst of those + FLOOR. Training amplifies
rounding mostly through discrete events: a ReLU or max-pool decision within rounding of its
tie flips and the gradient through it jumps (Adam turns a changed tiny gradient into a step
of up to lr). So one sign pattern's sensitivity can be decades off another's, and loupe,
rounding in other places, may hit an event that one pattern misses: several patterns, the
worst of them (the same near-tie decisions flip again and again, so loupe's jumps match a
pattern's to the digit). K_SENS = 10: without events loupe lands within 0.3-3x a pattern
(the larger end where its Winograd rounds more than a 1e-7 nudge), with them at the same
events; a decade covers an event of loupe's that the patterns catch smaller. A wrong update
(lr 1% off, another momentum, a step fewer) is off by a good part of the update, far above.
FLOOR = 1e-6, eight fp32 ulps of the largest weight, so that a sensitivity near zero does
not demand bit equality.
"""
import argparse, os, subprocess, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from safetensors_io import read as st_read, write as st_write  # noqa: E402


class Mask(nn.Module):
    """Dropout with an externally given mask (the C side's), identity in eval."""
    def __init__(self):
        super().__init__()
        self.m = None

    def forward(self, x):
        if not self.training:
            return x
        m = self.m  # stochastic depth: one value per sample
        return x * (m.reshape(-1, *([1] * (x.dim() - 1))) if x.dim() > 2 and m.numel() == x.shape[0] else m)


class Dense(nn.Linear):
    def __init__(self, i, o, relu):
        super().__init__(i, o)
        self.relu = relu

    def forward(self, x):
        y = super().forward(x)
        return F.relu(y) if self.relu else y


def tiny_features(c):
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2, 2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2, 2))


class Net(nn.Module):
    def __init__(self, features, head):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x):
        return self.head(self.features(x))


class TinyKeep(nn.Module):
    def __init__(self, c, k):
        super().__init__()
        self.features = tiny_features(c)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(16 * 49, 64), nn.ReLU(True), Mask(), nn.Linear(64, 64), nn.ReLU(True), Mask(),
                                        nn.Linear(64, k))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock without batch norm (loupe's tiny_res)."""
    def __init__(self, i, o, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(i, o, 3, stride, 1)
        self.conv2 = nn.Conv2d(o, o, 3, 1, 1)
        self.downsample = nn.Sequential(nn.Conv2d(i, o, 1, stride)) if stride != 1 or i != o else None

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class TinyRes(nn.Module):
    """loupe's tiny_res: ResNet's graph in small (identity and 1x1-conv shortcuts), top=keep
    (global average pool + fc) or a head."""
    def __init__(self, c, k, head=None):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 8, 3, 1, 1)
        self.maxpool = nn.MaxPool2d(2, 2)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2))
        if head is None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, k)
        else:
            self.head = head

    def features(self, x):
        return self.layer2(self.layer1(self.maxpool(F.relu(self.conv1(x)))))

    def forward(self, x):
        y = self.features(x)
        return self.head(y) if hasattr(self, "head") else self.fc(torch.flatten(self.avgpool(y), 1))


class ResNetHead(nn.Module):
    """A torchvision ResNet up to layer4 (its names), then a head (loupe's top=none)."""
    def __init__(self, arch, head):
        super().__init__()
        r = getattr(torchvision.models, arch)()
        for nm in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, nm, getattr(r, nm))
        self.head = head

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.head(self.features(x))


def build(arch, top, head, k, c, h, w):
    masks = {}
    if arch.startswith("resnet") and top == "keep":
        return getattr(torchvision.models, arch)(num_classes=k), masks
    if arch == "tiny_res" and top == "keep":
        return TinyRes(c, k), masks
    if arch == "mobilenet_v2" and top == "keep":  # classifier: Dropout(0.2), Linear
        m = torchvision.models.mobilenet_v2(num_classes=k)
        m.classifier[0] = Mask()
        masks["classifier.0"] = m.classifier[0]
        return m, masks
    if arch == "efficientnet_b0" and top == "keep":  # classifier: Dropout(0.2), Linear; stochastic depth in blocks
        m = torchvision.models.efficientnet_b0(num_classes=k)
        m.classifier[0] = Mask()
        masks["classifier.0"] = m.classifier[0]
        for s in range(1, 8):
            for i, blk in enumerate(m.features[s]):
                if blk.use_res_connect:
                    blk.stochastic_depth = Mask()
                    masks["features.%d.%d" % (s, i)] = blk.stochastic_depth
        return m, masks
    if arch in ("vgg16", "vgg19"):
        if top == "keep":
            m = getattr(torchvision.models, arch)(num_classes=k)
            for i in (2, 5):
                m.classifier[i] = Mask()
                masks["classifier.%d" % i] = m.classifier[i]
            return m, masks
        feats = getattr(torchvision.models, arch)().features
        ch = 512
    elif arch == "tiny_res":
        feats = TinyRes(c, k).features
        ch = 16
    elif arch.startswith("resnet"):
        feats = ResNetHead(arch, None).features
        ch = 2048 if arch == "resnet50" else 512
    else:
        if top == "keep":
            m = TinyKeep(c, k)
            masks = {"classifier.2": m.classifier[2], "classifier.5": m.classifier[5]}
            return m, masks
        feats = tiny_features(c)
        ch = 16
    with torch.no_grad():
        fh, fw = feats(torch.zeros(1, c, h, w)).shape[2:]
    mods, shape, toks = [], (ch, fh, fw), head.split(",")
    for i, t in enumerate(toks):
        p = t.split(":")
        if p[0] == "flatten":
            mods.append(nn.Flatten()); shape = (shape[0] * shape[1] * shape[2],)
        elif p[0] == "gap":
            mods.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())); shape = (shape[0],)
        elif p[0] == "dropout":
            mods.append(Mask()); masks["head.%d" % i] = mods[-1]
        elif p[0] == "dense":
            units = [int(q) for q in p[1:] if q.isdigit()]
            units = units[0] if units else k
            mods.append(Dense(shape[0], units, "relu" in p[1:])); shape = (units,)
        else:
            raise SystemExit("unknown head token " + t)
    if arch == "tiny_res":
        return TinyRes(c, k, nn.Sequential(*mods)), masks
    if arch.startswith("resnet"):
        return ResNetHead(arch, nn.Sequential(*mods)), masks
    return Net(feats, nn.Sequential(*mods)), masks


def torch_opt(opt, params, lr=0.01):
    if opt == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if opt == "sgd_plain":
        return torch.optim.SGD(params, lr=lr, weight_decay=1e-3)
    if opt == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    if opt == "adam":
        return torch.optim.Adam(params, lr=lr)
    if opt == "adam_eps6":
        return torch.optim.Adam(params, lr=lr, eps=1e-6)
    if opt == "adam_wd":
        return torch.optim.Adam(params, lr=lr, weight_decay=1e-2)
    return torch.optim.AdamW(params, lr=lr)


def optim_check(a, wd, sd, model, report):
    """Optimizer semantics alone: the same random gradients (some tiny, some zero) on both sides."""
    g = {}
    names = list(sd.keys())
    for s in range(a.steps):
        for nm in names:
            v = np.random.randn(*sd[nm].shape).astype(np.float32) * np.float32(10.0 ** np.random.uniform(-9, 0))
            v[np.random.rand(*v.shape) < 0.1] = 0.0
            g["g.%d.%s" % (s, nm)] = v
    st_write(wd("grads.safetensors"), g, {})
    for opt in ("sgd", "sgd_plain", "nesterov", "adam", "adam_wd", "adamw"):
        subprocess.run([a.driver, "optim", wd("torch.safetensors"), wd("grads.safetensors"), wd("optim.safetensors"), opt, "0.01",
                        str(a.steps)], check=True)
        out, _ = st_read(wd("optim.safetensors"))
        model.load_state_dict({kk: torch.from_numpy(v) for kk, v in sd.items()}, strict=True)
        params = dict(model.named_parameters())
        o = torch_opt(opt, list(params.values()))
        for s in range(a.steps):
            for nm, p in params.items():
                p.grad = torch.from_numpy(g["g.%d.%s" % (s, nm)])
            o.step()
        worst = max(rel(out["final." + nm], p.detach().numpy()) for nm, p in params.items())
        # 1e-5: with weight decay, grad + wd*w can nearly cancel and torch fuses it (FMA)
        report("optimizer only: %s, %d steps" % (opt, a.steps), worst, 1e-5)


def bn_modes(model, frozen, bn):
    """Each BatchNorm2d in training mode or eval mode as loupe's --bn puts it: train, frozen, or auto (eval
    where its weight is frozen)."""
    for nm, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.train(bn == "train" or (bn == "auto" and (nm + ".weight") not in frozen))


def torch_train(model, masks, state, frozen, out, x, labels, opt, steps, bn="auto"):
    """PyTorch's run of the driver's: eval logits, first-step outputs and gradients, weights after STEPS steps,
    with the dropout masks loupe drew."""
    model.load_state_dict({kk: torch.from_numpy(v) for kk, v in state.items()}, strict=True)
    for nm, p in model.named_parameters():
        p.requires_grad_(nm not in frozen)
    params = [p for nm, p in model.named_parameters() if nm not in frozen]
    o = torch_opt(opt, params, 1e-4 if "adam" in opt else 0.01)
    n, res = x.shape[0], {}
    model.eval()
    with torch.no_grad():
        res["eval_logits"] = model(x).numpy()
    model.train()
    bn_modes(model, frozen, bn)
    for s in range(steps):
        for nm, mod in masks.items():
            mod.m = torch.from_numpy(out["mask.%d.%s" % (s, nm)]).reshape(n, -1)
        o.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        if s == 0:
            res["logits"] = logits.detach().numpy().copy()
            res["loss"] = np.array([loss.item()])
            res["loss_per_sample"] = F.cross_entropy(logits, labels, reduction="none").detach().numpy()
            res["probs"] = F.softmax(logits, 1).detach().numpy()
            for nm, p in model.named_parameters():
                if nm not in frozen:
                    res["grad." + nm] = p.grad.numpy().copy()
        o.step()
    for nm, p in model.named_parameters():
        res["final." + nm] = p.detach().numpy().copy()
    for nm, b in model.named_buffers():
        res["final." + nm] = b.detach().numpy().copy()
    return res


def perturb(state, seed, rel_step=1e-7):
    """Every weight times (1 +- rel_step), random signs from seed: every nonzero element moves by one or two
    fp32 ulps (6.7e-8 to 1.3e-7 relative)."""
    rng, res = np.random.RandomState(seed), {}
    for kk, v in state.items():
        if v.dtype != np.float32:
            res[kk] = v
            continue
        bits = np.unpackbits(np.frombuffer(rng.bytes((v.size + 7) // 8), np.uint8))[:v.size].reshape(v.shape)
        res[kk] = v + v * np.where(bits == 1, np.float32(rel_step), np.float32(-rel_step))
    return res


def rel(a, b):
    # in the arrays' own precision: an fp32 difference is exact for close values (Sterbenz), and float64
    # copies of VGG16's classifier cost seconds per comparison
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-6)) if b.size else 0.0


T0 = time.time()
GRAD_TOL = 1e-5
K_SENS = 10
FLOOR = 1e-6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--arch", default="vgg16")
    ap.add_argument("--top", default="none")
    ap.add_argument("--head", default="flatten,dense:2")
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--size", default="32x32")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--opts", default="sgd,adam_eps6")
    ap.add_argument("--freeze", default="")
    ap.add_argument("--skip-init-check", action="store_true", help="skip the loupe-init -> torch step")
    ap.add_argument("--conv", choices=["auto", "direct", "winograd"],
                    help="convolution algorithm of loupe's net (default: the net's own, auto)")
    ap.add_argument("--bn", choices=["auto", "train", "frozen"], default="auto", help="loupe's batch norm mode (and torch's to match)")
    ap.add_argument("--sens-runs", type=int, default=8, help="perturbed PyTorch runs that measure its sensitivity")
    ap.add_argument("--optim-check", action="store_true", help="also check optimizers alone on shared gradients")
    ap.add_argument("--skip-under-cap", default="", help="an ONEDNN_MAX_CPU_ISA cap under which this case is ill-conditioned "
                    "beyond what the sensitivity runs measure (tests/engine/CMakeLists.txt says why): exit 77, skipped, saying so")
    a = ap.parse_args()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if a.skip_under_cap and cap == a.skip_under_cap.upper():
        print("SKIP: ill-conditioned under ONEDNN_MAX_CPU_ISA=%s (ReLU decisions within rounding of 0; tests/engine/CMakeLists.txt)" % cap)
        return 77
    torch.manual_seed(0)
    np.random.seed(0)
    h, w = map(int, a.size.split("x"))
    k, c, n = a.classes, a.channels, a.batch
    os.makedirs(a.workdir, exist_ok=True)
    # every option in the name: tests sharing the work folder may run at once (ctest -j)
    tag = "%s-%s-%s-%s-b%d-%s-%s-%s" % (a.arch, a.top, a.head.replace(",", "_").replace(":", "-"), a.size, n,
                                         a.conv or "net", a.opts.replace(",", "_"), a.freeze.replace(".", "") or "all")
    wd = lambda f: os.path.join(a.workdir, tag + "." + f)
    model, masks = build(a.arch, a.top, a.head, k, c, h, w)
    failures = []

    def report(what, v, tol, note=""):
        ok = v <= tol
        print("%-34s worst rel err %.2e (tol %.0e)%s %s" % (what, v, tol, note, "ok" if ok else "FAIL"))
        if not ok:
            failures.append(what)

    def report_steps(what, ours, theirs):
        """ours: (tensor, loupe's error to torch); theirs: (tensor, perturbed torch's error to torch) for every
        perturbed run. Each tensor within K_SENS x its worst sensitivity + FLOOR; prints the worst error, the
        tensor nearest its tolerance and the worst sensitivity."""
        sens = {}
        for nm, v in theirs:
            sens[nm] = max(sens.get(nm, 0.0), v)
        tol = {nm: K_SENS * sens[nm] + FLOOR for nm, _ in ours}
        e = max(ours, key=lambda r: r[1])
        t = max(ours, key=lambda r: r[1] / tol[r[0]])
        bad = [nm for nm, v in ours if v > tol[nm]]
        print("%-34s worst rel err %.2e (%s); nearest its tol: %s %.2e, tol %g x sensitivity %.2e + %.0e = %.2e "
              "(worst sensitivity %.2e) %s" % (what, e[1], e[0], t[0], t[1], K_SENS, sens[t[0]], FLOOR, tol[t[0]],
                                               max(sens.values()), "ok" if not bad else "FAIL (%d of %d)" % (len(bad), len(ours))))
        for nm in bad:
            print("    %-30s rel err %.2e > tol %.2e (sensitivity %.2e)" % (nm, dict(ours)[nm], tol[nm], sens[nm]))
        if bad:
            failures.append(what)

    # 1. loupe init -> torch strict
    if not a.skip_init_check:
        head_arg = a.head if a.top == "none" else "-"
        subprocess.run([a.driver, "init", wd("init.safetensors"), a.arch, a.top, head_arg, str(k), str(c), str(h), str(w), "7"],
                       check=True)
        init, meta = st_read(wd("init.safetensors"))
        model.load_state_dict({kk: torch.from_numpy(v) for kk, v in init.items()}, strict=True)
        print("loupe checkpoint -> torch load_state_dict(strict=True): ok (%d tensors, format %s)" % (len(init), meta.get("format")))
        worst_std = 0.0
        for name, v in init.items():
            if name.endswith(".bias"):
                if np.any(v != 0):
                    failures.append("init bias " + name)
            elif v.size >= 4096:
                exp = np.sqrt(2.0 / (v.shape[0] * v.shape[2] * v.shape[3])) if v.ndim == 4 else 0.01
                worst_std = max(worst_std, abs(v.std() / exp - 1.0))
                if abs(v.mean()) > 0.05 * exp:
                    failures.append("init mean " + name)
        report("init std vs torchvision", worst_std, 0.05)

    # 2. torch weights (random biases too) -> loupe checkpoint
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.05)
        # batch norm: random scales and running statistics, so that no term is an identity
        for name, mod in model.named_modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(1.0 + 0.2 * torch.randn_like(mod.weight))
                mod.running_mean.copy_(0.2 * torch.randn_like(mod.running_mean))
                mod.running_var.copy_(0.5 + torch.rand_like(mod.running_var))
                mod.num_batches_tracked.fill_(5)
    sd = {kk: v.detach().numpy().copy() for kk, v in model.state_dict().items()}
    cmeta = {"format": "loupe-checkpoint-1", "arch": a.arch, "top": a.top, "num_classes": k, "input_size": a.size,
             "in_channels": c}
    if a.top == "none":
        cmeta["head"] = a.head
    st_write(wd("torch.safetensors"), sd, cmeta)
    x = (torch.randn(n, c, h, w) * 1.5).float()
    labels = torch.randint(0, k, (n,))
    st_write(wd("inputs.safetensors"), {"x": x.numpy(), "labels": labels.numpy().astype(np.int64)}, {})

    for opt in a.opts.split(","):
        cmd = [a.driver, "run", wd("torch.safetensors"), wd("inputs.safetensors"), wd("out-%s.safetensors" % opt), opt,
               "0.0001" if "adam" in opt else "0.01",
               str(a.steps)] + ([a.freeze] if a.freeze else [])
        env = dict(os.environ)
        if a.conv:
            env["LOUPE_PARITY_CONV"] = a.conv
        if a.bn != "auto":
            env["LOUPE_PARITY_BN"] = a.bn
        subprocess.run(cmd, check=True, env=env)
        out, _ = st_read(wd("out-%s.safetensors" % opt))
        sd_masks = [v for nm, v in out.items() if nm.startswith("mask.") and nm.split(".", 2)[2] in masks and v.shape[1] == 1]
        if sd_masks:
            # stochastic depth: the dropped path must be exercised (a block dropped for some sample), and each mask
            # value must be 0 or 1/(1-p)
            dropped = sum(int((v == 0).sum()) for v in sd_masks)
            print("stochastic depth masks: %d of %d sample-blocks dropped %s" % (dropped, sum(v.size for v in sd_masks),
                                                                               "ok" if dropped > 0 else "FAIL"))
            if dropped == 0:
                failures.append("stochastic depth never dropped")
        if a.conv and opt == a.opts.split(",")[0]:
            wino, convs = (int(v) for v in out["winograd_layers"])
            # Winograd from AVX2 up (the CPU's flags, lowered by the cap): oneDNN 2.6's F(4x4,3x3) on
            # AVX-512, on every 3x3 layer; loupe's F(2x2,3x3) below, on layers whose channels in
            # and out are multiples of 8 (all of VGG's but the first, on 3 colour channels)
            cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
            flags = open("/proc/cpuinfo").read()
            avx512 = " avx512f" in flags and (cap == "ALL" or cap.startswith("AVX512"))
            avx2 = " avx2" in flags and (avx512 or cap in ("ALL", "AVX2"))
            every = convs if avx512 else convs - 1
            ok = (wino == 0) if a.conv == "direct" or not avx2 else (wino > 0 if a.conv == "auto" else wino == every)
            print("conv %-8s Winograd in %d of %d conv layers %s" % (a.conv, wino, convs, "ok" if ok else "FAIL"))
            if not ok:
                failures.append("conv algorithm")
        frozen = set()
        if a.freeze:
            for name, _ in model.named_parameters():
                if a.freeze == "base":
                    hit = not name.startswith("head.") and not name.startswith("classifier.6")
                else:
                    hit = name.startswith(a.freeze) if a.freeze.endswith(".") else (name.startswith(a.freeze + ".") or name == a.freeze)
                if hit:
                    frozen.add(name)
        names = [nm for nm, _ in model.named_parameters() if nm not in frozen]  # frozen: the driver checked they did not change
        ref = torch_train(model, masks, sd, frozen, out, x, labels, opt, a.steps, a.bn)
        bn_train = any(isinstance(mod, nn.BatchNorm2d) and (a.bn == "train" or (a.bn == "auto" and nm + ".weight" not in frozen))
                       for nm, mod in model.named_modules())
        # batch norm's running statistics after the steps, as the weights; its step count exactly
        stats = [nm for nm, _ in model.named_buffers() if not nm.endswith("num_batches_tracked")]
        counts = [nm for nm, _ in model.named_buffers() if nm.endswith("num_batches_tracked")]
        # PyTorch against itself from weights 1e-7 apart: its own sensitivity in this setting
        sens_final, sens_grad, sens_g, sens_out = [], 0.0, {}, {}
        for i in range(a.sens_runs):
            alt = torch_train(model, masks, perturb(sd, i + 1), frozen, out, x, labels, opt, a.steps, a.bn)
            sens_final += [(nm, rel(alt["final." + nm], ref["final." + nm])) for nm in names + stats]
            for nm in names:
                sens_g[nm] = max(sens_g.get(nm, 0.0), rel(alt["grad." + nm], ref["grad." + nm]))
            for nm in ("logits", "loss", "loss_per_sample", "probs"):
                sens_out[nm] = max(sens_out.get(nm, 0.0), rel(alt[nm], ref[nm]))
            sens_grad = max([sens_grad] + list(sens_g.values()))
            del alt
        if opt == a.opts.split(",")[0]:
            report("eval logits", rel(out["eval_logits"], ref["eval_logits"]), 1e-4)
            # the training forward: with batch norm on the batch's statistics it is as ill-conditioned as the
            # gradients below (deep nets at batch 2), so PyTorch's own sensitivity, times K_SENS, when larger
            def tol_out(nm):
                return max(1e-4, K_SENS * sens_out.get(nm, 0.0)) if bn_train else 1e-4
            for what, nm in (("train logits", "logits"), ("loss", "loss"), ("loss per sample", "loss_per_sample"),
                             ("probs", "probs")):
                report(what, rel(out[nm], ref[nm]), tol_out(nm),
                       "; torch sensitivity %.2e" % sens_out[nm] if bn_train and nm in sens_out else "")
            for nm in frozen:
                if ("grad." + nm) in out:
                    failures.append("frozen parameter has a gradient: " + nm)
            if not bn_train:
                wname = max(names, key=lambda nm: rel(out["grad." + nm], ref["grad." + nm]))
                # the sensitivity only informs: a first-step gradient that jumps with it is a flipped decision
                report("grads (worst: %s)" % wname, rel(out["grad." + wname], ref["grad." + wname]), GRAD_TOL,
                       "; torch sensitivity %.2e" % sens_grad)
            else:
                # batch norm on the batch's statistics: the gradient goes through (x - mean) / sqrt(var + eps) of few
                # values (batch 2 on 2x2 maps: 8 a channel), where cancellation makes it ill-conditioned; PyTorch
                # itself moves by more than GRAD_TOL from a 1e-7 nudge, so each tensor gets its own sensitivity
                report_steps("grads, BN on batch statistics", [(nm, rel(out["grad." + nm], ref["grad." + nm]) if
                             rel(out["grad." + nm], ref["grad." + nm]) > GRAD_TOL else 0.0) for nm in names],
                             [(nm, v) for nm, v in sens_g.items()])
        report_steps("weights after %d %s steps" % (a.steps, opt),
                     [(nm, rel(out["final." + nm], ref["final." + nm])) for nm in names], sens_final)
        if stats:
            report_steps("BN running stats after %d %s steps" % (a.steps, opt),
                         [(nm, rel(out["final." + nm], ref["final." + nm])) for nm in stats], sens_final)
            bad = [nm for nm in counts if float(out["final." + nm].reshape(-1)[0]) != float(ref["final." + nm])]
            print("BN num_batches_tracked after %d steps: %d of %d as torch's %s" % (a.steps, len(counts) - len(bad), len(counts),
                                                                                   "ok" if not bad else "FAIL"))
            if bad:
                failures.append("num_batches_tracked")
    if a.optim_check:
        optim_check(a, wd, sd, model, report)
    for f in os.listdir(a.workdir):
        if f.startswith(tag + "."):
            os.remove(os.path.join(a.workdir, f))
    print("time %.1f s" % (time.time() - T0))
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    print("parity ok:", tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
