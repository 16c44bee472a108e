#!/usr/bin/python3
"""No oneDNN reference kernel on the training path, at any ISA level.

oneDNN falls back to its `ref:` implementations (scalar C++, 10-100x slower) where no
optimized kernel takes a shape or layout, silently. For each ISA cap (AVX2,
AVX512_CORE and the CPU's own level) this runs one training step of VGG16 (top none
and keep, 32x32 and 224x224, batch 2; bf16 too where the CPU has native bf16), and of
resnet18 at 64x64 (bf16 too where native) and resnet50 at 224x224 (top keep, batch 2, batch
norm in training mode), and mobilenet_v2 and efficientnet_b0 at 64x64 (depthwise 3x3 and 5x5
convolutions at strides 1 and 2, SiLU, sigmoid), with ONEDNN_VERBOSE=1 and fails on any `ref:` convolution,
pooling, matmul, inner product, batch normalization, binary (the residual adds) or
eltwise op. It also checks that loupe's own kernels obey the cap: `loupe bench` prints
the ISA level they run at, which must be the lower of the cap and the CPU's level.
usage: test_no_ref_kernels.py LOUPE
"""
import os, subprocess, sys

LEVELS = ["AVX2", "AVX-512", "AVX512-BF16", "AMX"]  # loupe's names, in order
CAPS = {"AVX2": "AVX2", "AVX512_CORE": "AVX-512"}  # ONEDNN_MAX_CPU_ISA -> loupe's level
COMPUTE = ("convolution", "pooling", "pooling_v2", "matmul", "inner_product", "batch_normalization", "binary", "eltwise")


def bench(loupe, cap, top, size, precision, model="vgg16"):
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    cmd = [loupe, "bench", "--model", model, "--top", top, "--head", "flatten,dense:2", "--size", size, "--batch", "2",
           "--steps", "1", "--warmup", "0", "--precision", precision] + (["--bn", "train"] if not model.startswith("vgg") else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("FAIL: %s (cap %s) exited %d:\n%s" % (" ".join(cmd), cap, r.returncode, r.stdout[-2000:] + r.stderr[-2000:]))
    level = next((l.split()[1] for l in r.stdout.splitlines() if l.startswith("CPU: ")), None)
    refs = {}
    for line in r.stdout.splitlines():
        f = line.split(",")
        if len(f) > 5 and f[0] == "onednn_verbose" and f[1] == "exec" and f[3] in COMPUTE and f[4].startswith("ref"):
            key = "%s %s %s" % (f[3], f[5], f[-2])
            refs[key] = refs.get(key, 0) + 1
    return level, refs


def main():
    loupe = sys.argv[1]
    native, _ = bench(loupe, None, "none", "32x32", "fp32")
    if native not in LEVELS:
        print("CPU below AVX2 (%s): no caps to check" % native)
        native_rank = -1
    else:
        native_rank = LEVELS.index(native)
    failures = 0
    for cap in ["AVX2", "AVX512_CORE", None]:
        if cap and native_rank < LEVELS.index(CAPS[cap]) and cap != "AVX2":
            continue  # a cap above the CPU is the CPU itself: run once, natively
        want = native if cap is None else LEVELS[min(LEVELS.index(CAPS[cap]), native_rank)] if native_rank >= 0 else native
        precisions = ["fp32"] + (["bf16"] if LEVELS.index(want) >= LEVELS.index("AVX512-BF16") else [])
        runs = [("vgg16", precision, top, size) for precision in precisions for top in ["none", "keep"] for size in ["32x32", "224x224"]]
        runs += [("resnet18", precision, "keep", "64x64") for precision in precisions] + [("resnet50", "fp32", "keep", "224x224")]
        runs += [("mobilenet_v2", "fp32", "keep", "64x64"), ("efficientnet_b0", "fp32", "keep", "64x64")]
        for model, precision, top, size in runs:
            level, refs = bench(loupe, cap, top, size, precision, model)
            ok = level == want and not refs
            print("%-11s %s %s top=%s %s: loupe at %s%s, %s %s" % (
                cap or "native", model, precision, top, size, level, "" if level == want else " (want %s)" % want,
                "no ref: kernel" if not refs else "ref: kernels " + "; ".join("%dx %s" % (n, k) for k, n in refs.items()),
                "ok" if ok else "FAIL"))
            failures += not ok
    print("%d failure(s)" % failures if failures else "no ref: kernel at any ISA level")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
