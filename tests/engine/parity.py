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
Tolerances: 1e-4 logits/loss/probs, 1e-3 gradients, 1e-4 weights after steps (2e-3 for
Adam with its default eps 1e-8, see below), 1e-5 for optimizers alone on shared gradients.
"""
import argparse, json, os, struct, subprocess, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

DT = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8, "BF16": np.uint16}


def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in hdr.items():
        b, end = e["data_offsets"]
        a = np.frombuffer(data, dtype=DT[e["dtype"]], count=(end - b) // np.dtype(DT[e["dtype"]]).itemsize, offset=base + b)
        if e["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.reshape(e["shape"]).copy()
    return out, meta


def st_write(path, tensors, meta):
    hdr, off, blobs = {}, 0, []
    if meta:
        hdr["__metadata__"] = {k: str(v) for k, v in meta.items()}
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


class Mask(nn.Module):
    """Dropout with an externally given mask (the C side's), identity in eval."""
    def __init__(self):
        super().__init__()
        self.m = None

    def forward(self, x):
        return x * self.m if self.training else x


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


def build(arch, top, head, k, c, h, w):
    masks = {}
    if arch in ("vgg16", "vgg19"):
        if top == "keep":
            m = getattr(torchvision.models, arch)(num_classes=k)
            for i in (2, 5):
                m.classifier[i] = Mask()
                masks["classifier.%d" % i] = m.classifier[i]
            return m, masks
        feats = getattr(torchvision.models, arch)().features
        ch = 512
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


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-6)) if b.size else 0.0


T0 = time.time()


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
    ap.add_argument("--optim-check", action="store_true", help="also check optimizers alone on shared gradients")
    a = ap.parse_args()
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

    def report(what, v, tol):
        ok = v <= tol
        print("%-34s worst rel err %.2e (tol %.0e) %s" % (what, v, tol, "ok" if ok else "FAIL"))
        if not ok:
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
        env = dict(os.environ, LOUPE_PARITY_CONV=a.conv) if a.conv else None
        subprocess.run(cmd, check=True, env=env)
        out, _ = st_read(wd("out-%s.safetensors" % opt))
        if a.conv and opt == a.opts.split(",")[0]:
            wino, convs = (int(v) for v in out["winograd_layers"])
            # oneDNN 2.6 has Winograd kernels on AVX-512 only; elsewhere every layer is direct
            avx512 = " avx512f" in open("/proc/cpuinfo").read()
            ok = (wino == 0) if a.conv == "direct" or not avx512 else (wino > 0 if a.conv == "auto" else wino == convs)
            print("conv %-8s Winograd in %d of %d conv layers %s" % (a.conv, wino, convs, "ok" if ok else "FAIL"))
            if not ok:
                failures.append("conv algorithm")
        model.load_state_dict({kk: torch.from_numpy(v) for kk, v in sd.items()}, strict=True)
        frozen = set()
        if a.freeze:
            for name, p in model.named_parameters():
                if a.freeze == "base":
                    hit = not name.startswith("head.") and not name.startswith("classifier.6")
                else:
                    hit = name.startswith(a.freeze) if a.freeze.endswith(".") else (name.startswith(a.freeze + ".") or name == a.freeze)
                if hit:
                    p.requires_grad_(False)
                    frozen.add(name)
        params = [p for nm, p in model.named_parameters() if nm not in frozen]
        o = torch_opt(opt, params, 1e-4 if "adam" in opt else 0.01)
        model.eval()
        with torch.no_grad():
            ev = model(x).numpy()
        if opt == a.opts.split(",")[0]:
            report("eval logits", rel(out["eval_logits"], ev), 1e-4)
        model.train()
        for s in range(a.steps):
            for nm, mod in masks.items():
                mod.m = torch.from_numpy(out["mask.%d.%s" % (s, nm)]).reshape(n, -1)
            o.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            if s == 0 and opt == a.opts.split(",")[0]:
                report("train logits", rel(out["logits"], logits.detach().numpy()), 1e-4)
                report("loss", rel(out["loss"], [loss.item()]), 1e-4)
                report("loss per sample", rel(out["loss_per_sample"],
                                              F.cross_entropy(logits, labels, reduction="none").detach().numpy()), 1e-4)
                report("probs", rel(out["probs"], F.softmax(logits, 1).detach().numpy()), 1e-4)
                worst, wname = 0.0, ""
                for nm, p in model.named_parameters():
                    if nm in frozen:
                        if ("grad." + nm) in out:
                            failures.append("frozen parameter has a gradient: " + nm)
                        continue
                    g = out["grad." + nm]
                    r = rel(g, p.grad.numpy())
                    if r > worst:
                        worst, wname = r, nm
                report("grads (worst: %s)" % wname, worst, 1e-3)
            o.step()
        worst, wname = 0.0, ""
        for nm, p in model.named_parameters():
            if nm in frozen:  # the driver checked they did not change
                continue
            r = rel(out["final." + nm], p.detach().numpy())
            if r > worst:
                worst, wname = r, nm
        # Adam divides each gradient element by its own magnitude: with eps 1e-8, elements
        # whose gradient is ~1e-8 turn rounding-level gradient differences into steps of up
        # to lr. The VGG runs use eps 1e-6 (adam_eps6) to stay above that noise; default
        # Adam is checked exactly with shared gradients (--optim-check) and on tiny nets.
        report("weights after %d %s steps (%s)" % (a.steps, opt, wname), worst, 1e-4 if opt != "adam" else 2e-3)
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
