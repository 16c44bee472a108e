"""Frozen-base feature cache: a frozen-base run trained from cached features
(default) ends with the same weights and history as the same run with
--no-feature-cache (max relative difference <= 1e-5 per tensor), says so in the
log, and stays off when augmentation is on."""
import csv, os, shutil, subprocess, sys
import numpy as np

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import make_data
import safetensors_io as st

LOUPE, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
DATA = make_data.make(os.path.join(WORK, "data"), per_class=(8, 4, 0))
failures = []

def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)

def train(name, *extra):
    run = os.path.join(WORK, name)
    r = subprocess.run([LOUPE, "train", DATA, "--run", run, "--size", "32x32", "--batch", "3", "--epochs", "2",
                        "--lr", "0.05", "--momentum", "0.9", "--threads", "2", "--tensorboard", "off", "--freeze", "base",
                        "--model", "tiny", *extra], capture_output=True, text=True)
    if r.returncode:
        print(r.stdout, r.stderr)
        sys.exit(f"FAIL: train {name} exited {r.returncode}")
    w, _ = st.read(os.path.join(run, "checkpoints", "last.safetensors"))
    hist = list(csv.DictReader(open(os.path.join(run, "history.csv"))))
    return r.stdout, w, hist

CONFIGS = {
    # head with dropout after the cut: the dropout masks must match too
    "none": ["--top", "none", "--head", "flatten,dense:16:relu,dropout:0.5,dense"],
    # top=keep: the frozen prefix includes classifier.0 (a dense layer)
    "keep": ["--top", "keep"],
}
for cname, cfg in CONFIGS.items():
    out_on, w_on, h_on = train(cname + "_on", *cfg)
    out_off, w_off, h_off = train(cname + "_off", *cfg, "--no-feature-cache")
    check("Feature cache: frozen layers up to" in out_on, f"{cname}: log names the cache:\n{out_on}")
    check("Feature cache: frozen layers up to" not in out_off, f"{cname}: --no-feature-cache turns it off")
    check(sorted(w_on) == sorted(w_off), f"{cname}: same tensors")
    for k in w_on:
        if k.startswith("optim.") or k.startswith("train."):
            continue
        a, b = w_on[k].astype(np.float64), w_off[k].astype(np.float64)
        rel = np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)
        check(rel <= 1e-5, f"{cname}: {k} differs by {rel:.3g} (relative) with the cache")
    # training really happened (the loss moved), so equal weights mean something
    check(float(h_off[0]["loss"]) != float(h_off[1]["loss"]), f"{cname}: loss changed between epochs")
    for row_on, row_off in zip(h_on, h_off):
        for col in ("loss", "accuracy", "val_loss", "val_accuracy"):
            a, b = float(row_on[col]), float(row_off[col])
            check(abs(a - b) <= 1e-5 * max(abs(b), 1.0), f"{cname}: epoch {row_on['epoch']} {col} {a} vs {b}")
    check(len(h_on) == 2 and len(h_off) == 2, f"{cname}: two epochs each")

out_aug, _, _ = train("aug", "--top", "none", "--head", "flatten,dense", "--horizontal-flip")
check("Feature cache: off (augmentation" in out_aug, f"augmentation turns the cache off:\n{out_aug}")
out_nf, _, _ = train("nofreeze", "--top", "none", "--head", "flatten,dense", "--freeze", "none")
check("Feature cache" not in out_nf, "no frozen prefix, no cache")

if failures:
    sys.exit(f"{len(failures)} failure(s)")
print("ok")
