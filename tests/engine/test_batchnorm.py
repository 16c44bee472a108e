"""lp_batchnorm against torch.nn.BatchNorm2d (eps 1e-5, momentum 0.1), in train() and eval().

Each case runs bn_harness for 3 steps (forward, backward, and in train mode the running
statistics update) on inputs drawn here, under each CPU level this machine has
(ONEDNN_MAX_CPU_ISA=AVX2, AVX512_CORE, and uncapped), with the kernel lp_batchnorm picks and
with loupe's fused kernel asked for (--fused: where it takes the layout), and compares with BatchNorm2d in
float64 on the very same float32 inputs: y, dx, dgamma, dbeta at every step, the batch
mean and biased variance (train), running_mean, running_var and num_batches_tracked after
the last step. With relu, the reference is BatchNorm2d then ReLU (or ReLU6: clamp to
[0, 6], whose gradient passes where 0 < z < 6, as PyTorch's hardtanh; or SiLU,
torch.nn.functional.silu). Inputs: per-channel
offsets in [-1, 1] and scales in [0.05, 2] (small-variance channels show eps), gamma of
both signs, running_var in [0.05, 2].

Tolerances, from the arithmetic. E = 2^-23 (float32 machine epsilon). A float32 sum of n
terms a_i, in any order, is within lam * sqrt(n) * (E/2) * sum|a_i| of the exact one with
probability at least 1 - 2n exp(-lam^2/2) (Higham and Mary, "A new approach to
probabilistic rounding error analysis", 2019, thm. 2.4 to first order); lam = 8 makes a
false failure impossible in practice, so s = 4 sqrt(n) E per reduction over n = N*H*W
values. Per channel then:
  mean:    dmu = s * mean|x|
  var:     dv = 3 s * mean(x^2)   (two-pass, or E[x^2] - mu^2: both within this)
  1/sigma: rho = dv / (2 (var + eps)) + 2E relative
  xhat_i:  dxh_i = dmu/sigma + rho |xhat_i| + 2E (|x_i| + |mu|)/sigma  (covers oneDNN's
           folding into x*(gamma/sigma) + (beta - mu*gamma/sigma))
  y_i:     |gamma| dxh_i + 2E (|gamma xhat_i| + |beta|)
  dbeta:   s sum|dy|;  dgamma: s sum|dy xhat| + sum |dy_i| dxh_i
  dx_i:    |gamma|/sigma (ddbeta/n + |xhat_i| ddgamma/n + dxh_i |dgamma|/n) + rho |dx_i|
           + 4E |gamma|/sigma (|dy_i| + |dbeta|/n + |xhat_i dgamma|/n)
In eval the statistics are given: dmu = dv = 0 and rho = 2E; dx_i = dy_i gamma/sigma is
within 4E of its magnitude. Running statistics: each step adds (1-m) of the previous
bound, m dmu (m n/(n-1) dv for the variance) and 3E of the value. With a fused ReLU,
elements whose reference pre-activation is within its bound of 0 (or 6) have an uncertain mask:
their dx is not compared and their |dy| terms are added to the dgamma and dbeta bounds.
With SiLU (|silu'| <= 1.1, |silu''| <= 0.5; s = sigmoid(z) within 4E relative from an exp
within 2 ulp, one add and one division): y_i gains 1.1 times z's bound plus 8E |y_i|; the
gradient through it g_i = dy_i silu'(z_i) an error of |dy_i| (0.5 dz_i + 8E (1 + |z_i|)) +
2E |g_i|, which enters dbeta, dgamma and dx as g's own error.
bf16 (the cases marked so; run where the CPU has bf16 natively, uncapped, as loupe's bf16
nets): x and dy are drawn as bf16 values, so the op reads them exactly; the pre-activation
z is rounded to bf16 (8 significant bits, to nearest: within 2^-8 of its value, relative)
before the activation, as in PyTorch's bf16 batch norm: z's bound gains 2^-8 (|z| + its
bound), which also widens the band of uncertain ReLU6 masks near 6. y (with SiLU), SiLU's
gradient g and dx are rounded to bf16 too: each gains 2^-8 (|ref| + its bound).
A floor of n * 2^-126 allows for flushed denormals. The float64 reference's own error is
~2^-53 of the same sums, far below.

The same bounds are applied to PyTorch's own float32 BatchNorm2d on the same inputs; if
it fails them, the bounds (not loupe) are wrong and the test says so.

Also checked: no oneDNN reference kernel ("ref:") at any level on the layouts the
convolutions hand over (the op's default, nhwc, and the level's block: nChw8c at AVX2,
nChw16c above); nChw16c capped at AVX2 is oneDNN's reference kernel and only listed.

    test_batchnorm.py --harness build/tests/engine/bn_harness --workdir DIR [--only SUBSTR]

Exits 1 when a comparison fails, 0 when all pass.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from op_checks import compare, cpu_flags, cpu_levels, read  # noqa: E402

E = 2.0 ** -23
LAM_E = 4 * E  # lam * (E/2) with lam = 8
DENORMAL = 2.0 ** -126
MOMENTUM = 0.1
STEPS = 3


def C(name, n, c, h, w, mode, relu=False, layout="default", eps=None, bf16=False):
    return dict(name=name, n=n, c=c, h=h, w=w, mode=mode, relu=relu, layout=layout, eps=eps, bf16=bf16)


BF16_HALF_ULP = 2.0 ** -8  # bf16 keeps 8 significant bits: round to nearest is within 2^-8, relative


CASES = [
    # training (batch statistics)
    C("train_resnet_like", 4, 64, 14, 14, "train"),
    C("train_relu", 4, 64, 14, 14, "train", relu=True),
    C("train_nhwc_relu", 2, 32, 9, 7, "train", relu=True, layout="nhwc"),
    C("train_nchw", 3, 16, 5, 6, "train", layout="nchw"),
    C("train_8c", 2, 24, 6, 6, "train", relu=True, layout="nChw8c"),
    C("train_16c", 2, 32, 6, 6, "train", layout="nChw16c"),
    C("train_large", 8, 128, 28, 28, "train", relu=True),
    C("train_small_nhw8", 2, 16, 2, 2, "train"),          # n = 8: Bessel's correction is 1/7
    C("train_small_nhw2_relu", 2, 16, 1, 1, "train", relu=True),  # n = 2, the fewest
    C("train_n1", 1, 32, 3, 3, "train", relu=True),        # batch 1: statistics over h*w
    C("train_keras_eps", 2, 32, 7, 7, "train", eps=1.001e-5),
    C("train_wide_4x4", 4, 1280, 4, 4, "train"),             # MobileNetV2's last layer at 128x128
    C("train_wide_4x4_8c", 4, 960, 4, 4, "train", layout="nChw8c"),
    # eval (running statistics given; backward through gamma, beta and x only)
    C("frozen", 4, 64, 14, 14, "frozen"),
    C("frozen_relu", 4, 64, 14, 14, "frozen", relu=True),
    C("frozen_n1", 1, 64, 7, 7, "frozen"),
    C("frozen_n1_relu_1x1", 1, 32, 1, 1, "frozen", relu=True),
    C("frozen_nhwc_relu", 2, 48, 5, 5, "frozen", relu=True, layout="nhwc"),
    C("frozen_8c", 2, 16, 4, 4, "frozen", layout="nChw8c"),
    # ReLU6 (MobileNetV2), gamma three times larger so that z passes 6 too: loupe's fused
    # kernel on the layouts the convolutions hand over, oneDNN's batch norm then its clip on
    # the others (nchw, nhwc of 12 channels)
    C("train_relu6", 4, 96, 14, 14, "train", relu=6),
    C("train_relu6_8c", 2, 24, 7, 7, "train", relu=6, layout="nChw8c"),
    C("train_relu6_nhwc", 2, 32, 9, 7, "train", relu=6, layout="nhwc"),
    C("train_relu6_nchw", 3, 16, 5, 6, "train", relu=6, layout="nchw"),
    C("train_relu6_nhwc12", 2, 12, 5, 5, "train", relu=6, layout="nhwc"),
    C("frozen_relu6", 4, 64, 14, 14, "frozen", relu=6),
    C("frozen_relu6_nchw", 2, 16, 6, 6, "frozen", relu=6, layout="nchw"),
    # SiLU (EfficientNet): loupe's fused kernel where it takes the layout, else oneDNN's batch
    # norm, its output kept for the eltwise SiLU after it
    C("train_silu", 4, 96, 14, 14, "train", relu="silu"),
    C("train_silu_8c", 2, 24, 7, 7, "train", relu="silu", layout="nChw8c"),
    C("train_silu_nhwc", 2, 32, 9, 7, "train", relu="silu", layout="nhwc"),
    C("train_silu_nchw", 3, 16, 5, 6, "train", relu="silu", layout="nchw"),
    C("train_silu_wide_7x7", 2, 1152, 7, 7, "train", relu="silu"),
    C("frozen_silu", 4, 64, 14, 14, "frozen", relu="silu"),
    C("frozen_silu_nchw", 2, 16, 6, 6, "frozen", relu="silu", layout="nchw"),
    # bf16 data (bf16 nets), on the layout bf16 convolutions hand over (nChw16c) and nhwc
    C("bf16_train", 4, 64, 14, 14, "train", bf16=True),
    C("bf16_train_relu6", 4, 96, 14, 14, "train", relu=6, bf16=True),
    C("bf16_train_silu", 4, 96, 14, 14, "train", relu="silu", bf16=True),
    C("bf16_train_silu_nhwc", 2, 48, 9, 7, "train", relu="silu", layout="nhwc", bf16=True),
    C("bf16_train_silu_wide_7x7", 2, 1152, 7, 7, "train", relu="silu", bf16=True),
    C("bf16_frozen_relu6", 4, 64, 14, 14, "frozen", relu=6, bf16=True),
    C("bf16_frozen_silu", 4, 64, 14, 14, "frozen", relu="silu", bf16=True),
]


def bf16_native():
    """The CPU computes in bf16 natively (loupe refuses bf16 nets elsewhere)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def to_bf16_values(a):
    """a rounded to the nearest bf16 values (as float32)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16).to(torch.float32).numpy()


def levels():
    """ONEDNN_MAX_CPU_ISA values to run under: each level this CPU has, and uncapped."""
    return cpu_levels()


def make_inputs(case, rng):
    n, c, h, w = case["n"], case["c"], case["h"], case["w"]
    off = rng.uniform(-1, 1, c)
    scale = np.exp(rng.uniform(np.log(0.05), np.log(2.0), c))
    d = {}
    for k in range(STEPS):
        d[f"x{k}"] = (off[None, :, None, None] + scale[None, :, None, None] * rng.standard_normal((n, c, h, w)))
        d[f"dy{k}"] = rng.standard_normal((n, c, h, w))
    d["gamma"] = rng.uniform(0.3, 1.5, c) * rng.choice([-1.0, 1.0], c) * (3.0 if case["relu"] == 6 else 1.0)
    d["beta"] = rng.uniform(-0.5, 0.5, c)
    d["running_mean"] = rng.uniform(-1, 1, c)
    d["running_var"] = np.exp(rng.uniform(np.log(0.05), np.log(2.0), c))
    out = {k: v.astype(np.float32) for k, v in d.items()}
    if case["bf16"]:
        for k in range(STEPS):
            out[f"x{k}"], out[f"dy{k}"] = to_bf16_values(out[f"x{k}"]), to_bf16_values(out[f"dy{k}"])
    return out


def run_harness(harness, case, indir, outdir, isa, fused):
    os.makedirs(outdir, exist_ok=True)
    cmd = [harness, outdir, *map(str, (case["n"], case["c"], case["h"], case["w"])), case["mode"],
           str(case["relu"]) if case["relu"] == "silu" else str(int(case["relu"])), str(STEPS), "--in", indir, "--layout", case["layout"]] + (["--fused"] if fused else [])
    if case["eps"] is not None:
        cmd += ["--eps", repr(case["eps"])]
    if case["bf16"]:
        cmd += ["--bf16"]
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bn_harness failed ({r.returncode}): {r.stderr.strip()}")
    info = dict(line.split(" ", 1) for line in open(os.path.join(outdir, "info.txt")).read().splitlines())
    return info


def reference(case, inp, dtype):
    """BatchNorm2d (+ ReLU) over the steps in dtype: per step y, dx, dgamma, dbeta, the
    pre-activation and the batch statistics; then the running statistics."""
    eps = case["eps"] if case["eps"] is not None else 1e-5
    bn = torch.nn.BatchNorm2d(case["c"], eps=eps, momentum=MOMENTUM).to(dtype)
    with torch.no_grad():
        for name, t in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                        ("running_var", "running_var")):
            getattr(bn, name).copy_(torch.from_numpy(inp[t]))
    bn.train(case["mode"] == "train")
    steps = []
    for k in range(STEPS):
        x = torch.from_numpy(inp[f"x{k}"]).to(dtype).requires_grad_(True)
        bn.weight.grad = bn.bias.grad = None
        pre = bn(x)
        if case["relu"] == "silu":
            y = torch.nn.functional.silu(pre)
        else:
            y = torch.clamp(pre, 0.0, 6.0) if case["relu"] == 6 else torch.relu(pre) if case["relu"] else pre
        y.backward(torch.from_numpy(inp[f"dy{k}"]).to(dtype))
        xd = inp[f"x{k}"].astype(np.float64)
        steps.append(dict(y=y.detach().double().numpy(), pre=pre.detach().double().numpy(),
                          dx=x.grad.double().numpy(), dgamma=bn.weight.grad.double().numpy(),
                          dbeta=bn.bias.grad.double().numpy(), mean=xd.mean(axis=(0, 2, 3)),
                          var=xd.var(axis=(0, 2, 3))))
    return steps, bn.running_mean.double().numpy(), bn.running_var.double().numpy(), int(bn.num_batches_tracked)


def bounds(case, inp, ref):
    """Per-tensor bounds of a float32 implementation's error (module docstring)."""
    n_, c, h, w = case["n"], case["c"], case["h"], case["w"]
    n = n_ * h * w
    eps = case["eps"] if case["eps"] is not None else 1e-5
    s = LAM_E * np.sqrt(n)
    floor = n * DENORMAL
    chan = lambda v: v[None, :, None, None]
    g = inp["gamma"].astype(np.float64)
    beta = inp["beta"].astype(np.float64)
    train = case["mode"] == "train"
    rm = inp["running_mean"].astype(np.float64)
    rv = inp["running_var"].astype(np.float64)
    drm = np.zeros(c)
    drv = np.zeros(c)
    out = []
    for k, r in enumerate(ref):
        x = inp[f"x{k}"].astype(np.float64)
        dy = inp[f"dy{k}"].astype(np.float64)
        if train:
            mu, var = r["mean"], r["var"]
            dmu = s * np.abs(x).mean(axis=(0, 2, 3))
            dv = 3 * s * (x * x).mean(axis=(0, 2, 3))
            rho = dv / (2 * (var + eps)) + 2 * E
        else:
            mu, var = rm, rv
            dmu = dv = np.zeros(c)
            rho = np.full(c, 2 * E)
        sigma = np.sqrt(var + eps)
        xhat = (x - chan(mu)) / chan(sigma)
        dxh = chan(dmu / sigma) + chan(rho) * np.abs(xhat) + 2 * E * (np.abs(x) + chan(np.abs(mu))) / chan(sigma)
        dy_pre = np.abs(chan(g)) * dxh + 2 * E * (np.abs(chan(g) * xhat) + chan(np.abs(beta))) + floor
        bf16 = case["bf16"]
        if bf16:
            dy_pre = dy_pre + BF16_HALF_ULP * (np.abs(r["pre"]) + dy_pre)
        silu = case["relu"] == "silu"
        dg = np.zeros(x.shape)
        dy_out = dy_pre
        if silu:
            z = r["pre"]
            sg = 1 / (1 + np.exp(-z))
            g_silu = dy * sg * (1 + z * (1 - sg))
            dg = np.abs(dy) * (0.5 * dy_pre + 8 * E * (1 + np.abs(z))) + 2 * E * np.abs(g_silu)
            dy_out = 1.1 * dy_pre + 8 * E * np.abs(r["y"]) + floor
            if bf16:
                dy_out = dy_out + BF16_HALF_ULP * (np.abs(r["y"]) + dy_out)
                dg = dg + BF16_HALF_ULP * (np.abs(g_silu) + dg)
            unsure = np.zeros(x.shape, bool)
            mask = np.ones(x.shape, bool)
        elif case["relu"]:
            unsure = np.abs(r["pre"]) <= dy_pre
            mask = (r["pre"] > 0) & ~unsure
            if case["relu"] == 6:
                unsure |= np.abs(r["pre"] - 6.0) <= dy_pre
                mask &= (r["pre"] < 6.0) & ~unsure
        else:
            unsure = np.zeros(x.shape, bool)
            mask = np.ones(x.shape, bool)
        gm = g_silu if silu else np.where(mask, dy, 0.0)
        ady_unsure = np.where(unsure, np.abs(dy), 0.0)
        ddbeta = s * np.abs(gm).sum(axis=(0, 2, 3)) + (ady_unsure + dg).sum(axis=(0, 2, 3)) + floor
        ddgamma = (s * np.abs(gm * xhat).sum(axis=(0, 2, 3)) + (np.abs(gm) * dxh).sum(axis=(0, 2, 3))
                   + ((ady_unsure + dg) * np.abs(xhat)).sum(axis=(0, 2, 3)) + floor)
        gs = np.abs(chan(g / sigma))
        if train:
            dgam, dbet = r["dgamma"], r["dbeta"]
            ddx = (gs * (dg + chan(ddbeta / n) + np.abs(xhat) * chan(ddgamma / n) + dxh * chan(np.abs(dgam) / n))
                   + chan(rho) * np.abs(r["dx"])
                   + 4 * E * gs * (np.abs(gm) + chan(np.abs(dbet) / n) + np.abs(xhat * chan(dgam)) / n) + floor)
        else:
            ddx = gs * dg + 4 * E * np.abs(r["dx"]) + floor
        if bf16:
            ddx = ddx + BF16_HALF_ULP * (np.abs(r["dx"]) + ddx)
        out.append(dict(y=dy_out, dx=np.where(unsure, np.inf, ddx), dgamma=ddgamma, dbeta=ddbeta, mean=dmu + floor,
                        var=dv + floor, unsure=int(unsure.sum())))
        if train:
            rm = (1 - MOMENTUM) * rm + MOMENTUM * mu
            rv = (1 - MOMENTUM) * rv + MOMENTUM * var * n / (n - 1)
            drm = (1 - MOMENTUM) * drm + MOMENTUM * dmu + 3 * E * np.abs(rm)
            drv = (1 - MOMENTUM) * drv + MOMENTUM * n / (n - 1) * dv + 3 * E * np.abs(rv)
    return out, drm + floor, drv + floor


