"""ResNet's graph ops against PyTorch 1.13, forward and backward, at each CPU level.

  maxpool  lp_maxpool_init_padded vs torch.nn.functional.max_pool2d (3x3 stride 2 pad 1,
           ResNet's stem, on 112x112 and on odd maps down to 1x1; 2x2 stride 2 with and
           without padding, where only the unpadded one may run loupe's own kernel)
  add      lp_residual_add vs a + b (then ReLU), gradients of a and b (both must equal dx)
  gap      lp_global_avgpool vs adaptive_avg_pool2d(x, 1).flatten(1)

Each case runs graph_ops_harness on inputs drawn here, once under each CPU level this
machine has (ONEDNN_MAX_CPU_ISA=AVX2, AVX512_CORE, and uncapped), and compares with PyTorch
in float64 on the very same float32 inputs. Where the caller sets ONEDNN_MAX_CPU_ISA, only
under that cap.

Tolerances, from the arithmetic (u = 2^-24, float32's unit roundoff):
  maxpool y:   exact. Max pooling only selects; the inputs are distinct values (a shuffled
               ramp k * 2^-20, exact in float32), so every window has one maximum and
               no tie can make a different but valid choice.
  maxpool dx:  each input's gradient is a float32 sum of the dy of the m windows where it
               is the maximum, m <= ceil(k/s)^2; in any order within (m-1) u sum|dy_j|
               (to first order; bound used: m u sum|dy_j|, sum|dy_j| from PyTorch's backward
               of |dy|). Exact for non-overlapping windows.
  add y:       one correctly rounded addition: u |a + b|; the ReLU is exact. Inputs are
               normal, so no result is subnormal.
  add dx:      exact: dy or 0, and the mask y > 0 agrees with the exact a + b > 0 because
               rounding to nearest keeps a nonzero sum's sign.
  gap y:       a float32 sum of n = h*w terms in any order, within (n-1) u sum|x|, then a
               division (or multiplication by a rounded 1/n): 2u more of |y|. Bound used:
               (n + 2) u mean|x|.
  gap dx:      dy / n, or dy times a rounded 1/n: 2u |dx|; exact for n = 1.
The float64 reference's own error is ~2^-53 of the same sums, far below. The same bounds
are applied to PyTorch's own float32 ops on the same inputs; if those fail them, the
bounds (not loupe) are wrong and the test says so.

Ties in max pooling (the `ties` cases, inputs drawn from {0, 1, 2} so that most windows
hold several maxima): PyTorch's CPU kernel routes the gradient to the first maximum in
window order (row by row); oneDNN 2.6 did the same in every kernel these cases ran (jit
avx2 and avx512_core, ref, on nChw8c, nChw16c, nhwc), and the cases assert that dx agrees
exactly, so a kernel that breaks ties otherwise shows here.

Also checked, without running anything (graph_ops_harness --impls): no oneDNN reference
("ref:") kernel for any of the three ops at ResNet's shapes (batch 2 and 16 at 224x224:
maxpool on 64x112x112, adds on 256x56x56, 512x28x28, 1024x14x14, 2048x7x7, global
pooling on 2048x7x7) at any level, on the layouts the convolutions hand over there (nhwc,
and the level's block: nChw8c at AVX2, nChw16c above). nChw16c capped at AVX2 is oneDNN's
reference pooling and is only listed.

    test_graph_ops.py --harness build/tests/engine/graph_ops_harness --workdir DIR [--only SUBSTR]

Exits 1 when a check fails, 0 when all pass.
"""
import argparse
import math
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from op_checks import compare, cpu_flags, cpu_levels, read  # noqa: E402
import torch.nn.functional as F

U = 2.0 ** -24


def MP(name, n, c, h, w, layout, k=3, s=2, p=1, ties=False):
    return dict(op="maxpool", name=name, n=n, c=c, h=h, w=w, layout=layout, k=k, s=s, p=p, ties=ties)


def ADD(name, n, c, h, w, layout, relu, inplace=""):
    return dict(op="add", name=name, n=n, c=c, h=h, w=w, layout=layout, relu=relu, inplace=inplace)


def GAP(name, n, c, h, w, layout):
    return dict(op="gap", name=name, n=n, c=c, h=h, w=w, layout=layout)


