#!/usr/bin/python3
"""train_bf16: `loupe train --precision bf16|auto` end to end.

On a CPU with native bf16 (AVX512-BF16 or AMX):
  - a VGG16 run (64x64, every layer trained) in bf16 says so, records
    precision_used "bf16" in run.json, keeps every logged figure finite, lowers
    its training loss, and ends within one validation image of the same run in
    fp32 (bf16 changes rounding, not what is learned);
  - its checkpoint is fp32 and `loupe evaluate` (fp32) on the validation folder
    gives the accuracy the run logged for that epoch, within one image;
  - the frozen-base path (feature cache computed by bf16 convolutions) trains too;
  - --precision auto picks bf16 wherever bf16 is native (VGG16, 32x32 inputs too).
Without native bf16: --precision bf16 falls back to fp32 with a message, and --precision
auto trains in fp32 and says why (checked on any CPU by capping oneDNN's instruction set
with ONEDNN_MAX_CPU_ISA=AVX512_CORE).

usage: test_bf16_run.py LOUPE WORKDIR"""
import json, math, os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_data  # noqa: E402
import runs  # noqa: E402

LOUPE, WORK = runs.workdir()
DATA = os.path.join(WORK, "data")
make_data.make(DATA, per_class=(24, 8, 8), size=64)
VALID = os.path.join(DATA, "valid")
fail = []
native = runs.isa_level() >= 3  # AVX512-BF16 or AMX, under the ISA cap if one is set


def train(name, *extra, env=None):
    run = os.path.join(WORK, name)
    r = runs.train(LOUPE, DATA, run, "--model", "vgg16", "--top", "none", "--head", "gap,dense", "--batch", "8",
                   "--optimizer", "adam", "--lr", "0.0001", "--seed", "3", "--tensorboard", "off", *extra, env=env)
    if r.code != 0:
        fail.append("%s: exit %d: %s" % (name, r.code, r.err.strip()[-400:]))
    return run, r.out, r.hist, r.meta


def finite(hist):
    return all(math.isfinite(float(v)) for r in hist for k, v in r.items() if k != "epoch" and v != "")


capped = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX512_CORE")  # oneDNN without AVX512-BF16 and AMX
run, out, hist, meta = train("fallback", "--size", "32x32", "--epochs", "1", "--precision", "bf16",
                             env=None if not native else capped)
if "no native bf16" not in out or meta.get("config", {}).get("precision_used") != "fp32" or not finite(hist):
    fail.append("bf16 without native support: no fallback message, precision_used != fp32 or bad history:\n" + out)
_, outc, _, metac = train("auto_fallback", "--size", "32x32", "--epochs", "1", "--precision", "auto",
                         env=None if not native else capped)
if metac.get("config", {}).get("precision_used") != "fp32" or "Precision: fp32 (auto: no native bf16" not in outc:
    fail.append("--precision auto without native bf16: not fp32 with the reason:\n" + outc[:600])
if native:
    common = ("--size", "64x64", "--epochs", "3")
    _, out32, h32, _ = train("fp32", *common, "--precision", "fp32")
    run16, out16, h16, meta16 = train("bf16", *common, "--precision", "bf16")
    if h16:
        print("epoch  fp32 loss/val_acc   bf16 loss/val_acc")
        for a, b in zip(h32, h16):
            print("%5s  %.4f / %.4f   %.4f / %.4f" % (a["epoch"], float(a["loss"]), float(a["val_accuracy"]),
                                                     float(b["loss"]), float(b["val_accuracy"])))
        if "Precision: bf16" not in out16:
            fail.append("bf16 run does not say it trains in bf16:\n" + out16[:600])
        if meta16.get("config", {}).get("precision_used") != "bf16":
            fail.append("run.json precision_used is %r, not bf16" % meta16.get("config", {}).get("precision_used"))
        if not finite(h16):
            fail.append("bf16 history has non-finite values")
        if not float(h16[-1]["loss"]) < float(h16[0]["loss"]):
            fail.append("bf16 training loss did not go down: %s -> %s" % (h16[0]["loss"], h16[-1]["loss"]))
        one = 1.0 / 16 + 1e-9  # one validation image
        if h32 and float(h16[-1]["val_accuracy"]) < float(h32[-1]["val_accuracy"]) - one:
            fail.append("bf16 final val_accuracy %s more than one image below fp32's %s" %
                        (h16[-1]["val_accuracy"], h32[-1]["val_accuracy"]))
        last = os.path.join(run16, "checkpoints", "last.safetensors")
        p = subprocess.run([LOUPE, "evaluate", last, VALID, "--json"], capture_output=True, text=True)
        if p.returncode != 0:
            fail.append("evaluate on the bf16-trained checkpoint: exit %d %s" % (p.returncode, p.stderr))
        else:
            acc = json.loads(p.stdout)["accuracy"]
            print("evaluate (fp32) of the bf16 checkpoint: accuracy %.4f; logged val_accuracy %s" % (acc, h16[-1]["val_accuracy"]))
            if abs(acc - float(h16[-1]["val_accuracy"])) > one:
                fail.append("fp32 evaluate accuracy %.4f vs bf16 run's logged %s: more than one image apart" %
                            (acc, h16[-1]["val_accuracy"]))
    _, outf, hf, metaf = train("bf16_frozen", *common, "--precision", "bf16", "--freeze", "base")
    if hf and (metaf.get("config", {}).get("precision_used") != "bf16" or not finite(hf) or "cache" not in outf.lower()):
        fail.append("frozen-base bf16 run: precision_used %r, finite %s, cache line %s" %
                    (metaf.get("config", {}).get("precision_used"), finite(hf), "cache" in outf.lower()))
    # auto: bf16 where the CPU has it natively, AVX512-BF16 or AMX (VGG16, at 32x32 too)
    _, outa, _, metaa = train("auto32", "--size", "32x32", "--epochs", "1", "--precision", "auto")
    used = metaa.get("config", {}).get("precision_used") if metaa else None
    if metaa and (used != "bf16" or "Precision: bf16" not in outa):
        fail.append("--precision auto at 32x32 with native bf16: got %r:\n%s" % (used, outa[:600]))

for f in fail:
    print("FAIL", f)
print("train_bf16:", "FAILED" if fail else "ok")
sys.exit(1 if fail else 0)