def check(label, res, ref, refrun, bnd, case, failures):
    """res: per-step tensors and the final running statistics of the implementation."""
    steps_b, drm, drv = bnd
    ok = True
    for k in range(STEPS):
        for t in ("y", "dx", "dgamma", "dbeta") + (("mean", "var") if case["mode"] == "train" else ()):
            ok &= compare(f"{label} step {k} {t}", res["steps"][k][t], ref[k][t], steps_b[k][t], failures)
    ok &= compare(f"{label} running_mean", res["running_mean"], refrun[0], drm, failures)
    ok &= compare(f"{label} running_var", res["running_var"], refrun[1], drv, failures)
    if res["num_batches_tracked"] != refrun[2]:
        failures.append(f"{label}: num_batches_tracked {res['num_batches_tracked']}, want {refrun[2]}")
        ok = False
    return ok


def harness_result(case, outdir, info):
    n, c, h, w = case["n"], case["c"], case["h"], case["w"]
    steps = []
    for k in range(STEPS):
        st = {t: read(outdir, f"{t}{k}", (n, c, h, w)) for t in ("y", "dx")}
        st.update({t: read(outdir, f"{t}{k}", (c,)) for t in ("dgamma", "dbeta")})
        if case["mode"] == "train":
            st.update({t: read(outdir, f"{t}{k}", (c,)) for t in ("mean", "var")})
        steps.append(st)
    return dict(steps=steps, running_mean=read(outdir, "running_mean_out", (c,)),
                running_var=read(outdir, "running_var_out", (c,)), num_batches_tracked=int(info["num_batches_tracked"]))