CASES = [
    MP("maxpool_stem_16c", 2, 64, 112, 112, "nChw16c"),
    MP("maxpool_stem_8c", 1, 64, 112, 112, "nChw8c"),
    MP("maxpool_stem_nhwc", 1, 64, 112, 112, "nhwc"),
    MP("maxpool_7x7_8c", 2, 16, 7, 7, "nChw8c"),
    MP("maxpool_5x6_nhwc", 3, 8, 5, 6, "nhwc"),
    MP("maxpool_5x6_nchw", 2, 3, 5, 6, "nchw"),
    MP("maxpool_6x5_16c", 2, 32, 6, 5, "nChw16c"),
    MP("maxpool_1x1_16c", 2, 16, 1, 1, "nChw16c"),  # the window is padding but for the centre
    MP("maxpool_2x2_16c", 2, 32, 2, 2, "nChw16c"),
    MP("maxpool_k2s2_nopad_16c", 2, 32, 8, 8, "nChw16c", k=2, s=2, p=0),  # loupe's own kernel at AVX-512
    MP("maxpool_k2s2_pad1_16c", 2, 32, 7, 7, "nChw16c", k=2, s=2, p=1),  # padded: oneDNN's
    MP("maxpool_ties_16c", 2, 32, 13, 11, "nChw16c", ties=True),
    MP("maxpool_ties_8c", 2, 16, 9, 9, "nChw8c", ties=True),
    MP("maxpool_ties_nhwc", 2, 24, 8, 7, "nhwc", ties=True),
    ADD("add_8c", 2, 64, 14, 14, "nChw8c", False),
    ADD("add_8c_relu", 2, 64, 14, 14, "nChw8c", True),
    ADD("add_16c", 2, 64, 14, 14, "nChw16c", False),
    ADD("add_16c_relu", 2, 64, 14, 14, "nChw16c", True),
    ADD("add_nhwc", 2, 48, 9, 7, "nhwc", False),
    ADD("add_nhwc_relu", 2, 48, 9, 7, "nhwc", True),
    ADD("add_nchw_relu", 3, 5, 6, 7, "nchw", True),
    ADD("add_16c_padded_relu", 2, 24, 5, 5, "nChw16c", True),  # 24 channels in blocks of 16
    ADD("add_resnet_relu_16c", 2, 256, 56, 56, "nChw16c", True),
    ADD("add_inplace_relu_16c", 2, 128, 28, 28, "nChw16c", True, inplace="a"),  # y over a, dx over dy
    ADD("add_inplace_8c", 2, 64, 7, 7, "nChw8c", False, inplace="a"),
    ADD("add_inplace_b_relu_nhwc", 2, 32, 7, 7, "nhwc", True, inplace="b"),  # y over b
    GAP("gap_7x7_512_16c", 2, 512, 7, 7, "nChw16c"),
    GAP("gap_7x7_512_8c", 2, 512, 7, 7, "nChw8c"),
    GAP("gap_7x7_512_nhwc", 2, 512, 7, 7, "nhwc"),
    GAP("gap_7x7_2048_16c", 2, 2048, 7, 7, "nChw16c"),
    GAP("gap_1x1_16c", 2, 64, 1, 1, "nChw16c"),
    GAP("gap_1x1_nhwc", 3, 40, 1, 1, "nhwc"),
    GAP("gap_5x3_nchw", 2, 10, 5, 3, "nchw"),
]

# ResNet at 224x224: (op, c, h, w, options) per batch, for the no-reference-kernel check
RESNET_SHAPES = [("maxpool", 64, 112, 112, ["--kernel", "3", "--stride", "2", "--pad", "1"])]
for c, hw in ((256, 56), (512, 28), (1024, 14), (2048, 7)):
    RESNET_SHAPES += [("add", c, hw, hw, ["--relu"]), ("add", c, hw, hw, [])]
RESNET_SHAPES += [("gap", 2048, 7, 7, [])]


