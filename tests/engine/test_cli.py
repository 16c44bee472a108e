#!/usr/bin/python3
"""CLI checks for `loupe summary` and `loupe bench` (engine-owned subcommands).
Parameter totals are compared with torchvision's own models, not with golden values."""
import re, subprocess, sys, os
import torch, torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
from runs import isa_level  # noqa: E402  (the level worked out apart from loupe, shared by the tests)

loupe, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
fail = []


def run(*args, code=0):
    p = subprocess.run([loupe, *args], capture_output=True, text=True)
    if p.returncode != code:
        fail.append("%s: exit %d (want %d): %s" % (" ".join(args), p.returncode, code, p.stderr.strip()))
    return p.stdout + p.stderr


def total(text):
    m = re.search(r"Total params: ([\d,]+)", text)
    return int(m.group(1).replace(",", "")) if m else -1


for arch in ("vgg16", "vgg19"):
    out = run("summary", "--model", arch, "--size", "224x224", "--classes", "5")
    want = sum(p.numel() for p in getattr(torchvision.models, arch)(num_classes=5).parameters())
    if total(out) != want:
        fail.append("%s top=keep total %d, torchvision %d" % (arch, total(out), want))
out = run("summary", "--model", "vgg16", "--top", "none", "--head", "flatten,dense:256:relu,dropout,dense", "--size", "64x64",
          "--freeze", "base")
want_head = 512 * 2 * 2 * 256 + 256 + 256 * 2 + 2
want_feat = sum(p.numel() for p in torchvision.models.vgg16().features.parameters())
m = re.search(r"Trainable params: ([\d,]+)", out)
if total(out) != want_head + want_feat or not m or int(m.group(1).replace(",", "")) != want_head:
    fail.append("vgg16 head summary totals:\n" + out)
if "head.1 (Linear + ReLU" not in out or not re.search(r"head.0 \(Flatten\)\s+\(2048\)", out):
    fail.append("head rows missing:\n" + out)
run("summary", "--help")
run("summary", code=2)
run("summary", "--model", "vgg16", "--size", "16x16", code=2)
run("summary", os.path.join(work, "missing.safetensors"), code=1)
out = run("bench", "--model", "tiny", "--size", "32x32", "--batch", "2", "--steps", "2", "--threads", "1")
if not re.search(r"images/s: [0-9.]+", out):
    fail.append("bench output: " + out)
run("bench", "--help")
run("bench", "--batch", "0", code=2)
run("bench", "--precision", "fp16", code=2)
run("bench", "--conv", "fft", code=2)
# --conv: the count of Winograd layers follows the choice. AVX-512 (oneDNN's F(4x4,3x3)):
# tiny's two convs have fewer than 16 input channels, which auto leaves direct; vgg16 at
# 32x32 batch 2: auto picks only features.2 (64 channels in, 32x32 map, 2048 pixels per
# batch). AVX2 (loupe's F(2x2,3x3), channels in and out multiples of 8): tiny's second conv
# (8 -> 16 at 8x8, batch 16: 256 tiles) with winograd or auto, not the first (3 channels);
# vgg16 auto: the 32x32, 16x16 and 8x8 maps (512, 128 and 32 tiles at batch 2), not the
# 4x4 and 2x2 ones (8 and 2, under 16). Below AVX2 every count is 0.
isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
isa = isa_level()
avx512 = isa >= 2
want_at = {"tiny winograd": ("2 of 2", "1 of 2"), "tiny auto": ("0 of 2", "1 of 2"), "vgg16 auto": ("1 of 13", "6 of 13")}
for model, algo in (("tiny", "direct"), ("tiny", "winograd"), ("tiny", "auto"), ("vgg16", "auto")):
    pick = want_at.get("%s %s" % (model, algo))
    want = pick[0] if pick and avx512 else pick[1] if pick and isa == 1 else "0 of %d" % (2 if model == "tiny" else 13)
    out = run("bench", "--model", model, "--top", "none", "--size", "32x32" if model == "vgg16" else "16x16", "--batch",
              "2" if model == "vgg16" else "16", "--steps", "1", "--conv", algo, "--threads", "1")
    if "Winograd in %s conv layers" % want not in out:
        fail.append("bench --model %s --conv %s: want Winograd in %s: %s" % (model, algo, want, out))
# --precision bf16: runs where bf16 is native (AVX512-BF16 or AMX at the level in force);
# elsewhere refused as a bad argument (exit 2, LP_ERR_ARG), saying why.
native = isa >= 3
print("ISA level %d (cap %s): bf16 %s" % (isa, isa_cap or "none",
                                          "native, must run" if native else "not native, must be refused"))
out = run("bench", "--model", "vgg16", "--top", "none", "--size", "32x32", "--batch", "2", "--steps", "1", "--warmup", "1",
          "--precision", "bf16", "--per-layer", code=0 if native else 2)
if not native and "no native bf16" not in out:
    fail.append("bench --precision bf16 without native bf16: the refusal does not say why: " + out)
if native:
    if ", bf16," not in out:
        fail.append("bench --precision bf16 did not say bf16: " + out)
    rows = [l for l in out.splitlines() if l.startswith("features.")]
    if len(rows) != 18 or "framework overhead:" not in out or "peak memory (RSS):" not in out or \
            "optimizer update alone" not in out:
        fail.append("bench --per-layer: want 18 feature rows, the update, overhead and peak memory lines: " + out)
    # at 32x32 batch 2 the last six conv layers update their weights inside backward (marked *)
    if sum(1 for l in rows if l.split()[4].endswith("*")) != 6:
        fail.append("bench --per-layer: want 6 layers marked as fused (*): " + out)
for f in fail:
    print("FAIL", f)
print("cli checks:", "FAILED" if fail else "ok")
sys.exit(1 if fail else 0)
