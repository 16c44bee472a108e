#!/usr/bin/python3
"""train_conv_algo: `loupe train --conv auto|direct|winograd` end to end.

VGG16 at 64x64, batch 8, every layer trained (Adam), three epochs, once with
direct convolutions and once with the default (auto: Winograd where it pays,
here the 64x64 and 32x32 layers). Winograd changes rounding only, so:
  - run.json records config.conv_algo for each run, and the log says in how many
    conv layers Winograd runs (0 with direct, 6 of 13 with auto);
  - the per-epoch training loss of the two runs agrees to 2e-3 relative, and the
    final validation accuracy to within one image;
  - a bad --conv value is refused (exit 2) and names the choices.
usage: test_conv_algo.py LOUPE WORKDIR"""
import os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_data  # noqa: E402
import runs  # noqa: E402

LOUPE, WORK = runs.workdir()
DATA = os.path.join(WORK, "data")
make_data.make(DATA, per_class=(24, 8, 8), size=64)
fail = []


def train(name, *extra):
    r = runs.train(LOUPE, DATA, os.path.join(WORK, name), "--model", "vgg16", "--top", "none", "--head", "gap,dense",
                   "--size", "64x64", "--batch", "8", "--epochs", "3", "--optimizer", "adam", "--lr", "0.0001",
                   "--seed", "3", "--tensorboard", "off", *extra)
    if r.code != 0:
        fail.append("%s: exit %d: %s" % (name, r.code, r.err.strip()[-400:]))
    return r.hist, r.meta, r.out


hd, md, outd = train("direct", "--conv", "direct")
ha, ma, outa = train("auto")
# the log says where Winograd runs. AVX-512 (oneDNN's F(4x4,3x3)), at 64x64 batch 8: the
# 64x64, 32x32 and 16x16 layers with 16+ input channels (6 of 13; 8x8 maps are 512 pixels a
# batch, under the rule's 1024). AVX2 (loupe's F(2x2,3x3)): every layer with 8k channels in
# and out and 16+ 2x2 tiles a batch; the smallest maps are 4x4 (8 x 2 x 2 = 32 tiles), so
# all but the first (3 channels): 12 of 13. (The levels as /proc/cpuinfo and the cap give
# them.)
level = runs.isa_level()
kind, auto = ("F(4x4,3x3)", 6) if level >= 2 else ("F(2x2,3x3)", 12) if level == 1 else ("none", 0)
for out, want in ((outd, "in 0 of 13 conv layers"), (outa, "in %d of 13 conv layers" % auto)):
    if "Convolutions: Winograd %s %s" % (kind, want) not in out:
        fail.append("log does not say 'Winograd %s %s':\n%s" % (kind, want, out[:900]))
for meta, want in ((md, "direct"), (ma, "auto")):
    if meta and meta.get("config", {}).get("conv_algo") != want:
        fail.append("run.json config.conv_algo is %r, not %s" % (meta.get("config", {}).get("conv_algo"), want))
if hd and ha:
    print("epoch  direct loss/val_acc   auto loss/val_acc")
    for a, b in zip(hd, ha):
        print("%5s  %.5f / %.4f   %.5f / %.4f" % (a["epoch"], float(a["loss"]), float(a["val_accuracy"]),
                                                  float(b["loss"]), float(b["val_accuracy"])))
        la, lb = float(a["loss"]), float(b["loss"])
        if abs(la - lb) > 2e-3 * abs(la):
            fail.append("epoch %s: training loss %s (direct) vs %s (auto): more than 2e-3 apart" % (a["epoch"], la, lb))
    if abs(float(hd[-1]["val_accuracy"]) - float(ha[-1]["val_accuracy"])) > 1.0 / 16 + 1e-9:
        fail.append("final val_accuracy %s (direct) vs %s (auto): more than one image apart" %
                    (hd[-1]["val_accuracy"], ha[-1]["val_accuracy"]))
p = subprocess.run([LOUPE, "train", DATA, "--run", os.path.join(WORK, "bad"), "--conv", "fft"], capture_output=True,
                   text=True)
if p.returncode != 2 or "winograd" not in p.stderr:
    fail.append("--conv fft: want exit 2 naming the choices, got %d: %s" % (p.returncode, p.stderr.strip()))

for f in fail:
    print("FAIL", f)
print("train_conv_algo:", "FAILED" if fail else "ok")
sys.exit(1 if fail else 0)