def torch_f32_result(case, inp):
    steps, rm, rv, nbt = reference(case, inp, torch.float32)
    return dict(steps=steps, running_mean=rm, running_var=rv, num_batches_tracked=nbt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--harness", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    failures = []
    rng = np.random.default_rng(20240524)
    lv = levels()
    for case in CASES:
        inp = make_inputs(case, rng)  # drawn for every case, so --only does not change inputs
        if args.only not in case["name"]:
            continue
        indir = os.path.join(args.workdir, case["name"], "in")
        os.makedirs(indir, exist_ok=True)
        for name, a in inp.items():
            a.tofile(os.path.join(indir, name + ".f32"))
        ref = reference(case, inp, torch.float64)
        bnd = bounds(case, inp, ref[0])
        unsure = sum(b["unsure"] for b in bnd[0])
        # the bounds must admit PyTorch's own float32 arithmetic
        if not check(f"{case['name']} [torch float32]", torch_f32_result(case, inp), ref[0], ref[1:], bnd, case, failures):
            failures.append(f"{case['name']}: PyTorch float32 itself exceeds the bounds: the tolerance model is wrong")
        runs = [(i, f) for i in lv for f in (False, True)]
        if case["bf16"]:
            if not bf16_native():
                print(f"skip {case['name']}: no native bf16 on this CPU (loupe refuses bf16 nets here)")
                continue
            runs = [("", False)]  # uncapped (a cap below AVX512-BF16 refuses bf16); --fused takes fp32 only
        for isa, fused in runs:
            label = f"{case['name']} [{isa or 'native'}{' fused' if fused else ''}]"
            outdir = os.path.join(args.workdir, case["name"], (isa or "native") + ("_fused" if fused else ""))
            try:
                info = run_harness(args.harness, case, indir, outdir, isa, fused)
            except RuntimeError as e:
                failures.append(f"{label}: {e}")
                print(f"FAIL {label}: {e}")
                continue
            kernels = f"fwd {info['fwd']}, bwd {info['bwd']}, layout {info['layout']}"
            ok = check(label, harness_result(case, outdir, info), ref[0], ref[1:], bnd, case, failures)
            uses_ref = "ref:" in info["fwd"] or "ref:" in info["bwd"]
            handed_over = case["layout"] in ("default", "nhwc") or (case["layout"] == "nChw8c" and isa == "AVX2") or \
                (case["layout"] == "nChw16c" and isa != "AVX2")
            if uses_ref and handed_over:
                failures.append(f"{label}: oneDNN's reference kernel on a layout the convolutions hand over ({kernels})")
                ok = False
            note = f", {unsure} uncertain ReLU masks skipped" if unsure else ""
            print(f"{'ok  ' if ok else 'FAIL'} {label}: {kernels}{note}")
    for f in failures:
        print("  " + f)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
