#!/usr/bin/python3
"""bf16 training step against PyTorch 1.13 (ctest engine_bf16_parity).

The same VGG weights and batch go through loupe's bf16 net (convolutions and pooling
in bf16 on oneDNN, dense layers too at batches over 4; fp32 master weights and loss)
and through PyTorch twice: in fp32 (the exact answer) and under
torch.autocast("cpu", bfloat16) (what PyTorch users get from mixed precision). For logits, loss, every gradient and the
weights after SGD steps we measure the relative error to PyTorch fp32,
||x - x_fp32|| / ||x_fp32||, for loupe and for PyTorch's own bf16.

Passes when loupe's error is at bf16's level: no more than 2x PyTorch bf16's error
plus 2e-3 per tensor (bf16 keeps 8 significant bits, 3.9e-3 relative rounding), every
gradient pointing the same way as fp32's (cosine > 0.8: at this depth bf16 flips ReLU
masks of near-zero activations, so conv gradients differ by ~30% in PyTorch too), and
an error above 1e-5 for the logits (the net really ran in bf16, not silently in fp32).
Exits 77 (skipped) on CPUs without native bf16, where loupe refuses bf16.

usage: bf16_parity.py --driver ENGINE_PARITY --workdir DIR"""
import argparse, os, subprocess, sys
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity import build, st_read, st_write  # noqa: E402


def relf(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def native_bf16():
    flags = open("/proc/cpuinfo").read()
    return " avx512_bf16" in flags or " amx_bf16" in flags


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--size", default="32x32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args()
    if not native_bf16():
        print("SKIP: this CPU has no native bf16 (avx512_bf16 / amx_bf16); loupe refuses bf16 here")
        return 77
    torch.manual_seed(0)
    h, w = map(int, a.size.split("x"))
    n, k = a.batch, 2
    os.makedirs(a.workdir, exist_ok=True)
    p = lambda f: os.path.join(a.workdir, "bf16." + f)
    head = "flatten,dense:64:relu,dense:2"
    model, _ = build("vgg16", "none", head, k, 3, h, w)
    with torch.no_grad():
        for name, q in model.named_parameters():
            if name.endswith(".bias"):
                q.copy_(torch.randn_like(q) * 0.05)
    sd = {kk: v.detach().numpy().copy() for kk, v in model.state_dict().items()}
    st_write(p("weights.safetensors"), sd, {"format": "loupe-checkpoint-1", "arch": "vgg16", "top": "none", "head": head,
                                            "num_classes": k, "input_size": a.size, "in_channels": 3})
    x = torch.rand(n, 3, h, w) * 2 - 1
    labels = torch.arange(n) % k
    st_write(p("inputs.safetensors"), {"x": x.numpy(), "labels": labels.numpy().astype(np.int64)}, {})
    env = dict(os.environ, LOUPE_PARITY_BF16="1")
    subprocess.run([a.driver, "run", p("weights.safetensors"), p("inputs.safetensors"), p("out.safetensors"), "sgd", "0.01",
                    str(a.steps)], check=True, env=env)
    ours, _ = st_read(p("out.safetensors"))

    def torch_run(bf16):
        model.load_state_dict({kk: torch.from_numpy(v) for kk, v in sd.items()}, strict=True)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        res = {}
        for s in range(a.steps):
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
    failures = []
    print("relative error to PyTorch fp32")
    print("%-28s %12s %12s %10s %8s" % ("tensor", "loupe bf16", "torch bf16", "limit", "cosine"))
    for key in ["logits", "loss"] + sorted(kk for kk in ref if kk.startswith("grad.")) + \
               sorted(kk for kk in ref if kk.startswith("final.")):
        e_ours, e_torch = relf(ours[key], ref[key]), relf(tbf[key], ref[key])
        limit = 2 * e_torch + 2e-3
        cos = cosine(ours[key], ref[key])
        ok = e_ours <= limit and (cos > 0.8 or not key.startswith("grad."))
        print("%-28s %12.2e %12.2e %10.2e %8.4f %s" % (key, e_ours, e_torch, limit, cos, "ok" if ok else "FAIL"))
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