def levels():
    """ONEDNN_MAX_CPU_ISA values to run under: each level this CPU has, and uncapped; only
    the caller's cap where it sets one (what a smaller CPU runs)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        return [os.environ["ONEDNN_MAX_CPU_ISA"]]
    return cpu_levels()


def onednn_block(isa):
    """The channel block of oneDNN's convolutions under cap isa ("": uncapped): 16 from
    AVX-512 on, 8 at AVX2, None below."""
    flags = cpu_flags()
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags and (not isa or not isa.upper().startswith(("AVX2", "SSE")))
    if avx512:
        return 16
    return 8 if {"avx2", "fma"} <= flags and not (isa and isa.upper().startswith("SSE")) else None


def out_hw(case):
    if case["op"] == "maxpool":
        k, s, p = case["k"], case["s"], case["p"]
        return (case["h"] + 2 * p - k) // s + 1, (case["w"] + 2 * p - k) // s + 1
    if case["op"] == "gap":
        return None
    return case["h"], case["w"]


def make_inputs(case, rng):
    n, c, h, w = case["n"], case["c"], case["h"], case["w"]
    shape = (n, c, h, w)
    count = n * c * h * w
    d = {}
    if case["op"] == "maxpool":
        if case["ties"]:
            d["x"] = rng.integers(0, 3, shape).astype(np.float64)
        else:
            assert count < 2 ** 24  # k * 2^-20 exact in float32
            d["x"] = ((rng.permutation(count) - count // 2) * 2.0 ** -20).reshape(shape)
        oh, ow = out_hw(case)
        d["dy"] = rng.standard_normal((n, c, oh, ow))
    elif case["op"] == "add":
        d["a"] = rng.standard_normal(shape)
        d["b"] = rng.standard_normal(shape)
        d["dy"] = rng.standard_normal(shape)
    else:
        d["x"] = rng.uniform(-1, 1, (1, c, 1, 1)) + rng.standard_normal(shape)
        d["dy"] = rng.standard_normal((n, c))
    return {k: v.astype(np.float32) for k, v in d.items()}


def reference(case, inp, dtype):
    """y and the input gradients in dtype (add: dx from a, and b's as dx_b)."""
    t = {k: torch.from_numpy(v).to(dtype) for k, v in inp.items()}
    if case["op"] == "maxpool":
        x = t["x"].requires_grad_(True)
        y = F.max_pool2d(x, case["k"], case["s"], case["p"])
        y.backward(t["dy"])
        return dict(y=y.detach(), dx=x.grad)
    if case["op"] == "add":
        a, b = t["a"].requires_grad_(True), t["b"].requires_grad_(True)
        y = a + b
        if case["relu"]:
            y = torch.relu(y)
        y.backward(t["dy"])
        return dict(y=y.detach(), dx=a.grad, dx_b=b.grad)
    x = t["x"].requires_grad_(True)
    y = F.adaptive_avg_pool2d(x, 1).flatten(1)
    y.backward(t["dy"])
    return dict(y=y.detach(), dx=x.grad)


def bounds(case, inp, ref):
    """Per-element bounds of a float32 implementation's error (module docstring)."""
    if case["op"] == "maxpool":
        k, s, p = case["k"], case["s"], case["p"]
        x = torch.from_numpy(inp["x"]).double().requires_grad_(True)
        F.max_pool2d(x, k, s, p).backward(torch.from_numpy(np.abs(inp["dy"])).double())
        m = math.ceil(k / s) ** 2
        return dict(y=torch.zeros_like(ref["y"]), dx=(m * U * x.grad) if m > 1 else torch.zeros_like(ref["dx"]))
    if case["op"] == "add":
        return dict(y=U * ref["y"].abs(), dx=torch.zeros_like(ref["dx"]))
    n = case["h"] * case["w"]
    mean_abs = torch.from_numpy(np.abs(inp["x"])).double().mean(dim=(2, 3))
    dx = 2 * U * ref["dx"].abs() if n > 1 else torch.zeros_like(ref["dx"])
    return dict(y=(n + 2) * U * mean_abs, dx=dx)


def check(label, res, ref, bnd, case, failures):
    ok = compare(f"{label} y", res["y"], ref["y"], bnd["y"], failures)
    ok &= compare(f"{label} dx", res["dx"], ref["dx"], bnd["dx"], failures)
    if "dx_b" in ref:  # one gradient serves both branches
        ok &= compare(f"{label} dx vs b's gradient", res["dx"], ref["dx_b"], bnd["dx"], failures)
    return ok


def options(case):
    if case["op"] == "maxpool":
        return ["--kernel", str(case["k"]), "--stride", str(case["s"]), "--pad", str(case["p"])]
    if case["op"] == "add":
        return (["--relu"] if case["relu"] else []) + ({"": [], "a": ["--inplace"], "b": ["--inplace-b"]}[case["inplace"]])
    return []


def isa_env(isa):
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def run_harness(harness, case, indir, outdir, isa):
    os.makedirs(outdir, exist_ok=True)
    cmd = [harness, case["op"], outdir, indir, *map(str, (case["n"], case["c"], case["h"], case["w"])), case["layout"],
           *options(case)]
    r = subprocess.run(cmd, env=isa_env(isa), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"graph_ops_harness failed ({r.returncode}): {r.stderr.strip()}")
    return dict(line.split(" ", 1) for line in open(os.path.join(outdir, "info.txt")).read().splitlines())


def harness_result(case, outdir):
    n, c, h, w = case["n"], case["c"], case["h"], case["w"]
    ohw = out_hw(case)
    yshape = (n, c) if ohw is None else (n, c, *ohw)
    return dict(y=read(outdir, "y", yshape), dx=read(outdir, "dx", (n, c, h, w)))


def torch_f32_result(case, inp):
    r = reference(case, inp, torch.float32)
    return {k: v.double().numpy() for k, v in r.items() if k in ("y", "dx")}


def kernel_expectation(case, info, failures, label):
    """Which kernel the case must run: loupe's 2x2 only unpadded, where loupe's level
    (the harness's lp_cpu_isa: generic in the portable build) is AVX-512 or above."""
    if case["op"] != "maxpool":
        return True
    own = info["fwd"].startswith("loupe:")
    may_own = case["k"] == 2 and case["s"] == 2 and case["p"] == 0 and case["c"] % 16 == 0 and \
        case["layout"] in ("nChw16c", "nhwc")
    want_own = may_own and info["level"] in ("AVX-512", "AVX512-BF16", "AMX")
    if own != want_own:
        failures.append(f"{label}: ran {info['fwd']}, expected {'loupe' if want_own else 'oneDNN'}'s kernel")
        return False
    return True


def handed_over(layout, isa):
    """The layouts convolutions give a following op under cap isa."""
    block = onednn_block(isa)
    return layout == "nhwc" or (block is not None and layout == f"nChw{block}c")


def check_no_ref(harness, lv, failures):
    for isa in lv:
        for batch in (2, 16):
            for op, c, h, w, opts in RESNET_SHAPES:
                for layout in ("nhwc", "nChw8c", "nChw16c"):
                    cmd = [harness, "--impls", op, str(batch), str(c), str(h), str(w), layout, *opts]
                    r = subprocess.run(cmd, env=isa_env(isa), capture_output=True, text=True)
                    label = f"resnet {op} {' '.join(opts)} {batch}x{c}x{h}x{w} {layout} [{isa or 'native'}]"
                    line = r.stdout.strip()
                    if r.returncode != 0:
                        failures.append(f"{label}: {line} {r.stderr.strip()}")
                        continue
                    if "ref:" in line:
                        if handed_over(layout, isa):
                            failures.append(f"{label}: oneDNN's reference kernel ({line})")
                            print(f"FAIL {label}: {line}")
                        elif batch == 2:
                            print(f"note {label}: {line} (a layout the convolutions do not hand over here)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--harness", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    failures = []
    rng = np.random.default_rng(20261206)
    lv = levels()
    for case in CASES:
        inp = make_inputs(case, rng)  # drawn for every case, so --only does not change inputs
        if args.only not in case["name"]:
            continue
        indir = os.path.join(args.workdir, case["name"], "in")
        os.makedirs(indir, exist_ok=True)
        for name, a in inp.items():
            a.tofile(os.path.join(indir, name + ".f32"))
        ref = {k: v.numpy() for k, v in reference(case, inp, torch.float64).items()}
        bnd = {k: v.numpy() for k, v in bounds(case, inp, {k: torch.from_numpy(v) for k, v in ref.items()}).items()}
        if not check(f"{case['name']} [torch float32]", torch_f32_result(case, inp), ref, bnd, case, failures):
            failures.append(f"{case['name']}: PyTorch float32 itself exceeds the bounds: the tolerance model is wrong")
        for isa in lv:
            label = f"{case['name']} [{isa or 'native'}]"
            outdir = os.path.join(args.workdir, case["name"], isa or "native")
            try:
                info = run_harness(args.harness, case, indir, outdir, isa)
                res = harness_result(case, outdir)
            except RuntimeError as e:
                failures.append(f"{label}: {e}")
                print(f"FAIL {label}: {e}")
                continue
            ok = check(label, res, ref, bnd, case, failures)
            ok &= kernel_expectation(case, info, failures, label)
            print(f"{'ok  ' if ok else 'FAIL'} {label}: fwd {info['fwd']}, bwd {info['bwd']}, layout {info['layout']}")
    if not args.only:
        check_no_ref(args.harness, lv, failures)
    for f in failures:
        print("  " + f)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
