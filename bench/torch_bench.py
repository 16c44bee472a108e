#!/usr/bin/python3
"""PyTorch training throughput for the same configuration as `loupe bench`:
VGG16 (torchvision) top=keep (classifier with a new 2-unit output) or top=none with
a head spec (flatten/gap/dense/dropout), one synthetic batch; --optimizer sgd (momentum
0.9, the default), adam or adamw (weight decay 0.01), as `loupe bench --optimizer`.
--channels-last: NHWC tensors; --bf16: torch.autocast("cpu", bfloat16) around the
forward and loss (PyTorch's mixed precision: bf16 convolutions and matmuls, fp32
weights and update). Prints images/s, the forward/backward/update split and the
peak resident memory of the process."""
import argparse, contextlib, resource, time
import torch, torch.nn as nn, torch.nn.functional as F, torchvision

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="vgg16")
ap.add_argument("--top", default="keep")
ap.add_argument("--head", default="flatten,dense")
ap.add_argument("--size", default="224x224")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--classes", type=int, default=2)
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--channels-last", action="store_true")
ap.add_argument("--bf16", action="store_true")
ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw"))
a = ap.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
w, h = map(int, a.size.split("x"))
k = a.classes
if a.top == "keep":
    model = getattr(torchvision.models, a.model)(num_classes=k)
else:
    feats = getattr(torchvision.models, a.model)().features
    with torch.no_grad():
        c, fh, fw = feats(torch.zeros(1, 3, h, w)).shape[1:]
    mods, n = [], None
    for t in a.head.split(","):
        p = t.split(":")
        if p[0] == "flatten":
            mods.append(nn.Flatten()); n = c * fh * fw
        elif p[0] == "gap":
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]; n = c
        elif p[0] == "dropout":
            mods.append(nn.Dropout(float(p[1]) if len(p) > 1 else 0.5))
        elif p[0] == "dense":
            u = [int(q) for q in p[1:] if q.isdigit()]
            u = u[0] if u else k
            mods.append(nn.Linear(n, u)); n = u
            if "relu" in p[1:]:
                mods.append(nn.ReLU(True))
    model = nn.Sequential(feats, *mods)
x = torch.rand(a.batch, 3, h, w) * 2 - 1
y = torch.arange(a.batch) % k
if a.channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
if a.optimizer == "sgd":
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
elif a.optimizer == "adam":
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
else:
    opt = torch.optim.AdamW(model.parameters(), lr=0.001, weight_decay=0.01)
model.train()
tf = tb = tu = 0.0
for s in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    opt.zero_grad()
    with (torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()):
        loss = F.cross_entropy(model(x), y)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    if s >= a.warmup:
        tf += t1 - t0; tb += t2 - t1; tu += t3 - t2
tot = tf + tb + tu
print("images/s: %.3f" % (a.batch * a.steps / tot))
print("step: %.4f s (forward %.4f, backward %.4f, update %.4f); threads %d; loss %.4f" % (
    tot / a.steps, tf / a.steps, tb / a.steps, tu / a.steps, torch.get_num_threads(), loss.item()))
print("peak memory (RSS): %.0f MB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
