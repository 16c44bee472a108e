"""lp_conv2d against PyTorch on the convolutions of ResNet-50, MobileNetV2 and EfficientNet-B0.

Each shape runs through conv_harness (forward, backward data, backward weights and bias)
and is compared with torch.nn.functional.conv2d in float64 (F.pad first for per-side
padding) and its autograd, on the very inputs the op saw (the harness writes them back,
rounded to bf16 where the op ran in bf16).

Tolerance, per element, from the arithmetic: an output is a sum of R products (forward:
R = c/groups*kh*kw, plus the bias; backward data: at most k/groups*kh*kw; backward
weights: n*oh*ow; bias: n*oh*ow). Summed in float32 in any order (oneDNN's blocking,
threads and tree reductions included), each product rounded once (or exact: fma, or
bf16 x bf16), the result differs from the exact sum by at most (R + 2) * 2^-24 times the
sum of the terms' magnitudes (Higham, Accuracy and Stability, 3.1 and 4.2, to first
order); that sum is the same convolution run on |x|, |w|, |dy|. A result stored in bf16
(y and dx with --bf16) adds its rounding to nearest, at most 2^-8 of its magnitude (bf16
keeps 8 significant bits). A floor of R * 2^-126
allows for flushed denormals. The float64 reference's own error is ~2^-53 of the same
sums, far below. With a fused ReLU, the mask the harness applied to dy before backward is
checked against the reference wherever the reference's pre-activation is further from 0
than its bound.

Winograd shapes (wino=True: the caller asks for Winograd, as nn does where it pays) run
loupe's F(2x2,3x3) under an AVX2 cap, and must (conv_wino_avx2.c). Its outputs are not
plain sums of products: each is A^T[(G w G^T) . (B^T x B)]A, whose transforms add and
subtract terms that cancel. The same analysis bounds its error by (R + 12) * 2^-24 times
that very computation with every matrix and every input replaced by its absolute value
(wino_abs below, in float64): R bounds the products summed (c, k, or the tiles), 12 the
rounding steps of the transforms (2 for the input's, 4 for the weights', 4 for the
output's, 2 for the gradient's). Elsewhere (AVX-512: oneDNN's own F(4x4,3x3), whose
transforms are not ours to bound here) these shapes are skipped.

    test_conv_shapes.py --harness build/tests/engine/conv_harness --workdir DIR [--only SUBSTR]

Exits 1 when a comparison fails, 0 when all pass.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

U32 = 2.0 ** -24
BF16_ROUND = 2.0 ** -8
DENORMAL = 2.0 ** -126


def S(name, n, c, h, w, k, kh, kw=None, s=1, pad=0, groups=1, bias=False, relu=False, src="any", bf16=False, feed=False,
      wino=False):
    """A shape: pad is one number (all sides) or (top, bottom, left, right)."""
    kw = kh if kw is None else kw
    sh, sw = (s, s) if isinstance(s, int) else s
    pt, pb, pl, pr = (pad,) * 4 if isinstance(pad, int) else pad
    return dict(name=name, n=n, c=c, h=h, w=w, k=k, kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pb=pb, pl=pl, pr=pr,
                groups=groups, bias=bias, relu=relu, src=src, bf16=bf16, feed=feed, wino=wino)


SHAPES = [
    # ResNet-50 (torchvision: no conv bias), maps shrunk to keep it fast
    S("resnet_stem_7x7_s2_p3", 2, 3, 32, 32, 64, 7, s=2, pad=3),
    S("resnet_stem_7x7_s2_p3_b1_odd", 1, 3, 15, 15, 16, 7, s=2, pad=3),
    S("resnet_1x1_s1", 4, 64, 8, 8, 256, 1),
    S("resnet_1x1_s1_project", 1, 256, 7, 7, 64, 1, relu=True),
    S("resnet_1x1_s2_downsample", 1, 256, 15, 15, 512, 1, s=2),
    S("resnet_1x1_s2_downsample_b4", 4, 64, 8, 8, 128, 1, s=2),
    S("resnet_3x3_s2_p1", 2, 64, 15, 15, 64, 3, s=2, pad=1),
    S("resnet_3x3_s2_p1_b4_even", 4, 32, 8, 8, 48, 3, s=2, pad=1, relu=True),
    S("resnet_3x3_s1_p1_nobias", 4, 64, 7, 7, 64, 3, pad=1),
    # Keras ResNet50 v1: conv biases, stride on the first 1x1
    S("keras_resnet_1x1_s2_bias", 2, 64, 15, 15, 128, 1, s=2, bias=True, relu=True),
    # MobileNetV2 / EfficientNet-B0: depthwise (groups = channels), 1x1 expand/project
    S("dw_3x3_s1_c32", 4, 32, 16, 16, 32, 3, pad=1, groups=32),
    S("dw_3x3_s1_c32_relu_bias", 1, 32, 7, 7, 32, 3, pad=1, groups=32, bias=True, relu=True),
    S("dw_3x3_s2_c96_odd", 1, 96, 15, 15, 96, 3, s=2, pad=1, groups=96),
    S("dw_3x3_s2_c144", 4, 144, 8, 8, 144, 3, s=2, pad=1, groups=144),
    S("dw_5x5_s1_c144", 2, 144, 7, 7, 144, 5, pad=2, groups=144),
    S("dw_5x5_s2_c144_odd", 1, 144, 15, 15, 144, 5, s=2, pad=2, groups=144),
    S("dw_5x5_s2_c40_b4", 4, 40, 16, 16, 40, 5, s=2, pad=2, groups=40),
    S("mbv2_1x1_expand", 4, 24, 8, 8, 144, 1),
    S("mbv2_1x1_project", 2, 144, 7, 7, 24, 1),
    S("effnet_se_reduce_1x1_bias", 4, 96, 1, 1, 4, 1, bias=True),
    S("effnet_se_expand_1x1_bias", 4, 4, 1, 1, 96, 1, bias=True),
    # TensorFlow "same" at stride 2: more padding after than before
    S("tf_same_dw_3x3_s2_0101", 2, 32, 16, 16, 32, 3, s=2, pad=(0, 1, 0, 1), groups=32),
    S("tf_same_dw_5x5_s2_1212", 1, 48, 16, 16, 48, 5, s=2, pad=(1, 2, 1, 2), groups=48),
    S("tf_same_3x3_s2_0101", 4, 16, 14, 14, 32, 3, s=2, pad=(0, 1, 0, 1), bias=True),
    S("tf_same_7x7_s2_2323", 1, 3, 32, 32, 16, 7, s=2, pad=(2, 3, 2, 3), bias=True),
    # every side different, rectangular map and kernel, stride differing per axis
    S("asym_all_sides_rect", 2, 8, 15, 12, 12, 3, kw=5, s=(2, 1), pad=(0, 1, 2, 3), bias=True),
    # general groups, and a channel multiplier of 2
    S("groups4_3x3", 2, 32, 9, 9, 64, 3, pad=1, groups=4, bias=True, relu=True),
    S("groups16_mult2", 2, 16, 15, 15, 32, 3, s=2, pad=(0, 1, 0, 1), groups=16),
    # the layouts the caller may have (nn passes its own for every layer but the first)
    S("dw_3x3_s2_nchw", 2, 32, 15, 15, 32, 3, s=2, pad=1, groups=32, src="nchw"),
    S("dw_3x3_s1_nhwc", 2, 32, 8, 8, 32, 3, pad=1, groups=32, src="nhwc"),
    S("dw_5x5_s2_nhwc_tf", 1, 40, 16, 16, 40, 5, s=2, pad=(1, 2, 1, 2), groups=40, src="nhwc"),
    S("resnet_1x1_s2_nhwc", 2, 64, 8, 8, 128, 1, s=2, src="nhwc"),
    S("resnet_7x7_s2_nchw", 1, 3, 32, 32, 16, 7, s=2, pad=3, src="nchw"),
    # inputs from PyTorch through files rather than the harness's generator
    S("fed_dw_3x3_s2_0101", 2, 24, 11, 11, 24, 3, s=2, pad=(0, 1, 0, 1), groups=24, bias=True, feed=True),
    # VGG's shape (loupe's kernels may run) next to the same without bias or with groups:
    # 2x2 maps, pixel-vector layouts (the small-map kernels' conditions)
    S("vgg_3x3_2x2_nhwc", 2, 32, 2, 2, 32, 3, pad=1, bias=True, src="nhwc"),
    S("vgg_3x3_2x2_nhwc_nobias", 2, 32, 2, 2, 32, 3, pad=1, src="nhwc"),
    S("vgg_3x3_2x2_nhwc_groups2", 2, 32, 2, 2, 32, 3, pad=1, groups=2, bias=True, src="nhwc"),
    S("vgg_3x3_2x2_nhwc_pad0112", 2, 32, 2, 2, 32, 3, pad=(1, 1, 1, 2), bias=True, src="nhwc"),
    # bf16 (only where the CPU has it natively, as the rest of loupe)
    S("bf16_dw_3x3_s2", 2, 32, 15, 15, 32, 3, s=2, pad=1, groups=32, bf16=True),
    S("bf16_dw_5x5_s1_tf", 1, 64, 9, 9, 64, 5, pad=(2, 2, 2, 2), groups=64, bf16=True),
    S("bf16_7x7_s2_p3", 2, 3, 32, 32, 32, 7, s=2, pad=3, bf16=True),
    S("bf16_1x1_s2", 2, 64, 8, 8, 64, 1, s=2, bf16=True),
    S("bf16_vgg_3x3_2x2_nhwc", 2, 32, 2, 2, 32, 3, pad=1, bias=True, src="nhwc", bf16=True),
    S("bf16_vgg_3x3_2x2_nhwc_nobias", 2, 32, 2, 2, 32, 3, pad=1, src="nhwc", bf16=True),
    S("bf16_vgg_3x3_2x2_nhwc_groups2", 2, 32, 2, 2, 32, 3, pad=1, groups=2, bias=True, src="nhwc", bf16=True),
    S("bf16_3x3_s1_nhwc_pad1112", 1, 32, 6, 6, 32, 3, pad=(1, 1, 1, 2), bias=True, src="nhwc", bf16=True),
    # Winograd F(2x2,3x3) (loupe's, at AVX2): even and odd maps, 1x1 and 2x2 maps, channel
    # counts that are multiples of 8 only, nhwc input, and maps large enough that the
    # tiles go through in several chunks (4 MB of transformed tiles at a time)
    S("wino_3x3_8x8_b4_relu", 4, 16, 8, 8, 32, 3, pad=1, bias=True, relu=True, wino=True),
    S("wino_3x3_odd_7x5", 2, 8, 7, 5, 16, 3, pad=1, bias=True, wino=True),
    S("wino_3x3_1x1_map", 3, 24, 1, 1, 8, 3, pad=1, bias=True, wino=True),
    S("wino_3x3_2x2_b32_c64", 32, 64, 2, 2, 64, 3, pad=1, bias=True, relu=True, wino=True),
    S("wino_3x3_2x2_b2_c512", 2, 512, 2, 2, 512, 3, pad=1, bias=True, wino=True),
    S("wino_3x3_c72_k40", 2, 72, 6, 6, 40, 3, pad=1, bias=True, wino=True),
    S("wino_3x3_nhwc_6x9", 2, 16, 6, 9, 16, 3, pad=1, bias=True, src="nhwc", wino=True),
    S("wino_3x3_chunks_66x66", 2, 16, 66, 66, 16, 3, pad=1, bias=True, wino=True),
    S("wino_3x3_chunks_70x70_c8", 4, 8, 70, 70, 8, 3, pad=1, bias=True, relu=True, wino=True),
]

WINO_OURS = "loupe:avx2_wino_2x2_3x3"
WINO_ROUNDINGS = 12  # the transforms' rounding steps (module docstring)
# F(2x2,3x3) (Lavin & Gray 2016), as conv_wino_avx2.c computes it
WB_T = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
WG = torch.tensor([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=torch.float64)
WA_T = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)


def wino_tiles(t, h, w):
    """(n, c, h, w) -> (n, c, th, tw, 4, 4): the 4x4 input tile of every 2x2 output tile, zero outside."""
    th, tw = (h + 1) // 2, (w + 1) // 2
    p = F.pad(t, (1, 2 * tw + 1 - w, 1, 2 * th + 1 - h))
    return p.unfold(2, 4, 2).unfold(3, 4, 2)


def wino_abs(x, w, dy, h, wd):
    """|A^T|[(|G||w||G^T|) . (|B^T||x||B|)]|A| and its two gradients' counterparts, on |x|,
    |w|, |dy|: the magnitudes the rounding error of each output of y, dx and dw scales with."""
    bt, g, at = WB_T.abs(), WG.abs(), WA_T.abs()
    x, w, dy = x.abs(), w.abs(), dy.abs()
    th, tw = (h + 1) // 2, (wd + 1) // 2
    u = torch.einsum("ai,koij,bj->koab", g, w, g)  # (k, c, 4, 4)
    v = torch.einsum("ai,ncyxij,bj->ncyxab", bt, wino_tiles(x, h, wd), bt)  # (n, c, th, tw, 4, 4)
    m = torch.einsum("koab,noyxab->nkyxab", u, v)
    y = torch.einsum("pa,nkyxab,qb->nkypxq", at, m, at).reshape(x.shape[0], -1, 2 * th, 2 * tw)[:, :, :h, :wd]
    # backward data: the forward of dy with the weights turned and transposed
    ub = torch.einsum("ai,okij,bj->okab", g, w.flip(2, 3), g)  # (c, k, 4, 4) after the transpose below
    vb = torch.einsum("ai,nkyxij,bj->nkyxab", bt, wino_tiles(dy, h, wd), bt)
    mb = torch.einsum("okab,nkyxab->noyxab", ub.transpose(0, 1), vb)
    dx = torch.einsum("pa,noyxab,qb->noypxq", at, mb, at).reshape(x.shape[0], -1, 2 * th, 2 * tw)[:, :, :h, :wd]
    # backward weights: G^T (sum over tiles of V . (A dy A^T)) G
    dyp = F.pad(dy, (0, 2 * tw - wd, 0, 2 * th - h)).unfold(2, 2, 2).unfold(3, 2, 2)  # (n, k, th, tw, 2, 2)
    dm = torch.einsum("ap,nkyxpq,bq->nkyxab", at.t(), dyp, at.t())
    du = torch.einsum("ncyxab,nkyxab->kcab", v, dm)
    dw = torch.einsum("ai,kcab,bj->kcij", g, du, g)
    return y, dx, dw


def vgg_like(s):
    """The shape loupe's kernels are written for: 3x3, stride 1, pad 1, groups 1; with a bias
    in bf16, with or without one in fp32 (ResNet's convolutions have none)."""
    return (s["kh"], s["kw"], s["sh"], s["sw"], s["groups"]) == (3, 3, 1, 1, 1) and (s["bias"] or not s["bf16"]) and \
        (s["pt"], s["pb"], s["pl"], s["pr"]) == (1, 1, 1, 1)


def depthwise_large(s):
    """The shape conv_bwd_w_dw.c is written for: groups = channels (in and out), kernels over
    3x3 up to 7x7, fp32 or bf16 (AVX-512), any stride and padding (backward weights only)."""
    return s["groups"] > 1 and s["groups"] == s["c"] == s["k"] and max(s["kh"], s["kw"]) <= 7 and (s["kh"], s["kw"]) != (3, 3)


def out_size(s):
    oh = (s["h"] + s["pt"] + s["pb"] - s["kh"]) // s["sh"] + 1
    ow = (s["w"] + s["pl"] + s["pr"] - s["kw"]) // s["sw"] + 1
    return oh, ow


def conv64(s, x, w, b):
    xp = F.pad(x, (s["pl"], s["pr"], s["pt"], s["pb"]))
    return F.conv2d(xp, w, b, stride=(s["sh"], s["sw"]), groups=s["groups"])


def bf16_native(harness, workdir):
    """Whether the harness's CPU level (as ONEDNN_MAX_CPU_ISA caps it) has native bf16."""
    r = subprocess.run([harness, "--cpu-level"], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.split()[-1] == "1"


def run_shape(harness, workdir, s, seed):
    d = os.path.join(workdir, s["name"])
    os.makedirs(d, exist_ok=True)
    oh, ow = out_size(s)
    args = [harness, d] + [str(s[f]) for f in ("n", "c", "h", "w", "k", "kh", "kw", "sh", "sw", "pt", "pb", "pl", "pr",
                                                "groups")] + [str(int(s["bias"])), str(int(s["relu"])), "--src", s["src"]]
    if s["bf16"]:
        args.append("--bf16")
    if s["wino"]:
        args.append("--winograd")
    g = torch.Generator().manual_seed(seed)
    if s["feed"]:
        shapes = dict(x=(s["n"], s["c"], s["h"], s["w"]), w=(s["k"], s["c"] // s["groups"], s["kh"], s["kw"]),
                      b=(s["k"],), dy=(s["n"], s["k"], oh, ow))
        for name, shp in shapes.items():
            (torch.rand(shp, generator=g, dtype=torch.float32) * 2 - 1).numpy().tofile(os.path.join(d, name + ".in.f32"))
        fed = os.path.join(d, "fed")
        os.makedirs(fed, exist_ok=True)
        for name in shapes:
            os.replace(os.path.join(d, name + ".in.f32"), os.path.join(fed, name + ".f32"))
        args += ["--in", fed]
    else:
        args += ["--seed", str(seed)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        return None, "harness failed (%d): %s" % (r.returncode, r.stderr.strip())
    info = dict(line.split(" ", 1) for line in open(os.path.join(d, "info.txt")).read().splitlines())
    if s["wino"]:
        ours = [info[p] == WINO_OURS for p in ("fwd", "bwd_data", "bwd_weights")]
        if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2" and not all(ours):
            return info, "asked for Winograd under the AVX2 cap, ran %s %s %s, not %s" % (
                info["fwd"], info["bwd_data"], info["bwd_weights"], WINO_OURS)
        if not all(ours):
            info["skip"] = "not loupe's Winograd here (%s)" % info["fwd"]
            return info, ""
    if (int(info["oh"]), int(info["ow"])) != (oh, ow):
        return info, "output size %sx%s, PyTorch's %dx%d" % (info["oh"], info["ow"], oh, ow)

    def load(name, shape):
        a = np.fromfile(os.path.join(d, name + ".f32"), dtype=np.float32)
        if a.size != int(np.prod(shape)):
            raise ValueError("%s: %d values, expected %s" % (name, a.size, shape))
        return torch.from_numpy(a.reshape(shape)).double()

    n, c, k, gr = s["n"], s["c"], s["k"], s["groups"]
    x = load("x", (n, c, s["h"], s["w"]))
    w = load("w", (k, c // gr, s["kh"], s["kw"]))
    b = load("b", (k,))
    dy = load("dy", (n, k, oh, ow))
    got = {name: load(name, shp) for name, shp in
           dict(y=(n, k, oh, ow), mask=(n, k, oh, ow), dx=x.shape, dw=w.shape, db=(k,)).items()}
    if s["feed"]:
        for name, t in dict(x=x, w=w, b=b).items():
            fed_t = torch.from_numpy(np.fromfile(os.path.join(d, "fed", name + ".f32"), dtype=np.float32)).double()
            if not s["bias"] and name == "b":
                continue
            if not torch.equal(fed_t.reshape(t.shape), t):
                return info, "the harness did not use the inputs given to it (%s)" % name
    bias = b if s["bias"] else None

    # reference and the sums of magnitudes, both in float64
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    br = b.clone().requires_grad_() if s["bias"] else None
    pre = conv64(s, xr, wr, br)
    xa, wa = x.abs().requires_grad_(), w.abs().requires_grad_()
    pre_abs = conv64(s, xa, wa, b.abs() if s["bias"] else None)
    r_fwd = c // gr * s["kh"] * s["kw"] + (1 if s["bias"] else 0)
    if s["wino"]:  # the magnitudes of the Winograd computation itself (module docstring)
        mag_y, mag_dx, mag_dw = wino_abs(x, w, dy, s["h"], s["w"])
        mag_y = mag_y + (b.abs().view(1, -1, 1, 1) if s["bias"] else 0)
        extra = WINO_ROUNDINGS
    else:
        mag_y, extra = pre_abs.detach(), 2
    bound_y = (r_fwd + extra) * U32 * mag_y + r_fwd * DENORMAL
    if s["bf16"]:
        bound_y = bound_y + BF16_ROUND * (pre.detach().abs() + bound_y)
    failures = []
    if s["relu"]:
        sure = (pre.detach().abs() > bound_y)
        want_mask = (pre.detach() > 0).double()
        if not torch.equal(got["mask"][sure], want_mask[sure]):
            failures.append("ReLU mask differs where the sign is certain")
        y_ref = pre.detach().clamp(min=0)
    else:
        if not torch.all(got["mask"] == 1):
            failures.append("mask without relu")
        y_ref = pre.detach()
    # the harness multiplied dy by its mask already (dy as written is what backward saw)
    pre.backward(dy)
    pre_abs.backward(dy.abs())
    r_dx = k // gr * s["kh"] * s["kw"]
    r_dw = n * oh * ow
    if not s["wino"]:
        mag_dx, mag_dw = xa.grad, wa.grad
    elif not (torch.all(mag_y >= pre_abs.detach() * (1 - 1e-9)) and torch.all(mag_dx >= xa.grad * (1 - 1e-9)) and
              torch.all(mag_dw >= wa.grad * (1 - 1e-9))):
        # every product of the direct sums appears in the absolute Winograd computation
        failures.append("the Winograd magnitudes do not cover the direct ones (wino_abs is wrong)")
    bounds = dict(y=bound_y,
                  dx=(r_dx + extra) * U32 * mag_dx + r_dx * DENORMAL,
                  dw=(r_dw + extra) * U32 * mag_dw + r_dw * DENORMAL,
                  db=(r_dw + 2) * U32 * dy.abs().sum(dim=(0, 2, 3)) + r_dw * DENORMAL)
    if s["bf16"]:
        bounds["dx"] = bounds["dx"] + BF16_ROUND * (xr.grad.abs() + bounds["dx"])
    refs = dict(y=y_ref, dx=xr.grad, dw=wr.grad, db=br.grad if s["bias"] else torch.zeros(k, dtype=torch.float64))
    worst = {}
    for name in ("y", "dx", "dw", "db"):
        err = (got[name] - refs[name]).abs()
        ratio = (err / bounds[name].clamp(min=1e-300)).max().item() if err.numel() else 0.0
        worst[name] = ratio
        if not torch.all(err <= bounds[name]) or not torch.isfinite(got[name]).all():
            i = int(torch.argmax(err - bounds[name]))
            failures.append("%s: |error| %.3g > bound %.3g at flat index %d (loupe %.9g, PyTorch %.9g)" % (
                name, err.flatten()[i], bounds[name].flatten()[i], i, got[name].flatten()[i], refs[name].flatten()[i]))
    if not vgg_like(s):
        for p in ("fwd", "bwd_data", "bwd_weights"):
            if info[p].startswith("loupe:") and not (p == "bwd_weights" and info[p].endswith("_dw") and depthwise_large(s)):
                failures.append("%s ran loupe's kernel %s on a shape it was not written for" % (p, info[p]))
    info["worst"] = worst
    return info, "; ".join(failures)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--harness", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--only", default="")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    torch.set_num_threads(1)
    native = bf16_native(a.harness, a.workdir)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    failed, refs, ran, skipped = [], [], 0, 0
    for i, s in enumerate(SHAPES):
        if a.only and a.only not in s["name"]:
            continue
        if s["bf16"] and not native:
            print("skip %-34s (no native bf16 at this CPU level)" % s["name"])
            continue
        info, err = run_shape(a.harness, a.workdir, s, a.seed + i)
        if info is not None and "skip" in info:
            print("skip %-34s (%s)" % (s["name"], info["skip"]))
            skipped += 1
            continue
        ran += 1
        kern = "" if info is None else " ".join("%s=%s" % (p, info[p]) for p in ("fwd", "bwd_data", "bwd_weights"))
        worst = "" if info is None or "worst" not in info else \
            " worst/bound " + " ".join("%s %.2f" % kv for kv in info["worst"].items())
        print("%-4s %-34s %s%s" % ("FAIL" if err else "ok", s["name"], kern, worst))
        if err:
            print("     " + err)
            failed.append(s["name"])
        if info is not None:
            refs += ["%s %s: %s" % (s["name"], p, info[p]) for p in ("fwd", "bwd_data", "bwd_weights")
                     if info[p].startswith("ref")]
    print("\nCPU level cap: %s; oneDNN reference kernels: %d" % (isa, len(refs)))
    for r in refs:
        print("  " + r)
    if not ran:
        print("every shape matching --only %r was skipped" % a.only if skipped else "no shape matched --only %r" % a.only)
        return 0 if skipped else 1
    print("%d of %d shapes failed: %s" % (len(failed), ran, " ".join(failed)) if failed else "all %d shapes pass" % ran)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
